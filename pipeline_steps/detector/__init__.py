"""The local detector: a compact single-stage (FCOS) model trained from scratch on the CPU.

Self-contained (torch, torchvision, numpy, PIL, pandas, mlflow): the MLflow model ships this
package as its code, so it must not import the service's own modules.
"""
