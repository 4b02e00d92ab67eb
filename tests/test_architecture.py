"""The house rules that keep the tree livable, checked on the import statements themselves.

Three packages, and the line between them runs one way: `shared` (what the function app and the pipeline
steps both need: records, the promotion rule, the registry, the settings a step reads, the contracts and the
components) imports nothing of the others; `pipeline_steps` (the jobs) and `retrainer` (the function app,
with the pipeline it assembles) import `shared` and never each other (the local runner starts a step by its
module name, in a process of its own: no import).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Every tree of the project's own modules (tests aside): an import between two of them is an edge.
PROJECT = ("function_app.py", "retrainer", "pipeline_steps", "shared", "devtools", "bench")
#: What the function app ships and the components run: the project's packages, tools and tests aside.
SHIPPED = ("retrainer", "pipeline_steps", "shared")


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


#: The service's adapters and command lines: the only modules that may import the composition root or triggers.
ADAPTERS = ("retrainer.triggers", "retrainer.cli")


def shipped_modules() -> dict[str, set[str]]:
    return {name: imported for package in SHIPPED for name, imported in modules(package).items()}


def test_nothing_that_ships_imports_devtools() -> None:
    shipped = shipped_modules()
    offenders = {name for name, imported in shipped.items() if any(m.split(".")[0] == "devtools" for m in imported)}
    assert offenders == set()


def test_only_adapters_import_the_composition_root() -> None:
    shipped = shipped_modules()
    offenders = {
        name
        for name, imported in shipped.items()
        if "retrainer.bootstrap" in imported and not name.startswith(ADAPTERS) and name != "retrainer.bootstrap"
    }
    assert offenders == set()


def test_the_core_does_not_import_triggers() -> None:
    core = {name: imported for name, imported in modules("retrainer").items() if not name.startswith(ADAPTERS)}
    offenders = {
        name
        for name, imported in core.items()
        if any(m.startswith(("retrainer.triggers", "function_app")) for m in imported)
    }
    assert offenders == set()


def test_the_subject_format_lives_only_in_the_events_module() -> None:
    writers = {
        path.relative_to(ROOT).as_posix()
        for package in (*SHIPPED, "devtools")
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
        for package in SHIPPED
        for path in (ROOT / package).rglob("*.py")
        if any(key in path.read_text() for key in ('"eTag"', '"runId"', 'get("api")'))
    }
    assert readers == {"retrainer/events.py"}


def test_no_step_file_is_opened_by_a_literal_name_outside_its_contract() -> None:
    """Step files belong to shared/contracts.py (and the promotion record to shared/promotion.py)."""
    names = ("data_assets.json", "model_metadata.json", "split_report.json", "holdout.json")
    users = {
        path.relative_to(ROOT).as_posix()
        for package in (*SHIPPED, "devtools")
        for path in (ROOT / package).rglob("*.py")
        if any(f'"{name}"' in path.read_text() for name in names)
    }
    assert users == {"shared/contracts.py"}


def test_no_step_reads_a_setting_from_the_environment() -> None:
    """Settings enter a step only as component inputs (flags); the environment is never a fallback. (A step may
    pass a child process its library path: that is plumbing, not a setting.)"""
    from retrainer.settings import Settings

    settings = set(Settings.model_fields)
    read = re.compile(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["'](\w+)["']""")
    step_code = [path for package in ("pipeline_steps", "shared") for path in (ROOT / package).rglob("*.py")]
    readers = {
        f"{path.relative_to(ROOT).as_posix()}: {name}"
        for path in step_code
        for name in read.findall(path.read_text())
        if name in settings
    }
    assert readers == set()
    assert not [p for p in step_code if "environ.update(" in p.read_text()]


