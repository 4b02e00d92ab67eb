"""Data loader: unpack a zip of synthetic images with `.npy` labels into the datastore, once.

    python -m retrainer.ingestion.loader --raw-blob-sas-url <https SAS URL | path | file:// URL> \
        [--raw-input-path downloads/] [--image-output-path data/images] [--label-output-path data/labels]

Environment: STORAGE_ACCOUNT_CONTAINER_NAME and the datastore: keyless DATASTORE__blobServiceUri and
DATASTORE__tableServiceUri, or a connection string in DATASTORE / STORAGE_ACCOUNT_CONNECTION_STRING.

The zip is checked before anything is uploaded (see retrainer.ingestion.archive). Images and labels are
uploaded concurrently, skipping blobs already stored with the same content; every label is then
converted with the same code as the blob trigger, so each good label has its JSONL whether or not
the function app runs. Bad files go to quarantine with a reason; a member whose bytes are corrupt
in the zip (CRC mismatch, broken deflate stream) is not uploaded and is reported. The user's files
are never deleted. At most READ_BUDGET_BYTES of members are held in memory at once.

Exit codes, one meaning each:
  0  everything is stored and converted
  1  the load finished, but files were quarantined, are corrupt in the zip, or wait for their image
  2  refused before anything was uploaded: the archive, the arguments or the settings
  3  storage or the network failed part-way: run the same command again to resume (what is
     already stored is skipped)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import sys
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import AzureError
from tqdm import tqdm

from retrainer.datastore import Datastore, ImageInfo, QuarantineReason
from retrainer.images import image_format, image_size
from retrainer.ingestion.archive import (
    ArchiveContents,
    ArchiveMember,
    UnsafeArchiveError,
    check_archive,
    classify_members,
)
from retrainer.ingestion.ingest import LabelIngestor, Layout, Outcome, read_label_map
from retrainer.ingestion.labels import parse_label_map
from retrainer.ledger import Ledger
from retrainer.logs import configure_cli_logging
from retrainer.redact import redact, url_without_query
from retrainer.settings import get_settings
from shared.settings import SettingsError

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_UPLOAD_WORKERS = 8


@dataclass
class LoadSummary:
    images_uploaded: int = 0
    images_unchanged: int = 0
    labels_uploaded: int = 0
    labels_unchanged: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    corrupt: list[dict[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    ignored_members: int = 0

    @property
    def ok(self) -> bool:
        return not self.quarantined and not self.waiting and not self.corrupt

    def as_dict(self) -> dict[str, object]:
        return {
            "images": {"uploaded": self.images_uploaded, "unchanged": self.images_unchanged},
            "labels": {"uploaded": self.labels_uploaded, "unchanged": self.labels_unchanged},
            "labels_converted": self.outcomes[Outcome.CONVERTED.value],
            "labels_already_converted": self.outcomes["unchanged"],
            "waiting_for_image": self.waiting,
            "quarantined": self.quarantined,
            "corrupt_in_zip": self.corrupt,
            "ignored_members": self.ignored_members,
        }

    def render(self) -> str:
        lines = [
            f"images: {self.images_uploaded} uploaded, {self.images_unchanged} already stored",
            f"labels: {self.labels_uploaded} uploaded, {self.labels_unchanged} already stored",
            f"labels converted to JSONL: {self.outcomes[Outcome.CONVERTED.value]}"
            f" (+{self.outcomes['unchanged']} already converted)",
            f"waiting for their image: {len(self.waiting)}",
            f"quarantined: {len(self.quarantined)}",
            f"corrupt in the zip (not uploaded): {len(self.corrupt)}",
        ]
        lines += [f"  - {item['reason']}" for item in self.corrupt[:20]]
        lines += [f"  - {item['path']}: {item['reason']}" for item in self.quarantined[:20]]
        if len(self.quarantined) > 20:
            lines.append(f"  ... and {len(self.quarantined) - 20} more (see the .reason.json files)")
        if self.ignored_members:
            lines.append(f"zip entries ignored (not images/, labels/*.npy or label_map.json): {self.ignored_members}")
        return "\n".join(lines)


def fetch_archive(source: str, raw_input_path: Path) -> Path:
    """The zip on local disk: a local path or file:// URL is used in place; an https SAS URL is downloaded."""
    parts = urlsplit(source)
    if parts.scheme in ("", "file"):
        path = Path(unquote(parts.path) if parts.scheme == "file" else source)
        if not path.is_file():
            raise FileNotFoundError(f"no zip file at {path}")
        return path
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS):
        raise ValueError(f"--raw-blob-sas-url must be https (or a local path), got {parts.scheme}://")
    target = raw_input_path if raw_input_path.suffix == ".zip" else raw_input_path / PurePosixPath(parts.path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    _download_blob(source, target)
    return target


def _download_blob(url: str, target: Path) -> None:
    from azure.storage.blob import BlobClient

    shown = url_without_query(url)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        downloader = BlobClient.from_blob_url(url).download_blob(max_concurrency=4)
        with (
            open(partial, "wb") as out,
            tqdm(total=downloader.size, unit="B", unit_scale=True, desc=f"download {PurePosixPath(shown).name}") as bar,
        ):
            for chunk in downloader.chunks():
                out.write(chunk)
                bar.update(len(chunk))
    except AzureError as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"download of {shown} failed: {redact(str(error)).splitlines()[0]}") from None
    partial.replace(target)


