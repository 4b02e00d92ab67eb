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

import hashlib
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from pipeline_steps._cli import StepParser, add_flag, boolean, filename_list, step_parser
from pipeline_steps.contracts import HoldoutManifest, SplitAssignment, SplitReport, SplitSide, holdout_info
from pipeline_steps.mltable_io import class_sort_key, count_classes, read_records, write_records
from retrainer.promotion import HoldoutInfo
from retrainer.settings import SettingsError, setting_bound

if TYPE_CHECKING:
    from retrainer.workspace import ModelRegistry

RARE_CLASS_POLICIES = ("train_only", "copy")
DEFAULT_ASSIGNMENT_NAME = "pid-symbols-split-assignment"
_COMMIT_ATTEMPTS = 5


class SplitError(ValueError):
    """The split cannot be made as asked (the message says why and which setting to change)."""


class AssignmentUnreadable(SplitError):
    """The stored assignment cannot be read: which images are held out is unknown, so no run may guess."""

    def __init__(self, name: str, version: int, problem: str) -> None:
        self.problem = problem
        super().__init__(
            f"split assignment {name} version {version} is unreadable ({problem}): which images are held out is "
            f"unknown, and a guess could train on them; start a new assignment (every side drawn anew): "
            f"{reset_command(name)}"
        )


def reset_command(name: str, *, force: bool = False) -> str:
    """The `retrain` command that starts a fresh version of the assignment `name`."""
    return f'retrain split reset --name {name} --reason "<why>"' + (" --force" if force else "")


@dataclass(frozen=True)
class SplitConfig:
    use_stratified_split: bool = True
    n_fold: int = 5
    holdout_fraction: float = 0.2
    holdout_min_images_per_class: int = 2
    mandatory_train: tuple[str, ...] = ()
    mandatory_val: tuple[str, ...] = ()
    rare_class_policy: str = "train_only"

    def fractions(self) -> dict[SplitSide, float]:
        rest = 1.0 - self.holdout_fraction
        val = rest / self.n_fold if self.use_stratified_split else 0.0
        return {SplitSide.TRAIN: rest - val, SplitSide.VAL: val, SplitSide.HOLDOUT: self.holdout_fraction}


@dataclass
class SplitResult:
    """Record indices per side, and the assignment that produced them (to be stored when it changed)."""

    sides: dict[SplitSide, list[int]]
    assignment: SplitAssignment
    newly_assigned: int
    holdout_names: list[str]
    copied_to_val: list[int] = field(default_factory=list)
    moved_by_mandatory_lists: list[str] = field(default_factory=list)
    mandatory_not_found: list[str] = field(default_factory=list)
    rare_classes: list[str] = field(default_factory=list)
    conflicting_copies: list[str] = field(default_factory=list)

    @property
    def holdout(self) -> HoldoutInfo:
        return holdout_info(self.assignment.version, self.holdout_names)

    @property
    def changed(self) -> bool:
        return self.newly_assigned > 0 or bool(self.moved_by_mandatory_lists)


def image_classes(record: dict) -> set[str]:
    return {box["label"] for box in record.get("label", [])}


def basename(record: dict) -> str:
    return PurePosixPath(record["image_url"]).name


def fingerprint(record: dict) -> str | None:
    """The sheet's identity under any name: its size and boxes (None for a sheet without boxes)."""
    boxes = sorted(
        (str(b["label"]), *(round(float(b[k]), 4) for k in ("topX", "topY", "bottomX", "bottomY")))
        for b in record.get("label", [])
    )
    if not boxes:
        return None
    details = record.get("image_details") or {}
    text = repr((details.get("width"), details.get("height"), boxes))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def split_records(records: list[dict], previous: SplitAssignment, config: SplitConfig) -> SplitResult:
    """Each record's side: kept from `previous`, forced by the mandatory lists, or newly assigned (pure)."""
    _check_config(config)
    names = [basename(record) for record in records]
    prints = [fingerprint(record) for record in records]
    groups = _groups(names, prints)
    classes_of = [image_classes(record) for record in records]
    side_of_group: dict[int, SplitSide] = {}
    conflicts: list[str] = []
    for group, members in groups.items():
        known = _known_side(members, names, prints, previous)
        if known is not None:
            side_of_group[group] = known[0]
            if known[1]:
                conflicts.append(names[members[0]])
    forced, moved = _mandatory_sides(groups, names, config, side_of_group)
    side_of_group.update(forced)
    new_groups = [g for g in groups if g not in side_of_group]
    group_classes = {g: set().union(*(classes_of[i] for i in members)) for g, members in groups.items()}
    order_key = {g: hashlib.sha256(min(names[i] for i in groups[g]).encode("utf-8")).hexdigest() for g in new_groups}
    new_groups.sort(key=order_key.__getitem__)
    side_of_group.update(_stratify(new_groups, group_classes, side_of_group, groups, config))
    _give_every_class_a_training_image(group_classes, side_of_group, set(forced), groups, names)

    sides: dict[SplitSide, list[int]] = {side: [] for side in SplitSide}
    assignment = SplitAssignment(
        version=previous.version, by_name=dict(previous.by_name), by_fingerprint=dict(previous.by_fingerprint)
    )
    for group, members in groups.items():
        side = side_of_group[group]
        for i in members:
            sides[side].append(i)
            assignment.by_name[names[i]] = side
            if (sheet_print := prints[i]) is not None:
                assignment.by_fingerprint.setdefault(sheet_print, side)
    for side in sides:
        sides[side].sort()
    rare = _rare_classes(classes_of, config)
    copied = (
        [i for i in sides[SplitSide.TRAIN] if classes_of[i] & rare]
        if config.rare_class_policy == "copy" and config.use_stratified_split
        else []
    )
    found = set(names)
    return SplitResult(
        sides=sides,
        assignment=assignment,
        newly_assigned=sum(len(groups[g]) for g in new_groups),
        holdout_names=[names[i] for i in sides[SplitSide.HOLDOUT]],
        copied_to_val=copied,
        moved_by_mandatory_lists=moved,
        mandatory_not_found=sorted(set(config.mandatory_train + config.mandatory_val) - found),
        rare_classes=sorted(rare, key=class_sort_key),
        conflicting_copies=conflicts,
    )


