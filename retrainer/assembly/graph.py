"""The pipeline's graph, declared once: its steps in order, where each data input comes from, what each
writes, which settings each takes. Every list of the steps (both runners' wiring, the Azure ML components,
the steps' environment check, the rehearsal, the VS Code launch configurations, the tests) comes from here.

    data_aggregation -> data_split -> register_data_asset
                        data_split -> train -> register_model -> tag_model (+ the holdout, the images)

Both runners are built from it: `pipeline.py` turns each step into an Azure ML node (the component of
the same name; `train` is the AutoML node), and the local runner into a process over folders (`train`
is the local trainer). What each step does: docs/pipeline.md; how to add one: its "Adding a step".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrainer.settings import Settings

#: A setting's value as a component input; None leaves an optional input unset.
SettingValue = str | int | float | bool | None


@dataclass(frozen=True)
class PipelineInput:
    """A folder the whole pipeline reads: the datastore's `images` and `labels` (or reused datasets)."""

    name: str


@dataclass(frozen=True)
class StepOutput:
    """A named output of an earlier step."""

    step: str
    output: str


Source = PipelineInput | StepOutput


@dataclass(frozen=True)
class Step:
    name: str
    inputs: Mapping[str, Source]
    outputs: tuple[str, ...]
    #: Inputs a step can do without (a runner leaves them unset where it has nothing to give).
    optional: frozenset[str] = field(default_factory=frozenset)
    #: The settings it takes, by component input name (the step CLI's flag of the same name): what both
    #: runners pass it, so a setting reaches a step the same way on both, and nowhere else.
    settings: Callable[[Settings], Mapping[str, SettingValue]] = lambda settings: {}


#: The training step: the AutoML node on Azure ML, the local trainer (`pipeline_steps/train.py`) locally. Every
#: other step is a command component, `shared/components/<step>.yml` running `python -m pipeline_steps.<step>`.
TRAIN = "train"
IMAGES, LABELS, LABEL_MAP = PipelineInput("images"), PipelineInput("labels"), PipelineInput("label_map")

#: The steps, in the order they run.
STEPS: tuple[Step, ...] = (
    Step(
        "data_aggregation",
        {"input_image_data_path": IMAGES, "input_label_data_path": LABELS},
        ("output_path",),
    ),
    Step(
        "data_split",
        {"input_data_path": StepOutput("data_aggregation", "output_path")},
        ("train_output_path", "val_output_path", "holdout_output_path"),
        settings=lambda settings: {
            "use_stratified_split": settings.USE_STRATIFIED_SPLIT,
            "stratified_split_n_fold": settings.STRATIFIED_SPLIT_N_FOLD,
            "holdout_fraction": settings.HOLDOUT_FRACTION,
            "holdout_min_images_per_class": settings.HOLDOUT_MIN_IMAGES_PER_CLASS,
            "mandatory_train_filenames": settings.MANDATORY_TRAIN_FILENAMES or None,
            "mandatory_val_filenames": settings.MANDATORY_VAL_FILENAMES or None,
            "rare_class_policy": settings.RARE_CLASS_POLICY,
            "assignment_name": settings.SPLIT_ASSIGNMENT_NAME,
        },
    ),
    Step(
        "register_data_asset",
        {
            "train_input_path": StepOutput("data_split", "train_output_path"),
            "val_input_path": StepOutput("data_split", "val_output_path"),
            "holdout_input_path": StepOutput("data_split", "holdout_output_path"),
        },
        ("output_path",),
        settings=lambda settings: {"data_store_name": settings.DATA_STORE_NAME},
    ),
    Step(
        TRAIN,
        {
            "train_data": StepOutput("data_split", "train_output_path"),
            "val_data": StepOutput("data_split", "val_output_path"),
        },
        ("best_model",),
        optional=frozenset({"val_data"}),
    ),
    Step(
        "register_model",
        {
            "model_input_path": StepOutput(TRAIN, "best_model"),
            "data_assets_path": StepOutput("register_data_asset", "output_path"),
        },
        ("model_metadata_path",),
        settings=lambda settings: {"model_base_name": settings.MODEL_BASE_NAME},
    ),
    Step(
        "tag_model",
        {
            "model_metadata_path": StepOutput("register_model", "model_metadata_path"),
            # The tag step scores both models on the holdout: its MLTable, and the image folder its URLs point into.
            "holdout_data_path": StepOutput("data_split", "holdout_output_path"),
            "holdout_images_path": IMAGES,
            # Class names for the decision's words ("relief valve AP fell"), where the datastore has a label map.
            "label_map_path": LABEL_MAP,
        },
        ("best_model_metadata_path",),
        optional=frozenset({"label_map_path"}),
        settings=lambda settings: {
            "model_base_name": settings.MODEL_BASE_NAME,
            "min_map_improvement": settings.MIN_MAP_IMPROVEMENT,
            "confidence_level": settings.PROMOTION_CONFIDENCE_LEVEL,
            "bootstrap_resamples": settings.PROMOTION_BOOTSTRAP_RESAMPLES,
            "max_holdout_images": settings.PROMOTION_MAX_HOLDOUT_IMAGES,
            "scoring_budget_minutes": settings.PROMOTION_SCORING_MINUTES,
            "min_holdout_images": settings.PROMOTION_MIN_HOLDOUT_IMAGES,
            "min_class_instances": settings.MIN_CLASS_INSTANCES,
            "max_class_ap_drop": settings.MAX_CLASS_AP_DROP,
        },
    ),
)

#: The steps that are command components (`shared/components/<step>.yml`), in the order they run.
COMPONENT_STEPS: tuple[str, ...] = tuple(step.name for step in STEPS if step.name != TRAIN)


def step(name: str, steps: tuple[Step, ...] = STEPS) -> Step:
    return next(s for s in steps if s.name == name)


#: With TRAIN_DATASET and VAL_DATASET (Azure ML only) the data steps are skipped: training reads those
#: assets, the model is tagged with the earlier data-asset step's output when there is one, and there is
#: no holdout to score on. The same steps with other inputs, so they take the same settings.
REUSE_STEPS: tuple[Step, ...] = (
    replace(
        step(TRAIN),
        inputs={"train_data": PipelineInput("train_data"), "val_data": PipelineInput("val_data")},
        optional=frozenset(),
    ),
    replace(
        step("register_model"),
        inputs={
            "model_input_path": StepOutput(TRAIN, "best_model"),
            "data_assets_path": PipelineInput("dataset_version"),
        },
        optional=frozenset({"data_assets_path"}),
    ),
    replace(
        step("tag_model"),
        inputs={"model_metadata_path": StepOutput("register_model", "model_metadata_path")},
        optional=frozenset(),
    ),
)
