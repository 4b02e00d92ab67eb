"""Zip safety: every unsafe archive is refused before anything is read out of it."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from retrainer.ingestion.archive import ArchiveLimits, UnsafeArchiveError, check_archive, classify_members


def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def check(path: Path, limits: ArchiveLimits | None = None) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as archive:
        return check_archive(archive, limits or ArchiveLimits())


@pytest.mark.parametrize(
    "name", ["../evil.jpg", "images/../../etc/passwd", "/abs/images/a.jpg", "C:/images/a.jpg", "images\\a.jpg"]
)
def test_zip_slip_names_are_refused(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "slip.zip", {"images/ok.jpg": b"x", name: b"x"})
    with pytest.raises(UnsafeArchiveError, match=r"climbs out|absolute"):
        check(path)


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("images/a.jpg")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        check(path)


def test_zip_bomb_is_refused_by_compression_ratio(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bomb.zip", {"images/a.jpg": b"\0" * (8 * 1024 * 1024)})
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        check(path)


def test_total_uncompressed_size_is_capped(tmp_path: Path) -> None:
    entries = {f"images/{i}.jpg": bytes(range(256)) * 64 for i in range(4)}
    path = make_zip(tmp_path / "big.zip", entries, compression=zipfile.ZIP_STORED)
    assert len(check(path, ArchiveLimits(max_total_bytes=4 * 16384))) == 4
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        check(path, ArchiveLimits(max_total_bytes=3 * 16384))


def test_entry_count_is_capped(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "many.zip", {f"labels/{i}.npy": b"x" for i in range(5)})
    with pytest.raises(UnsafeArchiveError, match="5 entries exceed"):
        check(path, ArchiveLimits(max_entries=4))


def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("images/a.jpg", b"1")
        archive.writestr("images/a.jpg", b"2")
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        check(path)


def test_members_are_classified_at_the_root_or_under_one_folder(tmp_path: Path) -> None:
    for top in ("", "set_v1/"):
        path = make_zip(
            tmp_path / "set.zip",
            {
                f"{top}images/sub/a.jpg": b"x",
                f"{top}labels/sub/a_symbols.npy": b"x",
                f"{top}label_map.json": b"{}",
                f"{top}README.txt": b"hi",
            },
        )
        contents = classify_members(check(path))
        assert [m.relative_path for m in contents.images] == ["sub/a.jpg"]
        assert [m.relative_path for m in contents.labels] == ["sub/a_symbols.npy"]
        assert contents.label_map is not None and contents.label_map.name == f"{top}label_map.json"
        assert [m.relative_path for m in contents.ignored] == ["README.txt"]
