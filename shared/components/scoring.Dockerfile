# The tag step's image: AutoML for Images' own training image, pinned, with the steps' environment beside it.
#
# An AutoML model is an MLflow pyfunc model whose code (azureml-automl-dnn-vision, torch) lives in AutoML's
# environment. The tag step scores it there, with MLflow's `models predict --env-manager local` in AutoML's own
# interpreter, so no environment is built at run time (the model's conda.yaml is unpinned and needs compilers).
# The step itself runs on Python 3.11 in the steps' pinned environment (conda.yml), built once with the image.
#
# Release 52 of the curated environment ai-ml-automl-dnn-vision-gpu (2026-07-20), the one AutoML trains in:
# Python 3.10, azureml-automl-dnn-vision 1.62.0, torch >= 2.10, mlflow-skinny >= 2.16. Moving to a newer
# release is a change of this line, checked with `make automl-rehearsal`.
FROM mcr.microsoft.com/azureml/curated/ai-ml-automl-dnn-vision-gpu:52

# AutoML's environment, where the base image puts it (its AZUREML_CONDA_ENVIRONMENT_PATH); the tag component's
# automl_python is its interpreter.
ENV AUTOML_ENVIRONMENT_PATH=/azureml-envs/azureml-automl-dnn-vision-gpu

COPY conda.yml /tmp/pid-symbol-pipeline/conda.yml
RUN conda env create -p /azureml-envs/pid-symbol-pipeline -f /tmp/pid-symbol-pipeline/conda.yml && \
    conda clean -a -y && rm -rf /tmp/pid-symbol-pipeline

# The step's own interpreter comes first on PATH; AutoML's stays where it is, called by its full path.
ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/pid-symbol-pipeline
ENV PATH=/azureml-envs/pid-symbol-pipeline/bin:$PATH
ENV LD_LIBRARY_PATH=/azureml-envs/pid-symbol-pipeline/lib:$LD_LIBRARY_PATH
