"""VS Code launch configurations: the names users know, and the step chain runs on the sample data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def configurations() -> dict[str, dict]:
    document = json.loads((ROOT / ".vscode" / "launch.json").read_text())
    return {config["name"]: config for config in document["configurations"]}


def test_the_design_document_configurations_exist() -> None:
    assert {
        "Python: Unzip & Upload local files",
        "Python: Pipeline Step - Data Aggregation",
        "Python: Pipeline Step - Data Split",
        "Python: Pipeline Step - Registering Data Asset",
        "Python: Pipeline Step - Register Model",
        "Python: Pipeline Step - Tag Model",
    } <= set(configurations())
    assert (ROOT / configurations()["Python: Unzip & Upload local files"]["args"][1]).is_file()


@pytest.mark.slow  # runs every step as a process
def test_step_configurations_run_in_order_on_the_sample_data(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sample_artifacts", tmp_path / "sample_artifacts")
    for name in (
        "Python: Pipeline Step - Data Aggregation",
        "Python: Pipeline Step - Data Split",
        "Python: Pipeline Step - Registering Data Asset",
        "Python: Pipeline Step - Train (local CPU)",
        "Python: Pipeline Step - Register Model",
        "Python: Pipeline Step - Tag Model",
    ):
        config = configurations()[name]
        args = [("--epochs" if a == "--max-minutes" else a) for a in config["args"]]  # one epoch, not minutes
        args = ["1" if previous == "--epochs" else a for previous, a in zip(["", *args[:-1]], args, strict=True)]
        completed = subprocess.run(
            [sys.executable, "-m", config["module"], *args],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **config.get("env", {})},
            capture_output=True,
            text=True,
        )
        assert completed.returncode == 0, f"{name}: {completed.stderr}"
    assets = json.loads((tmp_path / ".workspace" / "launch" / "registered" / "data_assets.json").read_text())
    assert assets["train"]["version"] == "1" and int(assets["train"]["tags"]["images"]) >= 6
    best = json.loads((tmp_path / ".workspace" / "launch" / "best_model" / "best_model_metadata.json").read_text())
    assert best["best_version"] == "1" and best["promoted"]