def _check_config(config: SplitConfig) -> None:
    """The settings' own ranges (`setting_bound`), for callers that build a SplitConfig without the CLI."""
    numbers = {
        "STRATIFIED_SPLIT_N_FOLD": config.n_fold,
        "HOLDOUT_FRACTION": config.holdout_fraction,
        "HOLDOUT_MIN_IMAGES_PER_CLASS": config.holdout_min_images_per_class,
    }
    for setting, value in numbers.items():
        try:
            setting_bound(setting).check(value)
        except ValueError as error:
            raise SplitError(str(error)) from None
    if config.rare_class_policy not in RARE_CLASS_POLICIES:
        raise SplitError(f"rare class policy must be one of {RARE_CLASS_POLICIES}, got {config.rare_class_policy!r}")
    both = sorted(set(config.mandatory_train) & set(config.mandatory_val))
    if both:
        raise SplitError(f"in both MANDATORY_TRAIN_FILENAMES and MANDATORY_VAL_FILENAMES: {', '.join(both)}")


def _groups(names: list[str], prints: list[str | None]) -> dict[int, list[int]]:
    """Records that are the same sheet (same name, or same fingerprint) form one group (union-find)."""
    parent = list(range(len(names)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[object, int] = {}
    for i, keys in enumerate(zip(names, prints, strict=True)):
        for key in (("name", keys[0]), ("print", keys[1])):
            if key[1] is None:
                continue
            if key in first_of:
                parent[root(i)] = root(first_of[key])
            else:
                first_of[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(names)):
        groups.setdefault(root(i), []).append(i)
    return groups


def _known_side(
    members: list[int], names: list[str], prints: list[str | None], previous: SplitAssignment
) -> tuple[SplitSide, bool] | None:
    """The side the group already has (a name wins over a fingerprint), and whether its members disagreed."""
    by_name = [previous.by_name[names[i]] for i in members if names[i] in previous.by_name]
    by_print = [
        previous.by_fingerprint[p] for i in members if (p := prints[i]) is not None and p in previous.by_fingerprint
    ]
    known = by_name or by_print
    if not known:
        return None
    return known[0], len(set(known)) > 1


def _mandatory_sides(
    groups: dict[int, list[int]], names: list[str], config: SplitConfig, current: dict[int, SplitSide]
) -> tuple[dict[int, SplitSide], list[str]]:
    forced: dict[int, SplitSide] = {}
    moved: list[str] = []
    wanted = {**dict.fromkeys(config.mandatory_train, SplitSide.TRAIN)}
    if config.use_stratified_split:
        wanted.update(dict.fromkeys(config.mandatory_val, SplitSide.VAL))
    for group, members in groups.items():
        sides = {wanted[names[i]] for i in members if names[i] in wanted}
        if not sides:
            continue
        side = SplitSide.TRAIN if SplitSide.TRAIN in sides else SplitSide.VAL
        if group in current and current[group] != side:
            moved.extend(f"{names[i]}: {current[group]} -> {side}" for i in members)
        forced[group] = side
    return forced, moved


def _stratify(
    new_groups: list[int],
    group_classes: dict[int, set[str]],
    assigned: dict[int, SplitSide],
    groups: dict[int, list[int]],
    config: SplitConfig,
) -> dict[int, SplitSide]:
    """Iterative stratification (Sechidis et al., 2011) of the new groups, seeded with each side's current counts.

    Each side wants its fraction of every class's images; a class is placed rarest first, each of its
    groups on the side that still wants that class most. `new_groups` come in the order of a hash of
    their names, so the result depends only on the data, never on the order records arrive in.
    """
    fractions = {side: f for side, f in config.fractions().items() if f > 0}
    size = {g: len(groups[g]) for g in groups}
    totals: Counter[str] = Counter()
    for g, classes in group_classes.items():
        for c in classes:
            totals[c] += size[g]
    desired = {side: {c: fraction * n for c, n in totals.items()} for side, fraction in fractions.items()}
    if SplitSide.HOLDOUT in desired:
        for c, n in totals.items():  # a floor per class, leaving at least one training and one validation image
            floor = min(config.holdout_min_images_per_class, max(n - 1 - (SplitSide.VAL in desired), 0))
            desired[SplitSide.HOLDOUT][c] = max(desired[SplitSide.HOLDOUT][c], floor)
    for c in totals:
        desired[SplitSide.TRAIN][c] = max(desired[SplitSide.TRAIN][c], 1.0)
    desired_total = {side: fraction * sum(size.values()) for side, fraction in fractions.items()}
    for g, side in assigned.items():
        _take(desired, desired_total, side, group_classes[g], size[g])

    rank = {side: index for index, side in enumerate(fractions)}
    placed: dict[int, SplitSide] = {}
    remaining = list(new_groups)
    while remaining:
        left: Counter[str] = Counter(c for g in remaining for c in group_classes[g])
        if not left:
            for g in remaining:
                side = max(fractions, key=lambda s: (desired_total[s], -rank[s]))
                placed[g] = side
                desired_total[side] -= size[g]
            break
        rarest = min(left, key=lambda c: (left[c], class_sort_key(c)))
        for g in [g for g in remaining if rarest in group_classes[g]]:
            side = max(fractions, key=lambda s: (desired[s][rarest], desired_total[s], -rank[s]))
            placed[g] = side
            _take(desired, desired_total, side, group_classes[g], size[g])
        remaining = [g for g in remaining if g not in placed]
    return placed


def _take(
    desired: dict[SplitSide, dict[str, float]],
    desired_total: dict[SplitSide, float],
    side: SplitSide,
    classes: set[str],
    images: int,
) -> None:
    if side not in desired:
        return
    for c in classes:
        desired[side][c] -= images
    desired_total[side] -= images


def _give_every_class_a_training_image(
    group_classes: dict[int, set[str]],
    side_of_group: dict[int, SplitSide],
    forced: set[int],
    groups: dict[int, list[int]],
    names: list[str],
) -> None:
    """A class with no training image cannot be learnt: the split refuses rather than train without it."""
    trained = {c for g, side in side_of_group.items() if side == SplitSide.TRAIN for c in group_classes[g]}
    missing = {c for classes in group_classes.values() for c in classes} - trained
    for c in sorted(missing, key=class_sort_key):
        holders = [g for g in side_of_group if c in group_classes[g]]
        if all(g in forced for g in holders):
            raise SplitError(
                f"class {c} appears only in MANDATORY_VAL_FILENAMES images: it would have no training image"
            )
        # Only reachable through images assigned in earlier runs: keeping their side matters more than
        # training on the class now; the next image of the class goes to training (desired >= 1).


def _rare_classes(classes_of: list[set[str]], config: SplitConfig) -> set[str]:
    images_per_class = Counter(c for classes in classes_of for c in classes)
    return {c for c, n in images_per_class.items() if n < config.n_fold}


def split_report(records: list[dict], result: SplitResult) -> SplitReport:
    counted = {side: count_classes(records[i] for i in indices) for side, indices in result.sides.items()}
    val_with_copies = count_classes(records[i] for i in result.sides[SplitSide.VAL] + result.copied_to_val)
    counted[SplitSide.VAL] = val_with_copies
    classes = sorted({c for counts in counted.values() for c in counts.images_per_class}, key=class_sort_key)
    return SplitReport(
        assignment_version=result.assignment.version,
        holdout=result.holdout,
        counts={side: {"images": counts.images, "boxes": counts.boxes} for side, counts in counted.items()},
        per_class={
            c: {
                f"{side}_{kind}": getattr(counts, f"{kind}_per_class")[c]
                for side, counts in counted.items()
                for kind in ("images", "boxes")
            }
            for c in classes
        },
        newly_assigned=result.newly_assigned,
        moved_by_mandatory_lists=result.moved_by_mandatory_lists,
        mandatory_not_found=result.mandatory_not_found,
        rare_classes=result.rare_classes,
        images_in_train_and_val=[basename(records[i]) for i in result.copied_to_val],
        conflicting_copies=result.conflicting_copies,
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
    for _ in range(_COMMIT_ATTEMPTS):
        previous = load()
        result = split_records(records, previous, config)
        _check_something_trains(result, len(records), name)
        if not result.changed:
            return result
        result.assignment.version = previous.version + 1
        if create(result.assignment):
            return result
    raise SplitError(f"the split assignment kept changing under this run ({_COMMIT_ATTEMPTS} attempts): try again")


def _check_something_trains(result: SplitResult, total: int, name: str) -> None:
    if result.sides[SplitSide.TRAIN]:
        return
    raise SplitError(
        f"split assignment {name} version {result.assignment.version} leaves no training image: of the {total} "
        f"images, {len(result.sides[SplitSide.HOLDOUT])} held out and {len(result.sides[SplitSide.VAL])} for "
        "validation (none of them may be trained on); add images, or start a new assignment "
        f"(every side drawn anew): {reset_command(name, force=True)}"
    )


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


# --- the stored assignment: read and checked at the edge, restarted only on an operator's word ---------


def read_assignment(registry: ModelRegistry, name: str) -> SplitAssignment:
    """The latest stored assignment (empty when there is none); AssignmentUnreadable when it is damaged."""
    latest = registry.latest_versioned_document(name)
    if latest is None:
        return SplitAssignment()
    version, content = latest
    return parse_assignment(name, version, content)


def parse_assignment(name: str, version: int, content: bytes) -> SplitAssignment:
    """Version `version` of the assignment `name`, validated: a message naming it and its repair otherwise."""
    try:
        assignment = SplitAssignment.from_bytes(content)
    except ValidationError as error:
        raise AssignmentUnreadable(name, version, _first_problem(error)) from None
    if assignment.version != version:
        # The next version would be written over one that exists, and every later run would fail to commit.
        raise AssignmentUnreadable(name, version, f"it says it is version {assignment.version}")
    return assignment


def _first_problem(error: ValidationError) -> str:
    """The first thing wrong, on one line (an image name in the location may hold any character)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = ".".join(str(part)[:100] for part in first["loc"])
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    text = (f"{where}: " if where else "") + first["msg"][:200] + more
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class AssignmentRestart(BaseModel):
    """Why an assignment was started afresh: kept in the version `retrain split reset` stored."""

    reason: str
    replaces_version: int
    replaced: str  # "unreadable (...)" or "readable (N images)"
    at: str


class RestartedAssignment(SplitAssignment):
    """An empty assignment that says why it restarted; the next run reads it as any other version."""

    restart: AssignmentRestart


class RestartRefused(SplitError):
    """The latest assignment is readable: restarting it would draw a new holdout, so it takes --force."""


def restart_assignment(registry: ModelRegistry, name: str, reason: str, *, force: bool = False) -> AssignmentRestart:
    """Store an empty assignment as the next version of `name`, recording why and what it replaced.

    Refused (RestartRefused) when the latest version is readable, unless `force`: its holdout is what
    every promotion so far was decided on. Create-only, as every version: a racing writer's version
    is read again and the restart stored after it.
    """
    for _ in range(_COMMIT_ATTEMPTS):
        latest = registry.latest_versioned_document(name)
        previous = 0 if latest is None else latest[0]
        try:
            readable = None if latest is None else parse_assignment(name, *latest)
            replaced = "nothing" if readable is None else f"readable ({len(readable.by_name)} images)"
        except AssignmentUnreadable as unreadable:
            readable, replaced = None, f"unreadable ({unreadable.problem})"
        if readable is not None and not force:
            raise RestartRefused(
                f"split assignment {name} version {previous} is {replaced}: a new one draws every side anew, and "
                "images held out so far may then be trained on; add --force to restart it anyway"
            )
        restart = AssignmentRestart(
            reason=reason, replaces_version=previous, replaced=replaced, at=datetime.now(UTC).isoformat()
        )
        document = RestartedAssignment(version=previous + 1, restart=restart)
        if registry.create_document(name, str(document.version), document.to_bytes()):
            return restart
    raise SplitError(
        f"split assignment {name} kept changing under the restart ({_COMMIT_ATTEMPTS} attempts): try again"
    )


def registry_store(assignment_name: str) -> tuple[Callable[[], SplitAssignment], Callable[[SplitAssignment], bool]]:
    """Load and create-only store of the assignment as versioned documents of the model registry."""
    from retrainer.settings import load_registry_location
    from retrainer.workspace import open_registry

    registry = open_registry(load_registry_location())

    def load() -> SplitAssignment:
        return read_assignment(registry, assignment_name)

    def create(assignment: SplitAssignment) -> bool:
        return registry.create_document(assignment_name, str(assignment.version), assignment.to_bytes())

    return load, create


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
