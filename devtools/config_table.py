"""The configuration tables of the docs, rendered from the settings' own fields, so they cannot drift.

    python -m devtools.config_table           # rewrite each table between its marker comments
    python -m devtools.config_table --check   # exit 1, naming the file, when a table differs
    python -m devtools.config_table --print   # the full table on stdout

One row per field of `retrainer.settings.Settings`: the environment variables a user sets (aliases
included, as the user spells them), the default, and the field's `description=`. `docs/configuration.md`
holds every field; README.md holds the datastore connection, the one thing a user must set. To change
a row, change the field in its group (`retrainer/settings/`, or `shared/settings/` for the groups a pipeline
step reads too) and run this.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from retrainer.settings import Settings
from shared.settings import bound_of

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The datastore connection: a connection string or the keyless endpoints (README's table).
CONNECTION_FIELDS = (
    "STORAGE_ACCOUNT_CONNECTION_STRING",
    "DATASTORE_BLOB_SERVICE_URI",
    "DATASTORE_QUEUE_SERVICE_URI",
    "DATASTORE_TABLE_SERVICE_URI",
    "DATASTORE_CLIENT_ID",
)

_HEADER = "| variable | default | meaning |\n|---|---|---|"
_END = "<!-- /config-table -->"


class TableError(RuntimeError):
    """A document has no markers for its table, or names a field the settings do not have."""


@dataclass(frozen=True)
class GeneratedTable:
    """A table kept between `<!-- config-table:NAME -->` and `<!-- /config-table -->` in `path`."""

    path: Path
    name: str
    fields: tuple[str, ...] | None  # None: every field

    @property
    def start(self) -> str:
        source = "edit shared/settings/ or retrainer/settings/"
        return f"<!-- config-table:{self.name} (python -m devtools.config_table; {source}) -->"

    def render(self) -> str:
        return render_table(self.fields)

    def current(self, text: str) -> str:
        """The table as the document holds it now."""
        begin, finish = self._span(text)
        return text[begin:finish].strip("\n")

    def rewrite(self, text: str) -> str:
        begin, finish = self._span(text)
        return text[:begin] + "\n" + self.render() + "\n" + text[finish:]

    def _span(self, text: str) -> tuple[int, int]:
        begin = text.find(self.start)
        finish = text.find(_END, begin)
        if begin < 0 or finish < 0:
            raise TableError(f"{self.path}: no '{self.start}' ... '{_END}' markers for the {self.name} table")
        return begin + len(self.start), finish


TABLES = (
    GeneratedTable(Path("README.md"), "connection", CONNECTION_FIELDS),
    GeneratedTable(Path("docs/configuration.md"), "all", None),
)


def variables(name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set a field, in the spelling the user types."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [name]


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def meaning(name: str, field: FieldInfo) -> str:
    text = " ".join((field.description or "").split())
    if not text:
        raise TableError(
            f"Settings.{name} has no description= (retrainer/settings/, shared/settings/): the table has nothing to say"
        )
    if is_secret(field):
        text += " A secret: shown as `**********` wherever the settings are printed or logged."
    if field.annotation in (int, float) and any(not isinstance(m, type) for m in field.metadata):
        text += f" Must be {bound_of(Settings, name).describe()}."
    return text


def markdown_cell(text: str) -> str:
    """`text` safe in a table cell: pipes escaped, and angle brackets outside code spans, which would
    otherwise read as HTML tags and vanish (`https://<account>.blob...`)."""
    parts = text.replace("|", "\\|").split("`")  # odd parts are inside code spans
    return "`".join(part if index % 2 else part.replace("<", "\\<") for index, part in enumerate(parts))


def render_row(name: str, field: FieldInfo) -> str:
    names = " or ".join(f"`{variable}`" for variable in variables(name, field))
    cells = (names, default_text(field), meaning(name, field))
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"


def render_table(names: Iterable[str] | None = None) -> str:
    """The Markdown table of `names` (every field when None), in the order the settings declare them."""
    fields = Settings.model_fields
    chosen = list(fields) if names is None else list(names)
    unknown = [name for name in chosen if name not in fields]
    if unknown:
        raise TableError(f"not fields of retrainer.settings.Settings: {', '.join(unknown)} (devtools/config_table.py)")
    return "\n".join([_HEADER, *(render_row(name, fields[name]) for name in chosen)])


def stale_tables(root: Path = PROJECT_ROOT) -> list[GeneratedTable]:
    """The tables whose document differs from what the settings render."""
    return [table for table in TABLES if table.current((root / table.path).read_text()) != table.render()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when a table differs from the settings")
    mode.add_argument("--print", action="store_true", help="print the full table")
    args = parser.parse_args(argv)
    if args.print:
        print(render_table())
        return 0
    if args.check:
        stale = stale_tables()
        for table in stale:
            print(f"{table.path}: the {table.name} table differs from the settings", file=sys.stderr)
        return 1 if stale else 0
    texts = {table: (PROJECT_ROOT / table.path).read_text() for table in TABLES}
    updates = {table: table.rewrite(text) for table, text in texts.items()}  # every file's markers, first
    for table, updated in updates.items():
        if updated != texts[table]:
            (PROJECT_ROOT / table.path).write_text(updated)
            print(f"rewrote the {table.name} table in {table.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
