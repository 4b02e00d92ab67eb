"""Safety checks of an image-set zip before anything is extracted or uploaded (pure).

Refused: absolute paths, drive letters, backslashes, `..` components, symbolic links, encrypted
or duplicate entries, more entries or more uncompressed bytes than the limits, and members whose
compression ratio marks a zip bomb. The zip's own size fields are enforced while reading too
(zipfile stops at the declared size and checks the CRC), so a lying header cannot inflate output.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from retrainer.images import IMAGE_FORMATS

_UNIX = 3


class UnsafeArchiveError(ValueError):
    """The archive is refused as a whole; nothing was extracted or uploaded."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 2_000_000
    max_total_bytes: int = 64 * 1024**3
    max_member_bytes: int = 2 * 1024**3
    #: Ratio checks start above this member size: tiny files may compress extremely well and harm nothing.
    ratio_check_above_bytes: int = 1024 * 1024
    max_compression_ratio: float = 100.0


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    kind: str  # "image", "label", "label_map" or "other"
    relative_path: str  # path below images/ or labels/ (or the name itself for others)
    size: int


@dataclass(frozen=True)
class ArchiveContents:
    images: list[ArchiveMember]
    labels: list[ArchiveMember]
    label_map: ArchiveMember | None
    ignored: list[ArchiveMember]


#: Azure caps blob names at 1,024 characters (the folder prefix comes on top).
MAX_NAME_CHARS = 900


def check_member_name(name: str) -> None:
    shown = repr(name[:120])
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"entry with an empty or NUL-containing name: {shown}")
    if len(name) > MAX_NAME_CHARS:
        raise UnsafeArchiveError(f"entry {shown}... has a name longer than {MAX_NAME_CHARS} characters")
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise UnsafeArchiveError(f"entry {shown} has a control character in its name")
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"entry {shown} has an absolute or non-POSIX path")
    segments = name.rstrip("/").split("/")
    if ".." in segments:
        raise UnsafeArchiveError(f"entry {shown} climbs out of the target folder ('..')")
    if any(segment in ("", ".") for segment in segments):
        raise UnsafeArchiveError(f"entry {shown} has an empty or '.' path segment")


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _UNIX and stat.S_ISLNK(info.external_attr >> 16)


def check_archive(archive: zipfile.ZipFile, limits: ArchiveLimits = ArchiveLimits()) -> list[zipfile.ZipInfo]:
    """All file entries of a safe archive; raise UnsafeArchiveError on the first unsafe one."""
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise UnsafeArchiveError(f"{len(entries)} entries exceed the limit of {limits.max_entries}")
    seen: set[str] = set()
    total = 0
    files = []
    for info in entries:
        check_member_name(info.filename)
        if _is_link(info):
            raise UnsafeArchiveError(f"entry {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"entry {info.filename!r} is encrypted")
        if info.filename in seen:
            raise UnsafeArchiveError(f"entry {info.filename!r} appears twice")
        seen.add(info.filename)
        if info.is_dir():
            continue
        if info.file_size > limits.max_member_bytes:
            raise UnsafeArchiveError(f"entry {info.filename!r} is {info.file_size} bytes uncompressed, over the limit")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_check_above_bytes and ratio > limits.max_compression_ratio:
            raise UnsafeArchiveError(
                f"entry {info.filename!r} expands {ratio:.0f}x (limit {limits.max_compression_ratio:g}x): zip bomb"
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(f"archive expands to more than {limits.max_total_bytes} bytes")
        files.append(info)
    return files


def classify_members(files: list[zipfile.ZipInfo]) -> ArchiveContents:
    """Sort checked entries into images (`images/...`), labels (`labels/...npy`) and the label map.

    The set may sit at the zip's root or inside one top-level folder.
    """
    roots = {PurePosixPath(info.filename).parts[0] for info in files}
    top = ""
    if len(roots) == 1 and not any(info.filename.startswith(("images/", "labels/")) for info in files):
        top = next(iter(roots)) + "/"
    images, labels, ignored = [], [], []
    label_map = None
    for info in files:
        name = info.filename[len(top) :] if info.filename.startswith(top) else info.filename
        if name.startswith("images/") and PurePosixPath(name).suffix.lower() in IMAGE_FORMATS:
            images.append(ArchiveMember(info.filename, "image", name[len("images/") :], info.file_size))
        elif name.startswith("labels/") and name.endswith(".npy"):
            labels.append(ArchiveMember(info.filename, "label", name[len("labels/") :], info.file_size))
        elif name == "label_map.json":
            label_map = ArchiveMember(info.filename, "label_map", name, info.file_size)
        else:
            ignored.append(ArchiveMember(info.filename, "other", name, info.file_size))
    return ArchiveContents(images, labels, label_map, ignored)
