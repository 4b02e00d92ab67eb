"""The VS Code launch configurations (`.vscode/launch.json`), generated from the pipeline's graph.

    python -m devtools.launch_configurations           # rewrite .vscode/launch.json
    python -m devtools.launch_configurations --check   # exit 1 when it differs from what the graph gives

One configuration per step of `graph.STEPS`, in order, with the local runner's own wiring
(`local_runner.step_folders`) over the checked-in sample sheets (`sample_artifacts/data`, laid out as a
local run's `data/`), each step writing under `.workspace/launch/<step>/`: run one after the other, they
take the sample sheets to a tagged model in the local registry under `.workspace`. Settings are each
step's defaults (its component's). Before them, the data loader's. Names are the design document's,
`Python: Pipeline Step - <title>`, a step's title being its name in words unless `TITLES` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from retrainer.assembly.graph import STEPS, TRAIN
from retrainer.assembly.step_inputs import as_flags
from retrainer.workspace.local_runner import data_inputs, step_folders

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = PROJECT_ROOT / ".vscode" / "launch.json"
SAMPLE_DATA = PROJECT_ROOT / "sample_artifacts" / "data"
OUTPUTS = PROJECT_ROOT / ".workspace" / "launch"
#: Where the design document names a step otherwise than its name in words.
TITLES = {"register_data_asset": "Registering Data Asset", TRAIN: "Train (local CPU)"}
#: What a launch gives a step beyond its folders: the local trainer a two-minute budget and the class names.
EXTRA_INPUTS: dict[str, dict[str, object]] = {TRAIN: {"max_minutes": 2, "label_map": SAMPLE_DATA / "label_map.json"}}
#: The steps open the registry in the local workspace.
STEP_ENV = {"WORKSPACE_BACKEND": "local", "LOCAL_WORKSPACE_DIR": ".workspace"}

LOADER = {
    "name": "Python: Unzip & Upload local files",
    "type": "debugpy",
    "request": "launch",
    "module": "retrainer.ingestion.loader",
    "args": ["--raw-blob-sas-url", "sample_artifacts/sample_set.zip", "--raw-input-path", ".workspace/downloads"],
    "env": {
        "STORAGE_ACCOUNT_CONNECTION_STRING": "UseDevelopmentStorage=true",
        "STORAGE_ACCOUNT_CONTAINER_NAME": "data",
    },
    "console": "integratedTerminal",
}


def step_title(step: str) -> str:
    return TITLES.get(step, step.replace("_", " ").title())


def configuration_name(step: str) -> str:
    return f"Python: Pipeline Step - {step_title(step)}"


def configurations() -> list[dict[str, Any]]:
    """The loader's configuration, then each step's in the graph's order."""
    wiring = step_folders(data_inputs(SAMPLE_DATA), OUTPUTS)
    steps = []
    for step in STEPS:
        inputs = {**wiring[step.name], **EXTRA_INPUTS.get(step.name, {})}
        relative = {name: _relative(value) for name, value in inputs.items()}
        steps.append(
            {
                "name": configuration_name(step.name),
                "type": "debugpy",
                "request": "launch",
                "module": f"pipeline_steps.{step.name}",
                "args": as_flags(relative),
                "env": STEP_ENV,
                "console": "integratedTerminal",
            }
        )
    return [LOADER, *steps]


def render() -> str:
    return json.dumps({"version": "0.2.0", "configurations": configurations()}, indent=2) + "\n"


def _relative(value: object) -> object:
    """A path under the project as VS Code runs it (from the workspace folder); anything else as it is."""
    return value.relative_to(PROJECT_ROOT).as_posix() if isinstance(value, Path) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when launch.json differs from the graph's")
    args = parser.parse_args(argv)
    rendered = render()
    current = LAUNCH_FILE.read_text() if LAUNCH_FILE.is_file() else ""
    if args.check:
        if current != rendered:
            print(f"{LAUNCH_FILE.relative_to(PROJECT_ROOT)} differs from the graph's steps", file=sys.stderr)
            return 1
        return 0
    if current != rendered:
        LAUNCH_FILE.parent.mkdir(exist_ok=True)
        LAUNCH_FILE.write_text(rendered)
        print(f"rewrote {LAUNCH_FILE.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
