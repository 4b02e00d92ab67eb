"""Remove secrets (account keys, SAS signatures, function keys) from text before it is shown."""

from __future__ import annotations

import re
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
