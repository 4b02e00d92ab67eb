"""AutoML JSONL annotation folders: `annotations.jsonl` plus the `MLTable` that describes it.

Both the aggregation and the split steps write such folders; AutoML (and `mltable.load`) read them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ANNOTATIONS_FILE = "annotations.jsonl"

MLTABLE_TEXT = f"""\
paths:
  - file: ./{ANNOTATIONS_FILE}
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
type: mltable
"""


def write_mltable_file(folder: Path) -> None:
    """The MLTable that makes `folder/annotations.jsonl` loadable by AutoML and `mltable.load`."""
    (folder / "MLTable").write_text(MLTABLE_TEXT, encoding="utf-8")


def annotations_path(folder: Path) -> Path:
    """The JSONL of an MLTable folder (the folder itself may also be given as the JSONL file)."""
    return folder if folder.is_file() else folder / ANNOTATIONS_FILE


def read_records(folder: Path) -> Iterator[dict]:
    with annotations_path(folder).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def write_records(folder: Path, records: Iterable[dict]) -> int:
    """Write an MLTable folder; returns the number of records."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with (folder / ANNOTATIONS_FILE).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
    write_mltable_file(folder)
    return count


@dataclass
class ClassCounts:
    """Images and boxes per class, as reported by the steps and tagged on data assets."""

    images: int = 0
    boxes: int = 0
    images_per_class: Counter[str] = field(default_factory=Counter)
    boxes_per_class: Counter[str] = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        self.images += 1
        labels = [box["label"] for box in record.get("label", [])]
        self.boxes += len(labels)
        self.boxes_per_class.update(labels)
        self.images_per_class.update(set(labels))

    def as_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "boxes": self.boxes,
            "images_per_class": dict(sorted(self.images_per_class.items(), key=lambda kv: class_sort_key(kv[0]))),
            "boxes_per_class": dict(sorted(self.boxes_per_class.items(), key=lambda kv: class_sort_key(kv[0]))),
        }


def class_sort_key(class_id: str) -> tuple[int, str]:
    """Class ids in numeric order ("2" before "10"), any non-numeric ids after them."""
    return (int(class_id), "") if class_id.lstrip("-").isdigit() else (1 << 62, class_id)


def count_classes(records: Iterable[dict]) -> ClassCounts:
    counts = ClassCounts()
    for record in records:
        counts.add(record)
    return counts
