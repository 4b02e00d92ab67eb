"""The local detector: a compact single-stage (FCOS) model trained on the CPU, and its MLflow flavour.

The MLflow model ships `pipeline_steps` and `shared` as its code (the steps import nothing of the service,
`retrainer`); it builds on `shared.evaluation` (sheets) and `pipeline_steps.evaluation` (metrics), which never
import it back.
"""
