"""The Azure ML pipeline of `graph.STEPS` (and its dataset-reuse variant), built and validated offline.

Each step is the command component of its name (`shared/components/<step>.yml`); training is an AutoML node
on the split's train/val MLTables. With TRAIN_DATASET and VAL_DATASET set, the data steps are skipped
and those assets feed training (DATASET_VERSION_PATH, when set, is the earlier data-asset step's
output, for the model's tags).
Default compute PIPELINE_CPU_COMPUTE_NAME; training on TRAINING_GPU_COMPUTE_NAME, and the tag step, which
scores both models on the holdout, on PROMOTION_COMPUTE_NAME (the GPU compute unless set).

Every setting a step needs enters as a component input. The data and registry steps are not
deterministic (their inputs are fixed datastore paths whose content changes, and they change the
registry), and the job forces a rerun, so Azure ML never reuses an earlier run's outputs.

With PIPELINE_COMPONENTS=registered (the default) the submitter builds the nodes from the components
registered for this release (`pipeline_release()`) by `retrain register-components`, fetched with
`ml_client.components.get`, so a submission uploads no code and registers no environment; the local
YAML files give each node the same interface offline (dry runs, tests).
"""

# No `from __future__ import annotations` here: dsl.pipeline reads the real annotations of its functions.
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.ai.ml import Input, load_component, load_environment
from azure.ai.ml.dsl import pipeline as dsl_pipeline
from azure.ai.ml.entities import CommandComponent, Environment, ManagedIdentityConfiguration, PipelineJob

from retrainer.assembly.automl_node import AutoMLConfig, WarmStartDecision, build_automl_node
from retrainer.assembly.graph import REUSE_STEPS, STEPS, TRAIN, PipelineInput, Step
from retrainer.assembly.release import pipeline_release
from retrainer.assembly.step_inputs import step_settings
from retrainer.settings import Settings
from shared import COMPONENTS

#: The SDK's overloads of `dsl.pipeline` want the function positionally; as a decorator factory it takes none.
pipeline: Any = dsl_pipeline


#: Where a step's component comes from: its YAML here, or the workspace's registered version of it.
ComponentSource = Callable[[str], CommandComponent]


#: The environments the components run on, each from its YAML here: the steps' pinned image, and the tag step's
#: (AutoML's training image with the steps' environment beside it, so AutoML's models score where their code is).
ENVIRONMENT_FILES = ("environment.yml", "scoring_environment.yml")


def environments() -> list[Environment]:
    """The components' environments, versioned with the release (registered once per release)."""
    loaded = [load_environment(COMPONENTS / file) for file in ENVIRONMENT_FILES]
    for env in loaded:
        env.version = pipeline_release()
    return loaded


@functools.cache
def _environment_names() -> frozenset[str]:
    return frozenset(str(env.name) for env in environments())


def component(name: str) -> CommandComponent:
    """A step's component from its YAML, versioned with the release, on the release's version of the
    environment its YAML names (one of `ENVIRONMENT_FILES`).

    Its code is this checkout (`code: ../..` from `shared/components/`), uploaded when the component is
    registered or submitted inline: refused where the step's code is not here (the function app ships none).
    """
    if not (COMPONENTS.parent.parent / "pipeline_steps" / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"pipeline_steps/{name}.py is not here, so its component cannot be uploaded from this folder (the "
            "function app ships no step code): register the release's components from a clone with `retrain "
            "register-components` and submit with PIPELINE_COMPONENTS=registered"
        )
    loaded = load_component(COMPONENTS / f"{name}.yml")
    if not isinstance(loaded, CommandComponent):
        raise TypeError(f"{name}.yml is not a command component")
    loaded.version = pipeline_release()
    named = str(loaded.environment).removeprefix("azureml:").rsplit(":", 1)[0]
    if named not in _environment_names():
        raise ValueError(f"{name}.yml runs on {named!r}, which is not one of the release's environments")
    loaded.environment = f"azureml:{named}:{pipeline_release()}"
    return loaded


def registered_components(ml_client: Any) -> ComponentSource:
    """The components `retrain register-components` registered for this release (`ml_client.components.get`):
    a submission then references them and uploads nothing."""

    def get(name: str) -> CommandComponent:
        found = ml_client.components.get(name=component_name(name), version=pipeline_release())
        if not isinstance(found, CommandComponent):
            raise TypeError(f"{component_name(name)}:{pipeline_release()} is not a command component")
        return found

    return get


def component_name(step: str) -> str:
    return f"pid_{step}"


