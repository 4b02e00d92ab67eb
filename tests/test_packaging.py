"""What ships: the function app's requirements match the package's runtime dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_function_app_requirements_are_the_runtime_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deployed = requirement_lines(ROOT / "requirements.txt")
    assert deployed == project["dependencies"]
    heavy = ("torch", "torchvision", "mlflow", "mltable", "pytest", "pillow", "tqdm", "faster-coco-eval")
    assert not [line for line in deployed if line.lower().startswith(heavy)]


def test_local_settings_sample_satisfies_the_settings_object() -> None:
    import json

    from retrainer.settings import Settings

    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings(**{key: value for key, value in values.items() if key in Settings.model_fields})
    assert values["STORAGE_ACCOUNT_CONTAINER_NAME"] == settings.STORAGE_ACCOUNT_CONTAINER_NAME
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_host_json_uses_the_extension_bundle_with_event_grid_blob_triggers() -> None:
    import json

    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"] == "[4.0.0, 5.0.0)"


def test_deployed_package_leaves_out_tests_tools_and_training_code() -> None:
    ignored = set(requirement_lines(ROOT / ".funcignore"))
    assert {
        "tests/",
        "bench/",
        "infra/",
        "node_modules/",
        ".venv/",
        "pipeline_steps/detector/",
        "pipeline_steps/train.py",
    } <= ignored
