"""Every component's import closure is provided by the steps' pinned environment.

A component runs `python -m pipeline_steps.<step>`; from that module every import is followed
through the steps' own code (`pipeline_steps` and `shared`, what the component snapshot holds), also
those inside functions (a lazy import runs on Azure ML as surely as a top-level one), and each
third-party module it reaches must come from a distribution pinned in `shared/components/conda.yml`.
An import under `if TYPE_CHECKING:` never runs and is skipped.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from devtools.step_environment import pip_list
from retrainer.assembly.graph import COMPONENT_STEPS
from shared import COMPONENTS

ROOT = Path(__file__).resolve().parent.parent
#: The steps' code: what the component snapshot uploads and a step may import (tests/test_architecture.py).
STEP_PACKAGES = ("pipeline_steps", "shared")


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def module_file(module: str) -> Path | None:
    """The source file of a project module (its __init__.py for a package), or None when it is not one."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runs(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """False for an import that sits under `if TYPE_CHECKING:`."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return False
    return True


def imported_names(path: Path, module: str) -> set[str]:
    """Every module an executable import statement in the file names, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and _runs(node, parents):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and _runs(node, parents):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "__future__":
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from package import submodule`
    return names


def import_closure(entry: str) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level modules) reached from `entry`."""
    project: set[str] = set()
    third_party: set[str] = set()
    pending = [entry]
    while pending:
        module = pending.pop()
        if module in project:
            continue
        top = module.split(".")[0]
        if top not in STEP_PACKAGES:
            if top not in sys.stdlib_module_names:
                third_party.add(top)
            continue
        path = module_file(module)
        if path is None:
            continue  # `from package import name` where name is not a module
        project.add(module)
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # a package's __init__ runs first
        pending.extend(imported_names(path, module))
    return project, third_party


def component_entry_points() -> dict[str, str]:
    entries = {}
    for component in sorted(COMPONENTS.glob("*.yml")):
        document = yaml.safe_load(component.read_text())
        if document.get("type") != "command":
            continue
        match = re.search(r"python -m ([\w.]+)", document["command"])
        assert match, f"{component.name}: the command runs no module"
        entries[component.stem] = match.group(1)
    return entries


def environment_conda_file(component: str) -> Path:
    """The conda file of the environment the component runs on: the environment's `conda_file`, or the one its
    Dockerfile builds into the image (the tag step's: AutoML's image with the steps' environment beside it)."""
    name = str(yaml.safe_load((COMPONENTS / f"{component}.yml").read_text())["environment"])
    name = name.removeprefix("azureml:").rsplit(":", 1)[0]
    (definition,) = [
        d for f in COMPONENTS.glob("*environment*.yml") if (d := yaml.safe_load(f.read_text()))["name"] == name
    ]
    if "conda_file" in definition:
        return COMPONENTS / definition["conda_file"]
    dockerfile = (COMPONENTS / definition["build"]["path"] / definition["build"]["dockerfile_path"]).read_text()
    (copied,) = re.findall(r"^COPY (\S+\.yml) (\S+)$", dockerfile, flags=re.M)
    assert re.search(rf"conda env create -p (\S+) -f {re.escape(copied[1])}", dockerfile), "the copy is built"
    return COMPONENTS / definition["build"]["path"] / copied[0]


def locked_distributions(conda_file: Path | None = None) -> set[str]:
    return {_normalise(line.split("==")[0]) for line in (pip_list(conda_file) if conda_file else pip_list())}


@functools.cache
def _installed_providers() -> Mapping[str, list[str]]:
    """Which installed distributions provide each top-level module (reading every distribution's file list takes
    most of a second, so once)."""
    return importlib.metadata.packages_distributions()


def providers(top_level: str) -> set[str]:
    return {_normalise(d) for d in _installed_providers().get(top_level, [])}


def missing_from_lock(entry: str, conda_file: Path | None = None) -> dict[str, set[str]]:
    """Third-party modules the entry reaches that no locked distribution provides, with who provides them here."""
    _, third_party = import_closure(entry)
    locked = locked_distributions(conda_file)
    return {name: providers(name) for name in sorted(third_party) if not providers(name) & locked}


def test_every_command_component_is_found() -> None:
    assert component_entry_points() == {step: f"pipeline_steps.{step}" for step in COMPONENT_STEPS}


