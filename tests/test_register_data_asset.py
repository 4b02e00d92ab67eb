"""Step 3, register data asset: local versioned catalog, and the Azure ML entity built by the SDK."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.ai.ml.entities import Data

from pipeline_steps import register_data_asset
from retrainer.settings import load_settings
from shared.mltable_io import write_records
from shared.registry.azureml import AzureMLModelRegistry
from shared.registry.local import LocalModelRegistry
from tests.fakes import FakeMLClient, azureml_registry
from tests.helpers import record


@pytest.fixture
def split_folders(tmp_path: Path) -> tuple[Path, Path]:
    write_records(tmp_path / "train", [record("a.jpg", ["1", "2"]), record("b.jpg", ["1"])])
    write_records(tmp_path / "val", [record("c.jpg", ["2"])])
    return tmp_path / "train", tmp_path / "val"


def run_step(
    tmp_path: Path, train: Path, val: Path, monkeypatch: pytest.MonkeyPatch, holdout: Path | None = None
) -> dict:
    monkeypatch.setenv("WORKSPACE_BACKEND", "local")
    monkeypatch.setenv("LOCAL_WORKSPACE_DIR", str(tmp_path / "workspace"))
    from retrainer.settings import get_settings

    get_settings.cache_clear()
    out = tmp_path / "out"
    code = register_data_asset.main(
        [
            "--train-input-path",
            str(train),
            "--val_input_path",
            str(val),
            "--data_store_name",
            "workspaceblobstore",
            "--output_path",
            str(out),
            *(["--holdout-input-path", str(holdout)] if holdout else []),
        ]
    )
    get_settings.cache_clear()
    assert code == 0
    return json.loads((out / "data_assets.json").read_text())


def test_local_registration_versions_and_tags_both_sets(
    tmp_path: Path, split_folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_step(tmp_path, *split_folders, monkeypatch)
    second = run_step(tmp_path, *split_folders, monkeypatch)
    assert (first["train"]["version"], second["train"]["version"]) == ("1", "2")
    assert first["train"]["tags"] == {
        "images": "2",
        "boxes": "3",
        "classes": "2",
        "class_ids": '["1","2"]',
        "role": "train",
    }
    assert first["val"]["tags"]["images"] == "1"
    stored = Path(first["train"]["uri"].removeprefix("file://"))
    assert (stored / "MLTable").is_file() and (stored / "annotations.jsonl").is_file()


def test_the_holdout_is_registered_as_its_own_asset(
    tmp_path: Path, split_folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_records(tmp_path / "holdout", [record("d.jpg", ["1"]), record("e.jpg", ["2"])])
    assets = run_step(tmp_path, *split_folders, monkeypatch, holdout=tmp_path / "holdout")
    assert assets["holdout"]["name"] == "pid-symbols-holdout"
    assert assets["holdout"]["tags"] == {
        "images": "2",
        "boxes": "2",
        "classes": "2",
        "class_ids": '["1","2"]',
        "role": "holdout",
    }
    assert run_step(tmp_path, *split_folders, monkeypatch)["holdout"] is None


def test_empty_validation_set_is_not_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_records(tmp_path / "train", [record("a.jpg", ["1"])])
    write_records(tmp_path / "val", [])
    assert run_step(tmp_path, tmp_path / "train", tmp_path / "val", monkeypatch)["val"] is None


def test_concurrent_local_registrations_get_distinct_versions(tmp_path: Path, split_folders: tuple[Path, Path]) -> None:
    workspace = LocalModelRegistry(tmp_path / "ws")
    with ThreadPoolExecutor(max_workers=8) as pool:
        refs = list(
            pool.map(
                lambda _: workspace.register_data_asset("set", split_folders[0], description="", tags={}), range(16)
            )
        )
    assert sorted(int(ref.version) for ref in refs) == list(range(1, 17))
    entries = (tmp_path / "ws" / "data" / "set").glob("*/asset.json")
    stored = {json.loads(entry.read_text())["version"] for entry in entries}
    assert stored == {str(v) for v in range(1, 17)}, "each version stored once, under its own folder"
    assert len({ref.uri for ref in refs}) == 16 and all(Path(urlsplit(ref.uri).path).is_dir() for ref in refs)


def test_a_folder_without_mltable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an MLTable folder"):
        LocalModelRegistry(tmp_path).register_data_asset("x", tmp_path, description="", tags={})


def test_azureml_registration_sends_a_valid_mltable_asset_and_returns_its_uri(split_folders: tuple[Path, Path]) -> None:
    client = FakeMLClient()
    ref = azureml_registry(client).register_data_asset(
        "pid-symbols-train", split_folders[0], description="train", tags={"images": "2"}, datastore="myblobstore"
    )
    (sent,) = client.data.sent
    assert ref.uri == "azureml:pid-symbols-train:5"
    assert (sent.type, sent.version, sent.datastore, sent.tags) == ("mltable", None, "myblobstore", {"images": "2"})
    # The SDK's own schema accepts what was sent.
    reloaded = Data._load(data=sent._to_dict())
    assert reloaded.type == "mltable" and reloaded.name == "pid-symbols-train"


def test_azureml_workspace_is_built_from_settings_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", "rg-pid")
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", "mlw-pid")
    workspace = AzureMLModelRegistry.from_settings(load_settings(), credential=object())
    client = workspace._ml_client
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "00000000-0000-0000-0000-000000000001",
        "rg-pid",
        "mlw-pid",
    )