EXIT_OK, EXIT_ATTENTION, EXIT_REFUSED, EXIT_STORAGE_FAILED = 0, 1, 2, 3
READ_BUDGET_BYTES = 64 * 1024 * 1024


class CorruptMemberError(ValueError):
    """A member's bytes fail the zip's own checks (CRC, deflate stream): nothing of it is uploaded."""


class _ByteBudget:
    """Bounds the bytes of zip members held in memory by all upload threads together."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free = limit
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self._limit)  # one member larger than the budget runs alone
        with self._condition:
            self._condition.wait_for(lambda: self._free >= size)
            self._free -= size
        try:
            yield
        finally:
            with self._condition:
                self._free += size
                self._condition.notify_all()


class _ZipReader:
    """One parse of the zip's directory shared by every upload thread (zipfile serialises the seeks),
    with the bytes in flight bounded."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, budget_bytes: int = READ_BUDGET_BYTES) -> None:
        self._path = path
        self._archive = archive
        self._infos = {info.filename: info for info in archive.infolist()}
        self.budget = _ByteBudget(budget_bytes)

    def read(self, name: str) -> bytes:
        info = self._infos[name]
        try:
            with self._archive.open(info) as member:
                return member.read()
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise CorruptMemberError(f"{name} is corrupt in {self._path.name} ({error})") from None


def load_archive(
    zip_path: Path,
    datastore: Datastore,
    ledger: Ledger,
    layout: Layout,
    label_map_blob: str,
    workers: int = _UPLOAD_WORKERS,
    progress: bool = True,
) -> LoadSummary:
    """Check, upload and convert one image-set zip into the datastore (`progress`: bars on stderr)."""
    with zipfile.ZipFile(zip_path) as archive:
        contents = classify_members(check_archive(archive))
        if not contents.images and not contents.labels:
            raise UnsafeArchiveError(f"{zip_path.name} has no images/ or labels/*.npy entries")
        datastore.ensure_container()
        ledger.ensure_tables()
        stored = {
            blob.name: blob.content_md5
            for prefix in (layout.image_folder, layout.label_folder, layout.quarantine_folder)
            for blob in datastore.list(prefix + "/")
        }
        load = _Load(
            contents,
            _ZipReader(zip_path, archive),
            datastore,
            layout,
            stored,
            LoadSummary(ignored_members=len(contents.ignored)),
            workers,
            progress,
        )
        label_map = load.label_map(label_map_blob)
        images = load.upload_images()
        fresh_labels = load.upload_labels()
        load.convert_labels(
            fresh_labels, LabelIngestor(datastore, ledger, layout, label_map, handler="data-loader"), images
        )
        return load.summary


