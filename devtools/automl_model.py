"""Save an MLflow model the way AutoML for Images does, in AutoML's own interpreter: for rehearsals, not training.

    <AutoML's python> devtools/automl_model.py --output DIR --classes 1,2,3 [--seed 0] [--size 320]

Runs where azureml-automl-dnn-vision is installed (Python 3.10 in AutoML's training image; `make
automl-rehearsal` builds the same in a virtual environment), so it imports nothing of this project.
The network is AutoML's own Faster R-CNN (`fasterrcnn_resnet18_fpn`, built by AutoML's model factory
with random weights: nothing is downloaded), its checkpoint written by AutoML's `save_model_checkpoint`
as a training run writes `model.pt`, and the MLflow model saved as AutoML's run context saves it:
AutoML's `MLFlowImagesModelWrapper` with its object-detection scoring method, the `model` and
`settings` artifacts, AutoML's signature, and the conda environment AutoML declares for inference
(`pin_sdk_version=True`, which pins nothing). Only the weights differ from a trained model's.
"""

import argparse
import json
import os
import sys
import tempfile

TASK = "image-object-detection"
MODEL_NAME = "fasterrcnn_resnet18_fpn"
#: What a training job in the curated image records in MLmodel (ENABLE_METADATA=true in its Dockerfile).
BASE_IMAGE = "mcr.microsoft.com/azureml/curated/ai-ml-automl-dnn-vision-gpu"


def save(output: str, classes: list, seed: int, size: int) -> None:
    import platform

    import mlflow.pyfunc
    import torch
    from azureml.automl.core.inference import inference
    from azureml.automl.dnn.vision.common.artifacts_utils import save_model_checkpoint
    from azureml.automl.dnn.vision.common.mlflow.mlflow_model_wrapper import MLFlowImagesModelWrapper
    from azureml.automl.dnn.vision.common.model_export_utils import _get_mlflow_signature, _get_scoring_method
    from azureml.automl.dnn.vision.common.pretrained_model_utilities import PretrainedModelFactory
    from azureml.automl.dnn.vision.object_detection.models import detection
    from azureml.core.conda_dependencies import CondaDependencies
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    torch.manual_seed(seed)
    labels = ["--bg--", *sorted(classes)]  # AutoML's dataset puts the background class first
    # AutoML's own architecture with random weights: `pretrained=True` with no state dict downloads nothing.
    network = PretrainedModelFactory.fasterrcnn_resnet18_fpn(pretrained=True, load_pretrained_model_dict=False)
    network.roi_heads.box_predictor = FastRCNNPredictor(
        network.roi_heads.box_predictor.cls_score.in_features, len(labels)
    )
    settings = {"min_size": size, "max_size": size, "box_score_thresh": 0.0}
    wrapper = detection.setup_model(
        model_name=MODEL_NAME,
        number_of_classes=len(labels),
        classes=labels,
        device="cpu",
        model_state=network.state_dict(),
        settings=settings,
    )
    specs = {  # what AutoML's object-detection trainer writes into every checkpoint
        "model_specs": wrapper.specs,
        "model_settings": wrapper.model_settings.get_settings_dict(),
        "classes": wrapper.classes,
        "inference_settings": wrapper.inference_settings,
    }
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = save_model_checkpoint(
            epoch=0,
            model_name=MODEL_NAME,
            number_of_classes=len(labels),
            specs=specs,
            model_state=wrapper.state_dict(),
            optimizer_state={},
            lr_scheduler_state={},
            score=0.0,
            metrics={},
            output_dir=scratch,
        )
        model_settings = dict(wrapper.inference_settings)
        settings_file = os.path.join(scratch, "model_settings.json")
        with open(settings_file, "w") as handle:
            json.dump(model_settings, handle)
        conda = CondaDependencies.create(
            python_version=platform.python_version(),
            conda_packages=inference.AutoMLVisionCondaPackagesList,
            pip_packages=inference.AutoMLVisionPipPackagesList,
            pin_sdk_version=True,
        )
        mlflow.pyfunc.save_model(
            path=output,
            python_model=MLFlowImagesModelWrapper(
                model_settings=model_settings, task_type=TASK, scoring_method=_get_scoring_method(TASK)
            ),
            artifacts={"model": checkpoint, "settings": settings_file},
            conda_env=conda.as_dict(),
            signature=_get_mlflow_signature(TASK),
            metadata={
                "base_model_name": MODEL_NAME,
                "finetuning_task": TASK,
                "is_automl_model": True,
                "training_run_id": f"rehearsal_{seed}",
                "azureml.base_image": f"{BASE_IMAGE}:rehearsal",
                "azureml.engine": "automl",
            },
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the MLflow model folder to write")
    parser.add_argument("--classes", required=True, help="class ids, comma-separated, as the labels name them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=320, help="the model's input size (small: a fast rehearsal)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    save(args.output, [c for c in args.classes.split(",") if c], args.seed, args.size)
    print(f"saved an AutoML MLflow model ({MODEL_NAME}) at {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
