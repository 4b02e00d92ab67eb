"""README, the docs and the configuration reference: generated from the settings, short, each page opening with
what it answers, and every link between them landing on a page and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings

from devtools import config_table
from devtools.config_table import TABLES, GeneratedTable, render_row, render_table, variables
from retrainer.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: What a user reads besides the README: past it, say a thing once and link, or cut the story of how it came to be.
DOCS_LIMIT = 70_000
#: The opening paragraph says what the page answers, in a sentence or two.
OPENING_LIMIT = 400


@pytest.mark.parametrize("table", TABLES, ids=lambda table: str(table.path))
def test_the_configuration_tables_are_what_the_settings_render(table: GeneratedTable) -> None:
    held = table.current((ROOT / table.path).read_text())
    assert held == table.render(), f"{table.path} is stale: run `python -m devtools.config_table`"


def test_the_full_table_has_a_row_for_every_setting_under_the_names_users_set() -> None:
    rows = render_table().splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for (name, field), row in zip(Settings.model_fields.items(), rows, strict=True):
        assert row.startswith("| " + " or ".join(f"`{variable}`" for variable in variables(name, field)) + " |")
    table = render_table()
    for variable in (
        "DATASTORE__blobServiceUri",
        "DATASTORE",
        "AZUREML_ARM_SUBSCRIPTION",
        "AZUREML_ARM_WORKSPACE_NAME",
    ):
        assert f"`{variable}`" in table
    assert "`DATASTORE_BLOB_SERVICE_URI`" not in table, "a field read from an alias shows the alias"


def test_every_setting_tells_users_what_it_does() -> None:
    terse = [name for name, field in Settings.model_fields.items() if len((field.description or "").split()) < 4]
    assert terse == [], "give these fields a description= a user can act on (retrainer/settings/)"


def test_a_row_shows_default_and_secrecy_and_survives_markdown() -> None:
    class Sample(BaseSettings):
        KEY: SecretStr | None = Field(default=None, description="Key of <the> topic, a|b; `x<y` stays.")
        RATE: float = Field(default=15.0, description="Minutes to wait.")
        ON: bool = Field(default=True, validation_alias=AliasChoices("ON", "LEGACY_ON"), description="Whether on.")

    key, rate, on = (render_row(name, field) for name, field in Sample.model_fields.items())
    assert key == (
        "| `KEY` | unset | Key of \\<the> topic, a\\|b; `x<y` stays. "
        "A secret: shown as `**********` wherever the settings are printed or logged. |"
    )
    assert rate == "| `RATE` | `15` | Minutes to wait. |"
    assert on == "| `ON` or `LEGACY_ON` | `true` | Whether on. |"


def test_a_document_without_its_markers_is_named() -> None:
    table = GeneratedTable(Path("docs/elsewhere.md"), "all", None)
    with pytest.raises(config_table.TableError, match=re.escape("docs/elsewhere.md: no '<!-- config-table:all")):
        table.rewrite("# no table here\n")


def test_readme_opens_with_the_two_commands_and_what_the_service_does() -> None:
    text = README.read_text()
    title, blank, fence, demo, test, close = text.splitlines()[:6]
    assert title.startswith("# ") and blank == "" and fence == "```bash" and close == "```"
    assert demo.startswith("make demo ") and test.startswith("make test ")
    opening = text.split("\n## ", 1)[0]
    what_it_does = opening.split("\n```\n", 1)[1].strip().split("\n\n")[0]
    assert "Azure Functions" in what_it_does and "make" not in what_it_does, "what it does, before how to run it"
    assert "[figures](docs/benchmarks.md)" in opening
    assert not re.search(r"\b(Xeon|EPYC|Zen|Intel|AMD)\b", opening), "no CPU in the opening: figures live in benchmarks"


def test_readme_stays_short() -> None:
    assert len(README.read_bytes()) <= 10_000, (
        "README says what the service does and how to start; the rest is in docs/"
    )


def test_readme_names_every_command_ci_runs_and_every_environment_setup_creates() -> None:
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_line = " ".join(line for line in text.split("\n\n") if line.startswith("CI (`.ci/run`)"))
    for target in re.findall(r"^make ([\w-]+)", ci, flags=re.MULTILINE):
        assert f"`make {target}`" in ci_line, target
    makefile = (ROOT / "Makefile").read_text()
    (venv,) = re.findall(r"^VENV := (\S+)$", makefile, flags=re.MULTILINE)
    folders = {folder.replace("$(VENV)", venv) for folder in re.findall(r"(\S+)/\.installed$", makefile, flags=re.M)}
    (setup_row,) = [line for line in text.splitlines() if line.startswith("| `make setup` |")]
    assert len(folders) == 4
    for folder in sorted(folders):
        assert f"`{folder}/`" in setup_row, folder


def test_the_docs_stay_short() -> None:
    sizes = {page.name: len(page.read_bytes()) for page in DOCS}
    assert sum(sizes.values()) <= DOCS_LIMIT, (
        f"docs/*.md hold {sum(sizes.values()):,} bytes, over {DOCS_LIMIT:,} ({sizes}): say each thing once and link, "
        "figures in docs/benchmarks.md, history only in its dated list"
    )


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_each_page_opens_with_what_it_answers(page: Path) -> None:
    title, _, body = page.read_text().partition("\n")
    opening = body.lstrip("\n").split("\n\n", 1)[0]
    assert title.startswith("# "), f"{page.name}: a page starts with its title"
    assert opening and not opening.startswith(("#", "```", "|", "- ", "1. ", "<!--")), (
        f"{page.name}: after the title, a sentence or two saying what questions the page answers"
    )
    assert len(opening) <= OPENING_LIMIT, (
        f"{page.name}: an opening of {len(opening)} characters; say it in two sentences"
    )


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_links_between_pages_land(page: Path) -> None:
    text = page.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        lands = linked.exists() and not (
            anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text())
        )
        if not lands:
            broken.append(target)
    assert broken == [], f"{page.name}: links to no page or heading: {broken}"
