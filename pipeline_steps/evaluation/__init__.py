"""Scoring detectors through AutoML for Images' scoring contract, without torch.

The tag step runs this package in the pipeline steps' own environment (numpy, pandas, Pillow,
faster-coco-eval, and MLflow to call a model): predictions through `mlflow.models.predict` and COCO
metrics, on the sheets of `shared.evaluation` (whose comparison pairs two models on the same images).
The local detector (`pipeline_steps.detector`) builds on it; it never imports the detector.
"""
