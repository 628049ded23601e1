"""A loopback stand-in for a heartbeat service (healthchecks.io, Uptime Kuma push, Gatus).

Nothing of these runs here, and their ping APIs are a plain HTTP request, so this
records each request (method, path, query, headers) and answers ``status``, or with
``hang`` accepts the request and never answers.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback_http import serve


@dataclass
class Ping:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeHeartbeat:
    status: int = 200
    hang: bool = False
    tls: tuple[Path, Path] | None = None  # certificate chain and key: serve HTTPS
    pings: list[Ping] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                fake.pings.append(Ping(self.command, parts.path, dict(urllib.parse.parse_qsl(parts.query)),
                                       dict(self.headers.items())))
                if fake.hang:
                    time.sleep(60)
                    return
                body = b"OK"
                self.send_response(fake.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _handle

        self.server, self.url = serve(Handler, self.tls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
