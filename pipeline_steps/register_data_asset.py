"""Step 3, register data asset: the split's train, validation and holdout MLTables become versioned data assets.

    python -m pipeline_steps.register_data_asset --train-input-path <MLTable folder> \
        --val-input-path <MLTable folder> [--holdout-input-path <MLTable folder>] \
        --data_store_name workspaceblobstore --output_path <folder>

On Azure ML (azure-ai-ml v2) each folder is uploaded to the datastore and registered as the next
version of an `mltable` asset; locally (no Azure ML configured, or WORKSPACE_BACKEND=local) the
local workspace keeps versioned copies and a catalog. Assets are tagged with their image and box
counts. An empty validation or holdout set is not registered. `data_assets.json` in the output
folder (`contracts.DataAssets`) holds the asset URIs (`azureml:<name>:<version>` on Azure ML).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline_steps._cli import StepParser, add_flag, step_parser
from shared.contracts import CLASS_IDS_TAG, DataAssetEntry, DataAssets
from shared.mltable_io import class_sort_key, count_classes, read_records
from shared.registry import ModelRegistry, open_registry
from shared.settings import SettingsError, load_registry_location


def asset_tags(folder: Path) -> dict[str, str]:
    counts = count_classes(read_records(folder))
    class_ids = sorted(counts.images_per_class, key=class_sort_key)
    return {
        "images": str(counts.images),
        "boxes": str(counts.boxes),
        "classes": str(len(class_ids)),
        CLASS_IDS_TAG: json.dumps(class_ids, separators=(",", ":")),
    }


def register_split(
    registry: ModelRegistry,
    folders: dict[str, Path | None],
    names: dict[str, str],
    *,
    datastore: str | None,
) -> DataAssets:
    """Register each non-empty set (`train`, `val`, `holdout`) as the next version of its asset."""
    entries: dict[str, DataAssetEntry | None] = {}
    for role, folder in folders.items():
        tags = asset_tags(folder) if folder is not None else None
        if folder is None or tags is None or tags["images"] == "0":
            if role == "train":
                raise ValueError(f"training MLTable {folder} has no records")
            entries[role] = None
            continue
        ref = registry.register_data_asset(
            names[role],
            folder,
            description=f"P&ID symbol {role} set (AutoML object detection JSONL)",
            tags={**tags, "role": role},
            datastore=datastore,
        )
        entries[role] = DataAssetEntry(name=ref.name, version=ref.version, uri=ref.uri, tags=ref.tags)
    return DataAssets.model_validate(entries)


def build_parser() -> StepParser:
    parser = step_parser("register_data_asset", __doc__)
    add_flag(parser, "train-input-path", required=True, type=Path, help="training MLTable folder")
    add_flag(parser, "val-input-path", required=True, type=Path, help="validation MLTable folder")
    add_flag(parser, "holdout-input-path", type=Path, default=None, help="holdout MLTable folder")
    add_flag(parser, "data_store_name", help="datastore that receives the upload")
    add_flag(parser, "train_asset_name", default="pid-symbols-train")
    add_flag(parser, "val_asset_name", default="pid-symbols-val")
    add_flag(parser, "holdout_asset_name", default="pid-symbols-holdout")
    add_flag(parser, "output_path", required=True, type=Path, help="folder that receives data_assets.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        assets = register_split(
            open_registry(load_registry_location()),
            {"train": args.train_input_path, "val": args.val_input_path, "holdout": args.holdout_input_path},
            {"train": args.train_asset_name, "val": args.val_asset_name, "holdout": args.holdout_asset_name},
            datastore=args.data_store_name,
        )
    except (SettingsError, ValueError, FileNotFoundError) as error:
        print(f"register data asset failed: {error}", file=sys.stderr)
        return 1
    assets.write(args.output_path)
    for role in ("train", "val", "holdout"):
        entry: DataAssetEntry | None = getattr(assets, role)
        print(f"{role}: {entry.uri} ({entry.tags['images']} images)" if entry else f"{role}: empty, not registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