def _run(
    tasks: Iterable[Callable[[], None]], count: int, description: str, workers: int, progress: bool = True
) -> None:
    """Run the tasks on `workers` threads; the first failure cancels what has not started and is raised."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(task) for task in tasks]
        with tqdm(total=count, desc=description, unit="file", disable=not progress) as bar:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Load:
    """One load of one archive: what it reads, where it writes, what is already stored, and its summary."""

    contents: ArchiveContents
    reader: _ZipReader
    datastore: Datastore
    layout: Layout
    stored: dict[str, bytes | None]  # blob name -> MD5 of what the datastore already holds
    summary: LoadSummary
    workers: int
    progress: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    def label_map(self, blob: str) -> dict[str, str] | None:
        if self.contents.label_map is not None:
            data = self.reader.read(self.contents.label_map.name)
            label_map = parse_label_map(data, self.contents.label_map.name)
            self.datastore.write_unless_identical(blob, data)
            return label_map
        return read_label_map(self.datastore, blob)

    def upload_images(self) -> dict[str, ImageInfo]:
        """Upload readable images; quarantine files that only pretend to be images. Returns image info by stem."""
        images: dict[str, ImageInfo] = {}

        def store(member: ArchiveMember, data: bytes) -> None:
            path = f"{self.layout.image_folder}/{member.relative_path}"
            size = image_size(data)
            if size is None:
                self.quarantine_new(path, data, f"{member.name} is not a readable image", "image")
                return
            unchanged = self.is_stored(path, data)
            if not unchanged:
                self.datastore.write(path, data)
            with self.lock:
                info = ImageInfo(path, size[0], size[1], image_format(path) or "jpg")
                images[self.layout.stem_of_image(path) or path] = info
                self.summary.images_unchanged += unchanged
                self.summary.images_uploaded += not unchanged

        self._each(self.contents.images, store, "upload images")
        return images

    def upload_labels(self) -> set[str]:
        """Upload label files; returns the paths whose content is new (these are converted again)."""
        fresh: set[str] = set()

        def store(member: ArchiveMember, data: bytes) -> None:
            path = f"{self.layout.label_folder}/{member.relative_path}"
            if self.is_stored(f"{self.layout.quarantine_folder}/{path}", data) and path not in self.stored:
                with self.lock:
                    self.summary.labels_unchanged += 1
                    self.summary.quarantined.append(
                        {"path": path, "reason": "quarantined by an earlier run (see its .reason.json)"}
                    )
                return
            unchanged = self.is_stored(path, data)
            if not unchanged:
                self.datastore.write(path, data)
            with self.lock:
                self.summary.labels_unchanged += unchanged
                self.summary.labels_uploaded += not unchanged
                if not unchanged:
                    fresh.add(path)

        self._each(self.contents.labels, store, "upload labels")
        return fresh

    def convert_labels(self, fresh_labels: set[str], ingestor: LabelIngestor, images: dict[str, ImageInfo]) -> None:
        quarantined = {item["path"] for item in self.summary.quarantined}

        def convert(member: ArchiveMember) -> None:
            path = f"{self.layout.label_folder}/{member.relative_path}"
            stem = self.layout.stem_of_label(path)
            if path in quarantined or stem is None:
                return
            if path not in fresh_labels and self.layout.jsonl_path(stem) in self.stored:
                with self.lock:
                    self.summary.outcomes["unchanged"] += 1
                return
            result = ingestor.ingest_label(path, images.get(stem))
            with self.lock:
                self.summary.outcomes[result.outcome.value] += 1
                if result.outcome is Outcome.QUARANTINED:
                    self.summary.quarantined.append({"path": path, "reason": result.reason or ""})
                elif result.outcome is Outcome.WAITING_FOR_IMAGE:
                    self.summary.waiting.append(path)

        members = self.contents.labels
        _run(
            (functools.partial(convert, m) for m in members),
            len(members),
            "convert labels",
            self.workers,
            self.progress,
        )

    def quarantine_new(self, path: str, data: bytes, reason: str, rule: str) -> None:
        """Quarantine a file from the zip that was never stored in its folder (nothing to delete)."""
        if not self.is_stored(f"{self.layout.quarantine_folder}/{path}", data):
            self.datastore.quarantine(
                path,
                QuarantineReason(reason, rule, "data-loader"),
                self.layout.quarantine_folder,
                original_etag=None,
                data=data,
            )
        with self.lock:
            self.summary.quarantined.append({"path": path, "reason": reason})

    def is_stored(self, path: str, data: bytes) -> bool:
        return self.stored.get(path) == hashlib.md5(data).digest()

    def _each(
        self, members: list[ArchiveMember], store: Callable[[ArchiveMember, bytes], None], description: str
    ) -> None:
        """Read each member within the memory budget and hand its bytes to `store`; corrupt ones are reported."""

        def read_then(member: ArchiveMember) -> None:
            with self.reader.budget.hold(member.size):
                try:
                    data = self.reader.read(member.name)
                except CorruptMemberError as error:
                    with self.lock:
                        self.summary.corrupt.append({"path": member.name, "reason": str(error)})
                    return
                store(member, data)

        _run((functools.partial(read_then, m) for m in members), len(members), description, self.workers, self.progress)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m retrainer.ingestion.loader",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--raw-blob-sas-url",
        "--raw_blob_sas_url",
        required=True,
        help="https SAS URL of the zip, or a local path / file:// URL",
    )
    parser.add_argument(
        "--raw-input-path",
        "--raw_input_path",
        type=Path,
        default=Path("downloads"),
        help="where the downloaded zip is stored",
    )
    parser.add_argument(
        "--image-output-path", "--image_output_path", default="data/images", help="image folder in the datastore"
    )
    parser.add_argument(
        "--label-output-path", "--label_output_path", default="data/labels", help="label folder in the datastore"
    )
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON to this file")
    return parser.parse_args(argv)


def _storage_failure(error: AzureError) -> str:
    """What went wrong with storage, and the remedy: a refused credential is not cured by running again."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    first_line = redact(str(error)).splitlines()[0][:300] if str(error) else ""
    refused = isinstance(error, ClientAuthenticationError) or (
        isinstance(error, HttpResponseError) and error.status_code in (401, 403)
    )
    if refused:
        return (
            f"storage refused the credentials ({type(error).__name__}: {first_line}). Check the account key in "
            "DATASTORE or STORAGE_ACCOUNT_CONNECTION_STRING, or, keyless, that the identity has Storage Blob and "
            "Table Data Contributor on the account; then run the same command (stored files are skipped)."
        )
    return (
        f"storage failed ({type(error).__name__}: {first_line}). Nothing is lost: run the same command again "
        "to resume; files already stored are skipped."
    )


def main(argv: list[str] | None = None) -> int:
    configure_cli_logging()
    args = parse_args(argv)
    try:
        settings = get_settings()
        layout = Layout(
            args.image_output_path.strip("/"), args.label_output_path.strip("/"), settings.QUARANTINE_FOLDER
        )
        zip_path = fetch_archive(args.raw_blob_sas_url, args.raw_input_path)
        summary = load_archive(
            zip_path,
            Datastore.from_settings(settings),
            Ledger.from_settings(settings),
            layout,
            settings.LABEL_MAP_BLOB,
        )
    except AzureError as error:  # storage or the network failed part-way: say what, and how to resume
        print(f"data loader: {_storage_failure(error)}", file=sys.stderr)
        return EXIT_STORAGE_FAILED
    except (SettingsError, UnsafeArchiveError, ValueError, OSError, zipfile.BadZipFile) as error:
        print(f"data loader refused: {redact(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    print(summary.render())
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    return EXIT_OK if summary.ok else EXIT_ATTENTION


if __name__ == "__main__":
    sys.exit(main())
