"""Step 2, data split: one aggregated MLTable -> training, validation and holdout MLTables, sticky and stratified.

    python -m pipeline_steps.data_split --input_data_path <MLTable folder> --use_stratified_split true \
        --stratified_split_n_fold 5 --holdout_fraction 0.2 --mandatory_train_filenames "a.jpg;b.jpg" \
        --train_output_path <folder> --val_output_path <folder> --holdout_output_path <folder>

An image keeps its side for good: the assignment of every image seen so far is a versioned document
in the model registry (`--assignment_name`), read at the start and written back, as the next
version, only when images were added. Only new images are assigned, by iterative stratification of
their class sets seeded with what each side already holds, so every side stays stratified by class.
A sheet seen before under another name (same size and boxes) joins its original's side.

Sides: the holdout (`--holdout_fraction` of the images, at least `--holdout_min_images_per_class`
images of each class where the data allows) is what promotion compares models on, and nothing
trains on it; validation is 1/k of the rest (`--stratified_split_n_fold` k) and steers training;
training keeps at least one image of every class. Mandatory lists win, and move an image when they
must (reported). Images of rare classes (fewer images than k) follow `--rare_class_policy`:
`train_only` (default) or `copy`, which also puts their training images in validation (the
validation score is then optimistic; the holdout is never touched). With `--use_stratified_split
false` there is no validation set and the validation MLTable is empty but valid. Two runs that race
both end on the same assignment: writing a version that exists fails, and the loser starts again
from the winner's document. `split_report.json` (in the train folder) gives the counts per side
and class and the holdout's version.

A stored assignment that cannot be read (half-written, empty, not an object, an unknown side, or a
document that names another version than its own) fails the step with one line naming it, its
version and the repair: which images are held out is then unknown, and any guess could train on
them. `retrain split reset --reason ...` stores a fresh, empty version that records why; the next
run draws every side anew. An assignment that leaves no training image fails the step too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pipeline_steps._cli import StepParser, add_flag, boolean, filename_list, step_parser
from pipeline_steps.split_sides import RARE_CLASS_POLICIES, SplitConfig, SplitResult, split_records, split_report
from shared.contracts import HoldoutManifest, SplitAssignment, SplitReport, SplitSide
from shared.mltable_io import read_records, write_records
from shared.registry import open_registry
from shared.settings import SettingsError, load_registry_location
from shared.split_assignment import (
    COMMIT_ATTEMPTS,
    DEFAULT_ASSIGNMENT_NAME,
    SplitError,
    read_assignment,
    reset_command,
)


def assign_and_commit(
    records: list[dict],
    config: SplitConfig,
    load: Callable[[], SplitAssignment],
    create: Callable[[SplitAssignment], bool],
    name: str = DEFAULT_ASSIGNMENT_NAME,
) -> SplitResult:
    """Split against the latest assignment and store the next version; a racing writer's version wins and we redo.

    A split that leaves nothing to train on is refused here, before a version is stored: the training
    step would otherwise fail one step later, with less to say about why.
    """
    for _ in range(COMMIT_ATTEMPTS):
        previous = load()
        result = split_records(records, previous, config)
        _check_something_trains(result, len(records), name)
        if not result.changed:
            return result
        result.assignment.version = previous.version + 1
        if create(result.assignment):
            return result
    raise SplitError(f"the split assignment kept changing under this run ({COMMIT_ATTEMPTS} attempts): try again")


def _check_something_trains(result: SplitResult, total: int, name: str) -> None:
    if result.sides[SplitSide.TRAIN]:
        return
    raise SplitError(
        f"split assignment {name} version {result.assignment.version} leaves no training image: of the {total} "
        f"images, {len(result.sides[SplitSide.HOLDOUT])} held out and {len(result.sides[SplitSide.VAL])} for "
        "validation (none of them may be trained on); add images, or start a new assignment "
        f"(every side drawn anew): {reset_command(name, force=True)}"
    )


def registry_store(assignment_name: str) -> tuple[Callable[[], SplitAssignment], Callable[[SplitAssignment], bool]]:
    """Load and create-only store of the assignment as versioned documents of the model registry."""
    registry = open_registry(load_registry_location())

    def load() -> SplitAssignment:
        return read_assignment(registry, assignment_name)

    def create(assignment: SplitAssignment) -> bool:
        return registry.create_document(assignment_name, str(assignment.version), assignment.to_bytes())

    return load, create


def run_split(
    input_path: Path,
    outputs: dict[SplitSide, Path],
    config: SplitConfig,
    load: Callable[[], SplitAssignment],
    create: Callable[[SplitAssignment], bool],
    name: str = DEFAULT_ASSIGNMENT_NAME,
) -> SplitReport:
    records = list(read_records(input_path))
    if not records:
        raise SplitError(f"{input_path} holds no records")
    result = assign_and_commit(records, config, load, create, name)
    for side, folder in outputs.items():
        extra = result.copied_to_val if side == SplitSide.VAL else []
        write_records(folder, (records[i] for i in result.sides[side] + extra))
    report = split_report(records, result)
    report.write(outputs[SplitSide.TRAIN])
    HoldoutManifest(holdout=result.holdout).write(outputs[SplitSide.HOLDOUT])
    return report


def build_parser() -> StepParser:
    parser = step_parser("data_split", __doc__)
    add_flag(parser, "input_data_path", required=True, type=Path, help="aggregated MLTable folder")
    add_flag(parser, "use_stratified_split", type=boolean)
    add_flag(parser, "stratified_split_n_fold", setting="STRATIFIED_SPLIT_N_FOLD")
    add_flag(parser, "holdout_fraction", setting="HOLDOUT_FRACTION")
    add_flag(parser, "holdout_min_images_per_class", setting="HOLDOUT_MIN_IMAGES_PER_CLASS")
    add_flag(parser, "mandatory_train_filenames", type=filename_list)
    add_flag(parser, "mandatory_val_filenames", type=filename_list)
    add_flag(parser, "rare_class_policy", choices=RARE_CLASS_POLICIES)
    add_flag(parser, "assignment_name", help="registry document of the sides")
    add_flag(parser, "train_output_path", required=True, type=Path)
    add_flag(parser, "val_output_path", required=True, type=Path)
    add_flag(parser, "holdout_output_path", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = SplitConfig(
        use_stratified_split=args.use_stratified_split,
        n_fold=int(args.stratified_split_n_fold),
        holdout_fraction=args.holdout_fraction,
        holdout_min_images_per_class=args.holdout_min_images_per_class,
        mandatory_train=tuple(args.mandatory_train_filenames),
        mandatory_val=tuple(args.mandatory_val_filenames),
        rare_class_policy=args.rare_class_policy,
    )
    outputs = {
        SplitSide.TRAIN: args.train_output_path,
        SplitSide.VAL: args.val_output_path,
        SplitSide.HOLDOUT: args.holdout_output_path,
    }
    try:
        store = registry_store(args.assignment_name)
        report = run_split(args.input_data_path, outputs, config, *store, name=args.assignment_name)
    except (SplitError, SettingsError) as error:
        print(f"data split failed: {error}", file=sys.stderr)
        return 1
    print(
        "; ".join(f"{side}: {c['images']} images, {c['boxes']} boxes" for side, c in report.counts.items())
        + f"; newly assigned {report.newly_assigned}; holdout {report.holdout.label()}"
    )
    for line in report.moved_by_mandatory_lists:
        print(f"moved by the mandatory lists: {line}")
    if report.mandatory_not_found:
        print(f"mandatory file names not found: {', '.join(report.mandatory_not_found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
