"""The house rules that keep the tree livable, checked on the import statements themselves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> dict[str, set[str]]:
    return {
        path.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."): imports_of(path)
        for path in (ROOT / package).rglob("*.py")
    }


def test_nothing_that_ships_imports_devtools() -> None:
    shipped = {**modules("retrainer"), **modules("pipeline_steps")}
    offenders = {name for name, imported in shipped.items() if any(m.split(".")[0] == "devtools" for m in imported)}
    assert offenders == set()


def test_only_adapters_import_the_composition_root() -> None:
    shipped = {**modules("retrainer"), **modules("pipeline_steps")}
    adapters = ("retrainer.triggers.", "retrainer.cli")
    offenders = {
        name
        for name, imported in shipped.items()
        if "retrainer.bootstrap" in imported and not name.startswith(adapters) and name != "retrainer.bootstrap"
    }
    assert offenders == set()


def test_the_core_does_not_import_triggers_or_steps() -> None:
    core = {
        name: imported
        for name, imported in modules("retrainer").items()
        # The two runners start the steps, so they know them: the Azure ML one builds the pipeline, the
        # local one runs the step CLIs; both take the step inputs from pipeline_steps.step_inputs.
        if not name.startswith(
            ("retrainer.triggers", "retrainer.workspace.azureml", "retrainer.workspace.local_runner", "retrainer.cli")
        )
    }
    offenders = {
        name
        for name, imported in core.items()
        if any(m.startswith(("retrainer.triggers", "pipeline_steps", "function_app")) for m in imported)
    }
    assert offenders == set()


def test_the_subject_format_lives_only_in_the_events_module() -> None:
    writers = {
        path.relative_to(ROOT).as_posix()
        for package in ("retrainer", "pipeline_steps", "devtools")
        for path in (ROOT / package).rglob("*.py")
        if "/blobServices/default/containers/" in path.read_text()
    }
    assert writers == {"retrainer/events.py"}


def test_test_modules_share_helpers_not_each_other() -> None:
    offenders = {
        path.name
        for path in (ROOT / "tests").glob("test_*.py")
        if any(m.startswith("tests.test_") for m in imports_of(path))
    }
    assert offenders == set()


def test_only_the_event_contract_reads_event_payloads() -> None:
    """Events are parsed at the edge into commands: no other module reads `api`, `eTag` or `runId`."""
    readers = {
        path.relative_to(ROOT).as_posix()
        for package in ("retrainer", "pipeline_steps")
        for path in (ROOT / package).rglob("*.py")
        if any(key in path.read_text() for key in ('"eTag"', '"runId"', 'get("api")'))
    }
    assert readers == {"retrainer/events.py"}


def test_no_step_file_is_opened_by_a_literal_name_outside_its_contract() -> None:
    """Step files belong to pipeline_steps/contracts.py (and the promotion record to retrainer/promotion.py)."""
    names = ("data_assets.json", "model_metadata.json", "split_report.json", "holdout.json")
    users = {
        path.relative_to(ROOT).as_posix()
        for package in ("retrainer", "pipeline_steps", "devtools")
        for path in (ROOT / package).rglob("*.py")
        if any(f'"{name}"' in path.read_text() for name in names)
    }
    assert users == {"pipeline_steps/contracts.py"}


def test_no_step_reads_a_setting_from_the_environment() -> None:
    """Settings enter a step only as component inputs (flags); the environment is never a fallback."""
    readers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "pipeline_steps").rglob("*.py")
        if re.search(r"os\.environ(\.get|\[)|os\.getenv|\benv=", path.read_text())
    }
    assert readers == set()
