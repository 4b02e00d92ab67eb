"""Adding a step, as docs/pipeline.md's "Adding a step" says, proved on a copy of the project.

The fixture step (`tests/fixtures/recipe_step`: a step module, its component YAML and its test) goes into a
copy of the project and the graph gets its entry; `python -m devtools.launch_configurations` regenerates
`.vscode/launch.json`. Nothing else is edited, and yet: the Azure ML pipeline job (built offline, validated
with the SDK) and the local runner both wire it and the local runner's commands run it, the rehearsal runs
it, `retrain register-components` registers it, the step-environment check imports it, it has its launch
configuration, and the tests that hold every step to its contract (ports, defaults, bounds, import closure)
take it in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a copy of the project, the SDK in a fresh process, three steps and a pytest run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "recipe_step"
STEP = "class_report"
#: The recipe's new files, in the project, from the fixture.
ADDED = {
    f"pipeline_steps/{STEP}.py": "class_report.py",
    f"shared/components/{STEP}.yml": "class_report.yml",
    f"tests/test_{STEP}.py": "test_class_report.py",
}
GRAPH = "retrainer/assembly/graph.py"
#: The graph's entry for the step, after the split: it reads the training MLTable and takes one setting.
GRAPH_ENTRY = """\
    Step(
        "class_report",
        {"train_data_path": StepOutput("data_split", "train_output_path")},
        ("report_path",),
        settings=lambda settings: {"min_class_instances": settings.MIN_CLASS_INSTANCES},
    ),
"""
LAUNCH = ".vscode/launch.json"
COPIED = ("pipeline_steps", "retrainer", "shared", "devtools", "tests", "sample_artifacts", ".vscode", "pyproject.toml")

#: Run in the copy: what each list and each runner makes of the graph there.
PROBE = """
import json, sys
from pathlib import Path

from devtools.launch_configurations import configurations
from devtools.step_environment import STEP_MODULES
from devtools.step_rehearsal import rehearsal_commands, run_step, step_env
from retrainer.assembly import graph
from retrainer.assembly.pipeline import build_pipeline_job, validate_pipeline
from retrainer.settings import load_settings
from retrainer.workspace.local_runner import step_commands

run = Path(sys.argv[1])
settings = load_settings(
    AZURE_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000001",
    AZURE_RESOURCE_GROUP="rg",
    AZUREML_WORKSPACE_NAME="mlw",
    WORKSPACE_BACKEND="local",
    LOCAL_WORKSPACE_DIR=run / "workspace",
    PIPELINE_COMPONENTS="local",
)
job = build_pipeline_job(settings, run_label="recipe")
validate_pipeline(job)
jobs = job._to_dict()["jobs"]
commands = rehearsal_commands(run, settings)  # the sample sheets in the run's data/, as the runner downloads them
(run / "logs").mkdir()
ran = []
for step in graph.STEPS[: [s.name for s in graph.STEPS].index(sys.argv[2]) + 1]:
    run_step(step.name, commands[step.name], step_env(run / "workspace"), run / "logs")
    ran.append(step.name)
