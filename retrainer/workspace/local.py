"""Local workspace: versioned copies of data assets under a folder, a catalog entry beside each."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from retrainer.workspace import DataAssetRef

_ASSET_FILE = "asset.json"


class LocalWorkspace:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def register_data_asset(
        self, name: str, folder: Path, *, description: str, tags: dict[str, str], datastore: str | None = None
    ) -> DataAssetRef:
        """Copy the folder to `<root>/data/<name>/<version>/`; versions count up from 1, safely under races."""
        if not (folder / "MLTable").is_file():
            raise FileNotFoundError(f"{folder} is not an MLTable folder (no MLTable file)")
        asset_root = self.root / "data" / name
        asset_root.mkdir(parents=True, exist_ok=True)
        version = self._claim_next_version(asset_root)
        target = asset_root / version
        shutil.copytree(folder, target / "content")
        ref = DataAssetRef(name, version, (target / "content").as_uri(), dict(tags))
        entry = {
            "name": name,
            "version": version,
            "uri": ref.uri,
            "description": description,
            "tags": tags,
            "datastore": datastore,
            "created": datetime.now(UTC).isoformat(),
        }
        (target / _ASSET_FILE).write_text(json.dumps(entry, indent=2))
        return ref

    def data_assets(self, name: str) -> list[DataAssetRef]:
        """Registered versions of an asset, oldest first."""
        refs = []
        for entry_path in (self.root / "data" / name).glob(f"*/{_ASSET_FILE}"):
            entry = json.loads(entry_path.read_text())
            refs.append(DataAssetRef(entry["name"], entry["version"], entry["uri"], entry["tags"]))
        return sorted(refs, key=lambda ref: int(ref.version))

    @staticmethod
    def _claim_next_version(asset_root: Path) -> str:
        versions = [int(p.name) for p in asset_root.iterdir() if p.name.isdigit()]
        candidate = max(versions, default=0) + 1
        while True:
            try:
                (asset_root / str(candidate)).mkdir()
                return str(candidate)
            except FileExistsError:
                candidate += 1
