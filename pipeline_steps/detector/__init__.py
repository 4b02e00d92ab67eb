"""The local detector: a compact single-stage (FCOS) model trained on the CPU, and its MLflow flavour.

The MLflow model ships `pipeline_steps` as its code, so this package imports nothing of the service
(`retrainer`); it builds on `pipeline_steps.evaluation` (sheets, metrics), which never imports it back.
"""