def build_pipeline_job(
    settings: Settings,
    *,
    run_label: str = "",
    warm_start: WarmStartDecision | None = None,
    components: ComponentSource = component,
    with_label_map: bool = False,
) -> PipelineJob:
    """The pipeline job for the settings: the steps of `graph.STEPS`, or `graph.REUSE_STEPS` when datasets are
    reused.

    `warm_start` (the champion's AutoML run, decided by the submitter) seeds the AutoML node;
    `components` gives each step's component (its YAML by default; the registered ones when submitting);
    `with_label_map` gives the tag step the datastore's label map (the submitter knows whether there is one).
    """
    automl = AutoMLConfig.from_settings(settings, warm_start.checkpoint_run_id if warm_start else None)
    extras = _azure_inputs(settings)

    def wire(steps: tuple[Step, ...], sources: dict[str, Any]) -> Any:
        """Each step as a node, in order; its data inputs from the pipeline's inputs or earlier nodes' outputs."""
        nodes: dict[str, Any] = {}
        for step in steps:
            data: dict[str, Any] = {
                name: sources.get(source.name)
                if isinstance(source, PipelineInput)
                else nodes[source.step].outputs[source.output]
                for name, source in step.inputs.items()
            }
            data = {name: value for name, value in data.items() if value is not None or name not in step.optional}
            if step.name == TRAIN:
                # Without a split the validation MLTable is empty, which AutoML rejects: pass none, and
                # AutoML holds out TRAINING_VALIDATION_DATA_SIZE of the training data instead.
                validation = (
                    data.get("val_data") if settings.USE_STRATIFIED_SPLIT or settings.reuses_datasets() else None
                )
                node: Any = build_automl_node(automl, data["train_data"], validation)
            else:
                node = components(step.name)(**extras.get(step.name, {}), **data)
            node.name = step.name
            nodes[step.name] = node
        # Scoring AutoML's tiled Faster R-CNN takes minutes a sheet on a CPU and seconds on a GPU.
        nodes["tag_model"].compute = settings.promotion_compute()
        return {"best_model_metadata": nodes["tag_model"].outputs.best_model_metadata_path}

    if settings.reuses_datasets():
        version_file = (
            Input(type="uri_folder", path=settings.DATASET_VERSION_PATH) if settings.DATASET_VERSION_PATH else None
        )

        @pipeline(name="pid_symbol_retraining_reuse", default_compute=settings.PIPELINE_CPU_COMPUTE_NAME)
        def reuse_pipeline(train_data: Input, val_data: Input) -> dict[str, Any]:
            return wire(REUSE_STEPS, {"train_data": train_data, "val_data": val_data, "dataset_version": version_file})

        job = reuse_pipeline(
            train_data=Input(type="mltable", path=settings.TRAIN_DATASET),
            val_data=Input(type="mltable", path=settings.VAL_DATASET),
        )
    else:
        label_map = Input(type="uri_file", path=settings.label_map_path()) if with_label_map else None

        @pipeline(name="pid_symbol_retraining", default_compute=settings.PIPELINE_CPU_COMPUTE_NAME)
        def full_pipeline(images: Input, labels: Input) -> dict[str, Any]:
            return wire(STEPS, {"images": images, "labels": labels, "label_map": label_map})

        job = full_pipeline(
            images=Input(type="uri_folder", path=settings.image_data_path()),
            labels=Input(type="uri_folder", path=settings.label_data_path()),
        )
    job.settings.force_rerun = True
    # The clusters allow no local auth (no AmlToken-less keys); jobs run as the compute's managed identity.
    job.identity = ManagedIdentityConfiguration()
    job.experiment_name = settings.EXPERIMENT_NAME
    job.display_name = f"retrain {run_label}".strip()
    job.tags = {
        "service": "pid-symbol-retraining",
        **({"run": run_label} if run_label else {}),
        **({"warm_start": warm_start.reason} if warm_start else {}),
    }
    return job


def _azure_inputs(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each step's settings (the table both runners share), and what only Azure ML needs: the long
    `azureml://` image prefix the image URLs carry, and in reuse mode the reused assets' names."""
    inputs: dict[str, dict[str, Any]] = {step: dict(values) for step, values in step_settings(settings).items()}
    if settings.reuses_datasets():
        inputs["register_model"].update(train_dataset=settings.TRAIN_DATASET, val_dataset=settings.VAL_DATASET)
    else:
        prefix = settings.images_absolute_prefix()
        inputs["data_aggregation"]["input_images_string_absolute_path"] = prefix
        inputs["tag_model"]["images_string_absolute_path"] = prefix
    return inputs


def step_environments(job: PipelineJob) -> dict[str, str]:
    """The environment each command step runs on (AutoML's node runs on AutoML's own)."""
    return {
        name: str(node.component.environment)
        for name, node in job.jobs.items()
        if isinstance(getattr(node, "component", None), CommandComponent)
    }


def validate_pipeline(job: PipelineJob) -> None:
    result = job._validate()
    if not result.passed:
        raise ValueError(f"the pipeline does not validate: {result.error_messages}")


def write_pipeline_yaml(job: PipelineJob, path: Path, *, registered: bool = True) -> None:
    """The job as YAML that `az ml job create --file` and `load_job` accept.

    The SDK dumps an AutoML node's typed output as `{job_output_type: ...}`, which its own loader
    rejects; the YAML schema spells it `{type: ...}`. With `registered`, each step names its
    registered component (`azureml:<name>:<release>`, the CLI's reference syntax) instead of
    carrying it inline, as a submission does, and keeps the component's environment beside the
    reference, so the file shows what each step runs on (the SDK's loader reads it; a submission
    takes the registered component's, the same one).
    """
    import yaml

    document = job._to_dict()
    for node in document.get("jobs", {}).values():
        inline = node.get("component")
        if registered and isinstance(inline, dict) and inline.get("name", "").startswith("pid_"):
            node["component"] = f"azureml:{inline['name']}:{inline['version']}"
            node["environment"] = inline["environment"]
        for spec in (node.get("outputs") or {}).values():
            if isinstance(spec, dict) and "job_output_type" in spec:
                spec["type"] = spec.pop("job_output_type")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
