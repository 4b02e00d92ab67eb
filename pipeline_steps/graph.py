"""The pipeline's graph, declared once: its steps in order, where each data input comes from, what each writes.

    data_aggregation -> data_split -> register_data_asset
                        data_split -> train -> register_model -> tag_model (+ the holdout, the images)

Both runners are built from it: `pipeline.py` turns each step into an Azure ML node (the component of
the same name; `train` is the AutoML node), and the local runner into a process over folders (`train`
is the local trainer). A step's settings come from `step_inputs.step_settings`, the one table of
settings for both runners; here are only the data flows between steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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


TRAIN = "train"
IMAGES, LABELS, LABEL_MAP = PipelineInput("images"), PipelineInput("labels"), PipelineInput("label_map")

#: The six steps, in the order they run.
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
    ),
    Step(
        "register_data_asset",
        {
            "train_input_path": StepOutput("data_split", "train_output_path"),
            "val_input_path": StepOutput("data_split", "val_output_path"),
            "holdout_input_path": StepOutput("data_split", "holdout_output_path"),
        },
        ("output_path",),
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
    ),
)

#: With TRAIN_DATASET and VAL_DATASET (Azure ML only) the data steps are skipped: training reads those
#: assets, the model is tagged with the earlier data-asset step's output when there is one, and there is
#: no holdout to score on.
REUSE_STEPS: tuple[Step, ...] = (
    Step(TRAIN, {"train_data": PipelineInput("train_data"), "val_data": PipelineInput("val_data")}, ("best_model",)),
    Step(
        "register_model",
        {"model_input_path": StepOutput(TRAIN, "best_model"), "data_assets_path": PipelineInput("dataset_version")},
        ("model_metadata_path",),
        optional=frozenset({"data_assets_path"}),
    ),
    Step(
        "tag_model",
        {"model_metadata_path": StepOutput("register_model", "model_metadata_path")},
        ("best_model_metadata_path",),
    ),
)


def step(name: str, steps: tuple[Step, ...] = STEPS) -> Step:
    return next(s for s in steps if s.name == name)
