"""One table from the settings to the steps' inputs, used by the Azure ML pipeline and the local runner alike.

Keys are the component inputs of `components/<step>.yml` (the step CLIs take the same names as
flags), so a setting reaches a step the same way on both backends, and nowhere else. Data inputs
and outputs (folders) are wired by each runner; these are the settings.
"""

from __future__ import annotations

from retrainer.settings import Settings

StepSettings = dict[str, dict[str, str | int | float | bool | None]]


def step_settings(settings: Settings) -> StepSettings:
    """Every setting each step takes, by component input name; None leaves an optional input unset."""
    return {
        "data_aggregation": {},
        "data_split": {
            "use_stratified_split": settings.USE_STRATIFIED_SPLIT,
            "stratified_split_n_fold": settings.STRATIFIED_SPLIT_N_FOLD,
            "holdout_fraction": settings.HOLDOUT_FRACTION,
            "holdout_min_images_per_class": settings.HOLDOUT_MIN_IMAGES_PER_CLASS,
            "mandatory_train_filenames": settings.MANDATORY_TRAIN_FILENAMES or None,
            "mandatory_val_filenames": settings.MANDATORY_VAL_FILENAMES or None,
            "rare_class_policy": settings.RARE_CLASS_POLICY,
            "assignment_name": settings.SPLIT_ASSIGNMENT_NAME,
        },
        "register_data_asset": {"data_store_name": settings.DATA_STORE_NAME},
        "register_model": {"model_base_name": settings.MODEL_BASE_NAME},
        "tag_model": {
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
    }


def as_flags(inputs: dict[str, object]) -> list[str]:
    """`--name value` pairs for a step CLI; unset optional inputs are left out, booleans as true/false."""
    flags: list[str] = []
    for name, value in inputs.items():
        if value is None:
            continue
        flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags
