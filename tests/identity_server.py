"""A managed-identity endpoint on loopback (App Service protocol), as DefaultAzureCredential uses it.

Point `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` at it; it answers every token request with an
unsigned JWT for the requested resource (Azurite checks audience, issuer and expiry, not the
signature) and records each request's query, so tests can see which identity was asked for.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.helpers import serving_in_background

TENANT = "00000000-0000-0000-0000-0000000000aa"
SECRET_HEADER = "loopback-identity-header"


def _segment(document: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def unsigned_jwt(audience: str, lifetime_s: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{TENANT}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime_s,
        "oid": "11111111-1111-1111-1111-111111111111",
        "tid": TENANT,
    }
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(claims)}."


@dataclass
class IdentityEndpoint:
    url: str
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    #: When set, tokens carry this audience whatever was asked (to test that a wrong one is refused).
    audience_override: str | None = None


@contextmanager
def identity_endpoint() -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            endpoint.requests.append(query)
            if self.headers.get("X-IDENTITY-HEADER") != SECRET_HEADER:
                self.send_response(401)
                self.end_headers()
                return
            resource = query.get("resource", [""])[0]
            audience = endpoint.audience_override or resource
            body = json.dumps(
                {
                    "access_token": unsigned_jwt(audience),
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": resource,
                    "token_type": "Bearer",
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving_in_background(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        endpoint.url = f"http://127.0.0.1:{server.server_port}/msi/token"
        yield endpoint