# --- the import graph: no cycle, and no edge back up ---------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for tree in PROJECT:
        top = ROOT / tree
        for path in [top] if top.is_file() else sorted(top.rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported_names(name: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports, at any depth (inside functions too), relative imports resolved:
    `from a.b import c` names `a.b.c`, which is the module `a.b.c` when there is one and `a.b` otherwise."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            yield from (f"{base}.{alias.name}" for alias in node.names)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (each name resolved to the deepest module it names)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in imported_names(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_projects_modules_import_each_other_without_a_cycle() -> None:
    """Lazy imports count: a cycle closed inside a function still makes the modules one knot."""
    graph = import_graph()
    knots = [
        ", ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a] & set(component)))
        for component in cycles(graph)
    ]
    assert not knots, "import cycles:\n" + "\n".join(knots)


def test_the_cycle_finder_finds_each_knot_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_an_import_inside_a_function_is_an_edge(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text(
        "def runner():\n    from retrainer.workspace import azureml\n    import pipeline_steps.tag_model\n"
    )
    assert set(imported_names("retrainer.lazy", module)) == {"retrainer.workspace.azureml", "pipeline_steps.tag_model"}


#: The package line: which of the project's packages each may import, besides itself. Tools (devtools, bench)
#: and tests may import anything.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "pipeline_steps": frozenset({"shared"}),
    "retrainer": frozenset({"shared"}),
    "function_app": frozenset({"retrainer"}),
}


def line_crossings(graph: dict[str, set[str]]) -> set[str]:
    return {
        f"{name} -> {imported}"
        for name, edges in graph.items()
        if (home := name.split(".")[0]) in MAY_IMPORT
        for imported in edges
        if (other := imported.split(".")[0]) != home and other not in MAY_IMPORT[home]
    }


def test_the_package_line_runs_one_way() -> None:
    """Every import, lazy ones included: shared imports neither side, and the two sides never import each other."""
    graph = import_graph()
    assert {name.split(".")[0] for name in graph} >= set(MAY_IMPORT), "the check sees every package"
    assert line_crossings(graph) == set()


def test_the_line_check_finds_an_import_across_and_allows_one_down() -> None:
    graph = {
        "retrainer.workspace.local_runner": {"pipeline_steps.train", "shared.records"},
        "pipeline_steps.tag_model": {"shared.registry", "retrainer.settings"},
        "shared.registry": {"shared.records", "devtools.demo"},
        "devtools.demo": {"retrainer.cli", "pipeline_steps.train"},
    }
    assert line_crossings(graph) == {
        "retrainer.workspace.local_runner -> pipeline_steps.train",
        "pipeline_steps.tag_model -> retrainer.settings",
        "shared.registry -> devtools.demo",
    }


def test_no_module_imports_the_package_above_it() -> None:
    """A package's `__init__` may reach into its modules (the factories do, lazily); its modules never import
    it back: what they share lives in a module below both."""
    graph = import_graph()
    back_edges = {
        f"{name} -> {imported}"
        for name, edges in graph.items()
        if name.startswith(("retrainer.", "shared."))
        for imported in edges
        if name.startswith(imported + ".")
    }
    assert back_edges == set()


def test_the_workspace_backends_never_import_the_ingestion() -> None:
    """What a runner needs from the label map is handed to it by the composition root."""
    offenders = {
        f"{name} -> {imported}"
        for name, edges in import_graph().items()
        if name.startswith(("retrainer.workspace", "retrainer.assembly"))
        for imported in edges
        if imported.startswith("retrainer.ingestion")
    }
    assert offenders == set()


#: The floors of `retrainer/`, top first: a module imports from its own floor or the floors below it. A module
#: is placed by its longest listed prefix; a new module is placed here by whoever adds it.
RETRAINER_FLOORS: tuple[tuple[str, ...], ...] = (
    ("retrainer.triggers", "retrainer.cli", "retrainer.ingestion.loader"),  # adapters and command lines
    ("retrainer.bootstrap",),  # the composition root
    (  # the service and what it reads for people
        "retrainer.retraining",
        "retrainer.champion",
        "retrainer.serving",
        "retrainer.submission",
        "retrainer.status_view",
        "retrainer.status_page",
        "retrainer.ingestion",
        "retrainer.ledger_migration",
    ),
    ("retrainer.workspace", "retrainer.serving.local", "retrainer.serving.azureml"),  # the backends
    ("retrainer.assembly",),  # the pipeline the runners build: its graph, its step inputs, the Azure ML job
    (  # storage and the outside world
        "retrainer.ledger",
        "retrainer.datastore",
        "retrainer.champion.record",
        "retrainer.serving.status",
        "retrainer.publisher",
        "retrainer.telemetry",
    ),
    (  # the service's pure rules (the domain records and rules it shares with the steps are in `shared`)
        "retrainer.serving.rollout",
        "retrainer.serving.endpoint",
        "retrainer.serving.contract",
        "retrainer.events",
        "retrainer.policy",
        "retrainer.images",
    ),
    ("retrainer", "retrainer.settings", "retrainer.redact", "retrainer.logs"),
)


def floor_of(module: str) -> int:
    placed = [
        (len(prefix), floor)
        for floor, prefixes in enumerate(RETRAINER_FLOORS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert placed, f"{module} has no floor in RETRAINER_FLOORS: place it"
    return max(placed)[1]


def test_every_import_inside_retrainer_goes_down_or_along_a_floor() -> None:
    graph = import_graph()
    upward = {
        f"{name} (floor {floor_of(name)}) -> {imported} (floor {floor_of(imported)})"
        for name, edges in graph.items()
        if name.startswith("retrainer")
        for imported in edges
        if imported.startswith("retrainer") and floor_of(imported) < floor_of(name)
    }
    assert upward == set()


# --- what a step runs: step code and shared code, never the service ----------------------------------------

#: The training step on the local backend (Azure ML trains with the AutoML node, which is no module of ours).
LOCAL_TRAINER = "pipeline_steps.train"


def step_entry_modules() -> set[str]:
    """The module each component runs (`python -m <module>` in its `command`), and the local trainer."""
    import yaml

    entries = {LOCAL_TRAINER}
    for path in sorted((ROOT / "shared" / "components").glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        command = document.get("command") if isinstance(document, dict) else None
        if command:
            entries.update(re.findall(r"python -m ([\w.]+)", command))
    return entries


def reached_from(entry: str) -> set[str]:
    """The project modules `entry` runs: itself and what it imports, directly or through others (lazy imports
    too)."""
    graph = import_graph()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def test_every_component_and_the_local_trainer_are_found() -> None:
    """Every step of the graph, or the test below checks less than the pipeline runs."""
    from retrainer.assembly.graph import COMPONENT_STEPS

    entries = step_entry_modules()
    assert {f"pipeline_steps.{step}" for step in COMPONENT_STEPS} | {LOCAL_TRAINER} <= entries
    assert entries <= set(project_modules()), "a component runs a module that is not in the tree"


def test_a_step_runs_step_code_and_shared_code_only() -> None:
    """A step never reaches the service: not its settings (a step reads where the registry is from
    `shared.settings.RegistryLocation`, six variables, and its behaviour from its component inputs), and nothing
    the component snapshot leaves out (.amlignore: retrainer/, devtools/)."""
    outside = {
        f"{entry} reaches {name}"
        for entry in sorted(step_entry_modules())
        for name in reached_from(entry)
        if name.split(".")[0] not in ("pipeline_steps", "shared")
    }
    assert outside == set()
    assert "shared.registry.azureml" in reached_from("pipeline_steps.tag_model"), "the closure follows lazy imports"


def test_no_shipped_module_imports_a_private_module_of_the_azure_ml_sdk() -> None:
    """`azure-ai-ml` is not pinned in the function app's requirements: only its public API is used (`_`-prefixed
    modules move between releases), as `azure.ai.ml.automl` exports the AutoML job and search-space classes."""
    shipped = {
        **shipped_modules(),
        "function_app": imports_of(ROOT / "function_app.py"),
    }
    offenders = {
        name: sorted(
            m for m in imported if m.startswith("azure.ai.ml") and any(p.startswith("_") for p in m.split("."))
        )
        for name, imported in shipped.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


# --- size: a module past 500 lines holds more than one thing -----------------------------------------------------

#: What the project ships and runs (tests and bench aside).
PRODUCT = ("function_app.py", *SHIPPED, "devtools", "inference")
MAX_PRODUCT_LINES = 500


def product_files() -> list[Path]:
    found = []
    for tree in PRODUCT:
        top = ROOT / tree
        found += [top] if top.is_file() else sorted(top.rglob("*.py"))
    return found


def test_no_product_file_is_over_500_lines() -> None:
    """Split by what belongs together (one aggregate, one step's core apart from its CLI), not by cutting."""
    files = product_files()
    assert len(files) > 50 and ROOT / "function_app.py" in files, "the size check sees the product"
    oversized = {
        path.relative_to(ROOT).as_posix(): lines
        for path in files
        if (lines := len(path.read_text().splitlines())) > MAX_PRODUCT_LINES
    }
    assert oversized == {}, f"over {MAX_PRODUCT_LINES} lines: {oversized}"
