"""What ships: the function app's requirements match the package's runtime dependencies."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devtools.function_package import FuncIgnore, package_files

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a file, without comments (a line's own after ` #` too)."""
    lines = (line.split(" #", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_function_app_requirements_are_the_runtime_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deployed = requirement_lines(ROOT / "requirements.txt")
    assert deployed == project["dependencies"]
    heavy = ("torch", "torchvision", "mlflow", "mltable", "pytest", "pillow", "faster-coco-eval")
    assert not [line for line in deployed if line.lower().startswith(heavy)]


def test_local_settings_sample_satisfies_the_settings_object() -> None:

    from retrainer.settings import Settings

    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings(**{key: value for key, value in values.items() if key in Settings.model_fields})
    assert values["STORAGE_ACCOUNT_CONTAINER_NAME"] == settings.STORAGE_ACCOUNT_CONTAINER_NAME
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_host_json_uses_the_extension_bundle_with_event_grid_blob_triggers() -> None:

    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"] == "[4.0.0, 5.0.0)"


def test_deployed_package_is_the_function_app_and_nothing_else() -> None:
    shipped = [path for path in package_files(ROOT) if "__pycache__" not in path]
    tops = {path.split("/")[0] for path in shipped}
    assert tops == {"function_app.py", "host.json", "requirements.txt", "retrainer", "shared"}, "no pipeline_steps"
    assert "retrainer/triggers/event_grid.py" in shipped and "retrainer/assembly/pipeline.py" in shipped
    assert "shared/components/tag_model.yml" in shipped and "shared/evaluation/comparison.py" in shipped
    tracked = {path.relative_to(ROOT).as_posix() for path in (ROOT / "shared").rglob("*") if path.is_file()}
    assert {path for path in tracked if "__pycache__" not in path} <= set(shipped), "shared/ ships whole"


def component_snapshot(root: Path) -> set[str]:
    """What Azure ML uploads as a component's code (`code: ../..`, the repository root), read by the SDK's own
    `.amlignore` rules; a folder whose every path is left out is not walked (the virtual environments)."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(root)
    files = set()
    for folder, directories, names in os.walk(root):
        directories[:] = [d for d in directories if not ignore.is_file_excluded(Path(folder, d, "any"))]
        files |= {
            Path(folder, n).relative_to(root).as_posix() for n in names if not ignore.is_file_excluded(Path(folder, n))
        }
    return files


def test_the_component_snapshot_is_the_steps_code_and_shared_without_the_service_or_the_base_model() -> None:
    snapshot = component_snapshot(ROOT)
    steps = {
        path.relative_to(ROOT).as_posix()
        for package in ("pipeline_steps", "shared")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path for path in steps if "__pycache__" not in path and "/detector/base/" not in path} <= snapshot
    assert "shared/components/conda.yml" in snapshot
    left_out = (
        "retrainer/",
        "devtools/",
        "inference/",
        "tests/",
        "bench/",
        "pipeline_steps/detector/base/",
        "function_app.py",
    )
    assert not [path for path in snapshot if path.startswith(left_out)]
    assert (ROOT / "pipeline_steps" / "detector" / "base" / "weights.pt").is_file(), "it is left out, not missing"


def test_core_tools_ignore_rules_let_a_negated_line_win_wherever_it_stands() -> None:
    rules = FuncIgnore("!keep\n*\nkeep/secret.txt\n# a comment\n")
    assert not rules.denies("keep/secret.txt"), "Core Tools: any matching ! line wins"
    assert rules.denies("other/file.py")
    assert FuncIgnore("tests/").denies("tests/test_x.py") and not FuncIgnore("tests/").denies("src/tests.py")


@pytest.mark.slow
def test_deployed_package_imports_with_requirements_txt_alone(tmp_path: Path) -> None:
    """Build the package as publishing would, install requirements.txt into a fresh venv, import every module."""
    app = tmp_path / "wwwroot"
    for relative in package_files(ROOT):
        if "__pycache__" in relative:
            continue
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, app / relative)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=app,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    modules = sorted(
        relative[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for relative in package_files(app)
        if relative.endswith(".py")
    )
    script = (
        "import importlib, json\n"
        f"modules = {modules!r}\n"
        "failed = {}\n"
        "for name in modules:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed[name] = repr(error)\n"
        "import function_app\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        "print(json.dumps({'failed': failed, 'functions': names}))\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run([str(python), "-c", script], cwd=app, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    from tests.helpers import indexed_functions

    assert report["functions"] == sorted(indexed_functions()), "the deployed app indexes every function"
    assert {"convert_label", "on_event", "monitor", "status_page"} <= set(report["functions"])
    assert len(modules) > 30


def test_local_state_is_neither_deployed_nor_uploaded_to_azure_ml(tmp_path: Path) -> None:
    """.gitignore is the one list of local state; .amlignore repeats it, and .funcignore ships none of it."""
    local_state = requirement_lines(ROOT / ".gitignore")
    assert set(local_state) <= set(requirement_lines(ROOT / ".amlignore"))
    for folder in (".workspace", ".venv-checkov", ".pytest_cache", ".ruff_cache", ".mypy_cache", "sample_artifacts"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.py").write_text("")
    for kept in (".funcignore", "function_app.py", "host.json", "requirements.txt"):
        shutil.copy2(ROOT / kept, tmp_path / kept)
    shipped = package_files(tmp_path)
    assert sorted(shipped) == ["function_app.py", "host.json", "requirements.txt"]


def test_the_sdk_is_held_to_the_minor_whose_private_methods_the_code_calls() -> None:
    """The pipeline builder and the endpoint's YAML call azure-ai-ml's private `_validate` / `_to_dict`: a new minor
    may change them, so the function app takes the tested minor only, as the steps' lock does."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    callers = [
        path.relative_to(ROOT).as_posix()
        for package in ("retrainer", "shared")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"\._(validate|to_dict|to_rest_object)\(\)", path.read_text())
    ]
    assert callers, "no private SDK method is called any more: the pin can go"
    (line,) = [line for line in requirement_lines(ROOT / "requirements.txt") if line.startswith("azure-ai-ml")]
    allowed = Requirement(line).specifier
    tested = Version(importlib.metadata.version("azure-ai-ml"))
    assert tested in allowed and Version(f"{tested.major}.{tested.minor + 1}.0") not in allowed
