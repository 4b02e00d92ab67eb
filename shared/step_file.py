"""A typed JSON document that one pipeline step writes into its output folder and a later reader reads.

It lives below the service and the steps alike: the steps' contracts (`shared/contracts.py`)
and the promotion record, which the tag step writes and the service reads, are all step files.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict


class StepFile(BaseModel):
    """Each subclass owns its file name: the writer calls `write(folder)`, the reader `read(folder)`."""

    model_config = ConfigDict(extra="ignore")
    FILE_NAME: ClassVar[str]

    @classmethod
    def read(cls, folder: Path) -> Self:
        path = folder / cls.FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the step that writes {cls.FILE_NAME} did not run here")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.FILE_NAME
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path