@pytest.mark.parametrize("component", sorted(component_entry_points()))
def test_the_step_environment_provides_every_module_the_component_can_import(component: str) -> None:
    entry = component_entry_points()[component]
    conda_file = environment_conda_file(component)
    assert missing_from_lock(entry, conda_file) == {}, f"{component} ({entry}) imports modules its environment lacks"


def test_the_tag_steps_image_is_automls_own_with_the_steps_pins_beside_it() -> None:
    """AutoML's models score in AutoML's interpreter, in AutoML's pinned training image; the step itself runs on the
    steps' pinned environment, built into that image once per release. Nothing is resolved at run time."""
    from azure.ai.ml import load_component, load_environment

    assert environment_conda_file("tag_model") == COMPONENTS / "conda.yml"
    environment = load_environment(COMPONENTS / "scoring_environment.yml")
    build = environment.build
    assert build is not None and build.path is not None and build.dockerfile_path is not None
    dockerfile = (Path(environment.base_path, build.path, build.dockerfile_path)).read_text()
    (base,) = re.findall(r"^FROM (\S+)$", dockerfile, flags=re.M)
    image, tag = base.rsplit(":", 1)
    assert image == "mcr.microsoft.com/azureml/curated/ai-ml-automl-dnn-vision-gpu" and tag.isdigit(), "a release"
    (automl_env,) = re.findall(r"^ENV AUTOML_ENVIRONMENT_PATH=(\S+)$", dockerfile, flags=re.M)
    component = load_component(COMPONENTS / "tag_model.yml")
    assert component.inputs["automl_python"].default == f"{automl_env}/bin/python"
    assert component.inputs["scoring_env_manager"].default == "automl"
    (steps_env,) = re.findall(r"conda env create -p (\S+) ", dockerfile)
    assert re.search(rf"^ENV PATH={re.escape(steps_env)}/bin:\$PATH$", dockerfile, flags=re.M), "the step's python"
    assert "conda" not in "".join(str(p.enum) for p in component.inputs.values() if getattr(p, "enum", None))


def test_the_closure_follows_imports_inside_functions_into_the_detector(tmp_path: Path) -> None:
    """The check must see what it was written for: torch reached through a lazy import, as the tag step once did."""
    _, third_party = import_closure("pipeline_steps.train")
    assert "torch" in third_party
    assert "torch" in missing_from_lock("pipeline_steps.train")
    project, third_party = import_closure("pipeline_steps.tag_model")
    assert "pipeline_steps.evaluation.scoring" in project
    assert {"shared.registry.azureml", "shared.champion.swap"} <= project, "shared is the steps' code too"
    assert "azure" in third_party, "the registry's Azure ML backend, reached lazily through shared.registry"
    assert not any(m.startswith("pipeline_steps.detector") for m in project), "the tag step must not reach the detector"


def test_imports_inside_functions_and_type_checking_blocks_are_told_apart(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def later():\n    import mlflow.models\n    from PIL import Image\n"
    )
    names = imported_names(source, "pipeline_steps.sample")
    assert {"mlflow.models", "PIL", "PIL.Image"} <= names
    assert "torch" not in names


def test_the_automl_rehearsal_runs_the_release_of_automl_the_image_pins() -> None:
    """`make automl-rehearsal` saves and scores models with the AutoML release of the tag step's image, on its Python,
    and its model script imports nothing of this project (it runs in AutoML's interpreter)."""
    dockerfile = (COMPONENTS / "scoring.Dockerfile").read_text()
    (python, automl) = re.findall(r"Python (3\.\d+), azureml-automl-dnn-vision (\S+),", dockerfile)[0]
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "devtools" / "automl_environment.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["azureml-automl-dnn-vision"] == automl
    script = ROOT / "devtools" / "automl_model.py"
    major, minor = (int(part) for part in python.split("."))
    tree = ast.parse(script.read_text(), feature_version=(major, minor))
    imported = {name.split(".")[0] for name in imported_names(script, "devtools.automl_model")}
    assert not imported & {"pipeline_steps", "shared", "retrainer", "devtools"}, (
        "it runs outside this project's environment"
    )
    assert tree.body
    assert "PYTHON310 ?=" in (ROOT / "Makefile").read_text() and python == "3.10"
