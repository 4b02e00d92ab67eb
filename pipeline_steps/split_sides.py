"""How images get their sides (training, validation, holdout): sticky, stratified, pure.

Only images the previous assignment does not know are assigned, by iterative stratification of their class
sets seeded with what each side already holds, so every side stays stratified by class. A sheet seen before
under another name (same size and boxes) joins its original's side. Mandatory lists win, and move an image
when they must (reported); training keeps at least one image of every class. The step
(`pipeline_steps/data_split.py`) reads the records and the stored assignment and writes the sides.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from shared.contracts import SplitAssignment, SplitReport, SplitSide, holdout_info
from shared.mltable_io import class_sort_key, count_classes
from shared.promotion import HoldoutInfo
from shared.settings import setting_bound
from shared.split_assignment import SplitError

RARE_CLASS_POLICIES = ("train_only", "copy")


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
    rare_class_policy: str = "train_only"
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
        rare_class_policy=config.rare_class_policy,
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
        rare_class_policy=result.rare_class_policy,
        images_in_train_and_val=[basename(records[i]) for i in result.copied_to_val],
        conflicting_copies=result.conflicting_copies,
    )
