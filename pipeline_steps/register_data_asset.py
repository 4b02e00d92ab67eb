"""Step 3, register data asset: the split's train and validation MLTables become versioned data assets.

    python -m pipeline_steps.register_data_asset --train-input-path <MLTable folder> \
        --val-input-path <MLTable folder> --data_store_name workspaceblobstore --output_path <folder>

On Azure ML (azure-ai-ml v2) each folder is uploaded to the datastore and registered as the next
version of an `mltable` asset; locally (no Azure ML configured, or WORKSPACE_BACKEND=local) the
local workspace keeps versioned copies and a catalog. Assets are tagged with their image and box
counts. An empty validation set (no split) is not registered. `data_assets.json` in the output
folder holds the asset URIs (`azureml:<name>:<version>` on Azure ML).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline_steps._cli import add_flag
from pipeline_steps.mltable_io import count_classes, read_records
from retrainer.settings import SettingsError, get_settings
from retrainer.workspace import DataAssetRef, ModelRegistry, open_registry

OUTPUT_FILE = "data_assets.json"


def asset_tags(folder: Path) -> dict[str, str]:
    counts = count_classes(read_records(folder))
    return {"images": str(counts.images), "boxes": str(counts.boxes), "classes": str(len(counts.images_per_class))}


def register_split(
    registry: ModelRegistry,
    train_folder: Path,
    val_folder: Path,
    *,
    train_name: str,
    val_name: str,
    datastore: str | None,
) -> dict[str, DataAssetRef | None]:
    refs: dict[str, DataAssetRef | None] = {}
    for role, folder, name in (("train", train_folder, train_name), ("val", val_folder, val_name)):
        tags = asset_tags(folder)
        if tags["images"] == "0":
            if role == "train":
                raise ValueError(f"training MLTable {folder} has no records")
            refs[role] = None
            continue
        refs[role] = registry.register_data_asset(
            name,
            folder,
            description=f"P&ID symbol {role} set (AutoML object detection JSONL)",
            tags={**tags, "role": role},
            datastore=datastore,
        )
    return refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_steps.register_data_asset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flag(parser, "train-input-path", required=True, type=Path, help="training MLTable folder")
    add_flag(parser, "val-input-path", required=True, type=Path, help="validation MLTable folder")
    add_flag(parser, "data_store_name", default="workspaceblobstore", help="datastore that receives the upload")
    add_flag(parser, "train_asset_name", env="TRAIN_DATA_ASSET_NAME", default="pid-symbols-train")
    add_flag(parser, "val_asset_name", env="VAL_DATA_ASSET_NAME", default="pid-symbols-val")
    add_flag(parser, "output_path", required=True, type=Path, help="folder that receives data_assets.json")
    args = parser.parse_args(argv)
    try:
        refs = register_split(
            open_registry(get_settings()),
            args.train_input_path,
            args.val_input_path,
            train_name=args.train_asset_name,
            val_name=args.val_asset_name,
            datastore=args.data_store_name,
        )
    except (SettingsError, ValueError, FileNotFoundError) as error:
        print(f"register data asset failed: {error}", file=sys.stderr)
        return 1
    args.output_path.mkdir(parents=True, exist_ok=True)
    document = {role: (vars(ref) if ref else None) for role, ref in refs.items()}
    (args.output_path / OUTPUT_FILE).write_text(json.dumps(document, indent=2))
    for role, ref in refs.items():
        print(f"{role}: {ref.uri} ({ref.tags['images']} images)" if ref else f"{role}: empty, not registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
