"""Headless Chromium (Debian's `chromium`) for checking pages as a person would see them."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Screenshots are kept here for people to look at (not in git).
ARTIFACTS = Path(__file__).resolve().parent.parent / ".test-artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@dataclass(frozen=True)
class Rendered:
    dom: str
    console: str
    screenshot: Path


def render(page: Path, screenshot_name: str, size: str = "1400,2000") -> Rendered:
    """The page's DOM after Chromium loaded it, what Chromium logged, and a screenshot."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot_name
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*common, f"--screenshot={shot}", f"--window-size={size}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return Rendered(dom.stdout, dom.stderr, shot)


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]
