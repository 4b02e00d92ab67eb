"""What `func azure functionapp publish` uploads: the files `.funcignore` accepts, as Core Tools decides.

    python -m devtools.function_package [--zip app.zip]

Core Tools does not follow git's rules: it reimplements codemix/gitignore-parser. A path is left out
when it matches any plain line and no `!` line (a `!` line wins whatever its position), each line
being a prefix match up to a word boundary. `.funcignore` is therefore written additively: `*` and
`.*` leave everything out, and `!` lines name exactly what the function app runs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Folders and files Core Tools never uploads, whatever `.funcignore` says.
_ALWAYS_LEFT_OUT_DIRECTORIES = {".git", ".vscode"}
_ALWAYS_LEFT_OUT_FILES = {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}
_REGEX_SPECIALS = re.compile(r"[\-\[\]/{}()+?.\\^$|]")


def _pattern(line: str) -> str:
    escaped = _REGEX_SPECIALS.sub(lambda match: "\\" + match.group(0), line)
    return escaped.replace("**", "(.+)").replace("*", "([^\\/]+)")


class FuncIgnore:
    """Core Tools' `GitIgnoreParser`: `denies(path)` for a path relative to the app root, with '/'."""

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = negative if line.startswith("!") else positive
            line = line[1:] if line.startswith("!") else line
            target.append(line[1:] if line.startswith("/") else line)
        self._positive = self._compile(positive)
        self._negative = self._compile(negative)

    @staticmethod
    def _compile(lines: list[str]) -> re.Pattern[str] | None:
        if not lines:
            return None
        return re.compile("^((" + ")|(".join(_pattern(line) for line in sorted(lines)) + "))\\b")

    def denies(self, path: str) -> bool:
        if self._negative is not None and self._negative.match(path):
            return False
        return self._positive is not None and self._positive.match(path) is not None


def package_files(root: Path = PROJECT_ROOT) -> list[str]:
    """Every file (relative, with '/') that publishing `root` would upload."""
    ignore_file = root / ".funcignore"
    rules = FuncIgnore(ignore_file.read_text() if ignore_file.exists() else "")
    shipped = []
    for folder, directories, files in os.walk(root):
        directories[:] = sorted(d for d in directories if d not in _ALWAYS_LEFT_OUT_DIRECTORIES)
        for name in sorted(files):
            if name in _ALWAYS_LEFT_OUT_FILES:
                continue
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if not rules.denies(relative):
                shipped.append(relative)
    return shipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT)
    parser.add_argument("--zip", type=Path, help="write the package to this zip instead of listing it")
    args = parser.parse_args(argv)
    files = package_files(args.root)
    if args.zip is None:
        print("\n".join(files))
        return 0
    with zipfile.ZipFile(args.zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            archive.write(args.root / relative, relative)
    print(f"wrote {len(files)} files to {args.zip}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
