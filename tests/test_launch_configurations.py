"""VS Code launch configurations: generated from the graph, the names users know, and the step chain runs on the
sample data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import launch_configurations
from devtools.launch_configurations import LAUNCH_FILE, configuration_name
from retrainer.assembly.graph import STEPS, TRAIN

ROOT = Path(__file__).resolve().parent.parent


def configurations() -> dict[str, dict]:
    document = json.loads(LAUNCH_FILE.read_text())
    return {config["name"]: config for config in document["configurations"]}


def test_launch_json_is_what_the_graph_renders() -> None:
    assert LAUNCH_FILE.read_text() == launch_configurations.render(), (
        ".vscode/launch.json is stale: run `python -m devtools.launch_configurations`"
    )
    assert launch_configurations.main(["--check"]) == 0


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
    for step in STEPS:
        config = configurations()[configuration_name(step.name)]
        args = config["args"]
        if step.name == TRAIN:  # one epoch, not minutes
            at = args.index("--max_minutes")
            args = [*args[:at], "--epochs", "1", *args[at + 2 :]]
        completed = subprocess.run(
            [sys.executable, "-m", config["module"], *args],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **config.get("env", {})},
            capture_output=True,
            text=True,
        )
        assert completed.returncode == 0, f"{config['name']}: {completed.stderr}"
    launch = tmp_path / ".workspace" / "launch"
    assets = json.loads((launch / "register_data_asset" / "output_path" / "data_assets.json").read_text())
    assert assets["train"]["version"] == "1" and int(assets["train"]["tags"]["images"]) >= 6
    best = json.loads((launch / "tag_model" / "best_model_metadata_path" / "best_model_metadata.json").read_text())
    assert best["best_version"] == "1" and best["promoted"]
