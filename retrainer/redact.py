"""Remove secrets (account keys, SAS signatures, function keys) from text before it is shown or logged."""

from __future__ import annotations

import re
import traceback
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

_SECRET_PATTERNS = [
    re.compile(r"(?i)(AccountKey|SharedAccessSignature|SharedAccessKey|sig|code|x-functions-key)=[^;&\s\"']+"),
]


def redact(text: str) -> str:
    """Replace every secret-looking `name=value` with `name=***`."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda match: f"{match.group(1)}=***", text)
    return text


def url_without_query(url: str) -> str:
    """The URL with its query string (where a SAS token lives) cut off."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def describe_error(error: BaseException) -> str:
    """Type, redacted message and where it was raised: a log line that locates a fault without a traceback
    (whose frames would carry unredacted text)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = (
        f" (at {PurePosixPath(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    )
    return f"{type(error).__name__}: {redact(str(error))[:500]}{where}"
