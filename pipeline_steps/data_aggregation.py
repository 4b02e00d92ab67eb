"""Step 1, data aggregation: every per-image `*.jsonl` under the label folder -> one MLTable folder.

    python -m pipeline_steps.data_aggregation --input-image-data-path <images> \
        --input-label-data-path <labels> --input-images-string-absolute-path <prefix> --output_path <folder>

Each record's `image_url` (relative to the image folder, as the label conversion writes it) becomes
`<prefix>/<relative path>`: an `azureml://.../paths/data/images` prefix on Azure ML, a
`file:///abs/images` prefix locally. Records whose image is missing and malformed lines are left out
and reported in `aggregation_summary.json` beside the output; the step fails only when nothing usable
remains. Files are streamed: memory does not grow with their number.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from pipeline_steps._cli import StepParser, add_flag, step_parser
from shared.mltable_io import ANNOTATIONS_FILE, write_mltable_file

SUMMARY_FILE = "aggregation_summary.json"
_READ_CHUNK = 1 << 16
_EXAMPLES = 10


class NothingToAggregateError(RuntimeError):
    """No usable record was found."""


@dataclass
class Problems:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(example)


@dataclass
class AggregationSummary:
    label_files: int = 0
    records: int = 0
    boxes: int = 0
    missing_images: Problems = field(default_factory=Problems)
    malformed: Problems = field(default_factory=Problems)

    def as_dict(self) -> dict[str, object]:
        return {
            "label_files": self.label_files,
            "records": self.records,
            "boxes": self.boxes,
            "missing_images": vars(self.missing_images),
            "malformed": vars(self.malformed),
        }


def label_files(label_dir: Path) -> Iterator[tuple[str, str]]:
    """(folder, name) of every `*.jsonl` below the folder, in a stable order, one folder listed at a time."""
    for root, dirs, files in os.walk(label_dir):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".jsonl"):
                yield root, name


def relative_image_path(image_url: str, absolute_prefix: str) -> str | None:
    """The image's path inside the image folder, or None when it points elsewhere."""
    prefix = absolute_prefix.rstrip("/") + "/"
    relative = image_url[len(prefix) :] if image_url.startswith(prefix) else image_url
    if not relative or "://" in relative or relative.startswith("/") or "/../" in f"/{relative}/":
        return None
    return relative


def aggregate(image_dir: Path, label_dir: Path, absolute_prefix: str, output_dir: Path) -> AggregationSummary:
    """Write `annotations.jsonl` + `MLTable` + the summary into `output_dir`."""
    if not label_dir.is_dir():
        raise NotADirectoryError(f"label folder {label_dir} does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    aggregator = _Aggregator(str(image_dir), absolute_prefix.rstrip("/"))
    with open(output_dir / ANNOTATIONS_FILE, "wb", buffering=1 << 20) as out:
        for root, name in label_files(label_dir):
            aggregator.summary.label_files += 1
            lines = _read_file(os.path.join(root, name)).split(b"\n")
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    aggregator.add(line, out, functools.partial(_where, label_dir, root, name, number))
    write_mltable_file(output_dir)
    summary = aggregator.summary
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary.as_dict(), indent=2))
    if summary.records == 0:
        raise NothingToAggregateError(
            f"no usable record in {summary.label_files} label files under {label_dir} "
            f"({summary.missing_images.count} with missing images, {summary.malformed.count} malformed)"
        )
    return summary


def _read_file(path: str) -> bytes:
    """The whole file with the fewest system calls (label files are small; the hot loop is per file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, _READ_CHUNK)]
        while len(chunks[-1]) == _READ_CHUNK:
            chunks.append(os.read(fd, _READ_CHUNK))
    finally:
        os.close(fd)
    return b"".join(chunks)


def _where(label_dir: Path, root: str, name: str, number: int) -> str:
    return f"{os.path.relpath(os.path.join(root, name), label_dir)}:{number}"


class _Aggregator:
    """Rewrites one record at a time; the hot path avoids re-encoding lines the label conversion wrote."""

    _URL_KEY = b'{"image_url":'

    def __init__(self, image_dir: str, prefix: str) -> None:
        self._image_dir = image_dir
        self._prefix = prefix
        self.summary = AggregationSummary()

    def add(self, line: bytes, out: BinaryIO, where: Callable[[], str]) -> None:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            self.summary.malformed.add(f"{where()}: not JSON ({error.msg})")
            return
        if not isinstance(record, dict) or not isinstance(record.get("image_url"), str):
            self.summary.malformed.add(f"{where()}: no image_url")
            return
        if not isinstance(record.get("label"), list):
            self.summary.malformed.add(f"{where()}: label is not a list")
            return
        url = record["image_url"]
        relative = relative_image_path(url, self._prefix)
        if relative is None:
            self.summary.malformed.add(f"{where()}: image_url {url!r} is outside the image folder")
            return
        if not os.path.isfile(f"{self._image_dir}/{relative}"):
            self.summary.missing_images.add(f"{where()}: {relative}")
            return
        new_url = f"{self._prefix}/{relative}"
        written_head = self._URL_KEY + orjson.dumps(url) + b","
        line = line.rstrip(b"\r")
        if line.startswith(written_head):
            out.write(self._URL_KEY + orjson.dumps(new_url) + b"," + line[len(written_head) :] + b"\n")
        else:
            record["image_url"] = new_url
            out.write(orjson.dumps(record) + b"\n")
        self.summary.records += 1
        self.summary.boxes += len(record["label"])


def build_parser() -> StepParser:
    parser = step_parser("data_aggregation", __doc__)
    add_flag(
        parser,
        "input-image-data-path",
        required=True,
        type=Path,
        help="image folder (mounted uri_folder)",
    )
    add_flag(
        parser,
        "input-label-data-path",
        required=True,
        type=Path,
        help="label folder with per-image .jsonl files (mounted uri_folder)",
    )
    add_flag(
        parser,
        "input-images-string-absolute-path",
        required=False,
        default=None,
        help="absolute URL prefix of the image folder (azureml://... or file:///...); "
        "default: file:// URL of --input-image-data-path",
    )
    add_flag(parser, "output_path", required=True, type=Path, help="output MLTable folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    image_dir = Path(args.input_image_data_path)
    prefix = args.input_images_string_absolute_path or image_dir.resolve().as_uri()
    try:
        summary = aggregate(image_dir, Path(args.input_label_data_path), prefix, Path(args.output_path))
    except (NothingToAggregateError, NotADirectoryError) as error:
        print(f"data aggregation failed: {error}", file=sys.stderr)
        return 1
    print(
        f"aggregated {summary.records} records ({summary.boxes} boxes) from {summary.label_files} label files; "
        f"left out: {summary.missing_images.count} with missing images, {summary.malformed.count} malformed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