print(json.dumps({
    "steps": [step.name for step in graph.STEPS],
    "components": list(graph.COMPONENT_STEPS),
    "azure_ml": list(jobs),
    "azure_ml_node": jobs[sys.argv[2]],
    "local": step_commands(run, settings),
    "rehearsal": list(commands),
    "ran": ran,
    "step_modules": list(STEP_MODULES),
    "launch": [config["name"] for config in configurations()],
}, default=str))
"""


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def in_copy(copy: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(copy)), "PYTHONPATH": str(copy)}
    return subprocess.run([sys.executable, *arguments], cwd=copy, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    """A copy of the project with the step added by the recipe: (the copy, its files before, its files after)."""
    copy = tmp_path_factory.mktemp("recipe") / "project"
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, copy / name)
    before = snapshot(copy)
    for target, source in ADDED.items():
        shutil.copy2(FIXTURE / source, copy / target)
    graph = (copy / GRAPH).read_text()
    train_entry = "    Step(\n        TRAIN,\n"
    assert graph.count(train_entry) == 1, "the graph's training entry moved: update GRAPH_ENTRY's anchor"
    (copy / GRAPH).write_text(graph.replace(train_entry, GRAPH_ENTRY + train_entry))
    stale = in_copy(copy, "-m", "devtools.launch_configurations", "--check")
    assert stale.returncode == 1 and LAUNCH in stale.stderr, "the check finds the launch file stale"
    regenerated = in_copy(copy, "-m", "devtools.launch_configurations")
    assert regenerated.returncode == 0, regenerated.stderr
    return copy, before, snapshot(copy)


def test_the_recipe_touches_the_step_its_component_its_test_the_graph_and_the_generated_launch_file(
    recipe: tuple[Path, dict[str, bytes], dict[str, bytes]],
) -> None:
    _, before, after = recipe
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed == {*ADDED, GRAPH, LAUNCH}


def test_both_runners_every_list_and_the_rehearsal_take_the_new_step(
    recipe: tuple[Path, dict[str, bytes], dict[str, bytes]], tmp_path: Path
) -> None:
    copy, _, _ = recipe
    probed = in_copy(copy, "-c", PROBE, str(tmp_path / "run"), STEP)
    assert probed.returncode == 0, probed.stderr[-3000:]
    found = json.loads(probed.stdout.strip().splitlines()[-1])
    steps = found["steps"]
    assert steps.index("data_split") < steps.index(STEP) < steps.index("train"), "where the graph puts it"
    assert STEP in found["components"] and f"pipeline_steps.{STEP}" in found["step_modules"]
    assert found["azure_ml"] == steps, "the Azure ML job runs every step of the graph, in its order"
    node = found["azure_ml_node"]
    assert node["inputs"]["train_data_path"]["path"] == "${{parent.jobs.data_split.outputs.train_output_path}}"
    assert node["inputs"]["min_class_instances"] == 20, "its setting, from the graph's entry"
    assert node["component"]["name"] == f"pid_{STEP}"
    local = found["local"]
    assert list(local) == steps
    outputs = tmp_path / "run" / "outputs"
    assert local[STEP][1:3] == ["-m", f"pipeline_steps.{STEP}"]
    flags = dict(zip(local[STEP][3::2], local[STEP][4::2], strict=True))
    assert flags == {
        "--min_class_instances": "20",
        "--train_data_path": str(outputs / "data_split" / "train_output_path"),
        "--report_path": str(outputs / STEP / "report_path"),
    }
    assert found["rehearsal"] == steps and found["ran"][-1] == STEP
    report = json.loads((outputs / STEP / "report_path" / "class_report.json").read_text())
    assert report["boxes_per_class"] and set(report["rare"]) <= set(report["boxes_per_class"])
    assert "Python: Pipeline Step - Class Report" in found["launch"]


def test_the_tests_of_every_steps_contract_take_in_the_new_step(
    recipe: tuple[Path, dict[str, bytes], dict[str, bytes]],
) -> None:
    copy, _, _ = recipe
    modules = ["test_components", "test_step_defaults", "test_step_closure", "test_launch_configurations"]
    tested = in_copy(
        copy,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        "-k",
        f"{STEP} or launch_json_is_what_the_graph_renders",
        "-v",
        f"tests/test_{STEP}.py",
        *(f"tests/{module}.py" for module in modules),
    )
    assert tested.returncode == 0, tested.stdout[-3000:]
    passed = [line for line in tested.stdout.splitlines() if " PASSED" in line]
    assert any(f"test_{STEP}.py::" in line for line in passed), "the step's own test ran"
    for module in modules[:3]:
        assert any(f"{module}.py::" in line and f"[{STEP}" in line for line in passed), f"{module} skipped it"
    assert any("test_launch_json_is_what_the_graph_renders PASSED" in line for line in passed)
