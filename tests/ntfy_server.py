"""A loopback HTTP server that speaks ntfy's JSON publish API and fails on demand.

It accepts ``POST /`` with a JSON body carrying ``topic`` (as ntfy.sh does), checks
Bearer or Basic auth when configured, answers like ntfy (200 with the message as JSON;
errors as ``{"code", "http", "error"}``), and records every request it received.
With ``tls`` (a certificate and key file) it serves HTTPS. Like a real ntfy server, it
ignores JSON fields it does not know, and refuses ``email`` unless ``email_enabled``
(ntfy answers 400 with code 40001 when it has no SMTP server configured).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from loopback_http import serve


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeNtfy:
    token: str | None = None
    basic: tuple[str, str] | None = None
    mode: str = "ok"  # ok, 500, 429, 408, hang
    tls: tuple[Path, Path] | None = None  # certificate chain and key: serve HTTPS
    email_enabled: bool = True
    failures: int | None = None  # with a failing mode: fail this many times, then accept
    requests: list[Received] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fake.requests.append(Received(self.path, dict(self.headers.items()), body))
                if fake.mode == "hang":
                    time.sleep(30)
                    return
                if fake.mode in ("500", "429", "408") and (fake.failures is None or fake.failures > 0):
                    if fake.failures is not None:
                        fake.failures -= 1
                    self._error(int(fake.mode), "simulated failure")
                    return
                if not fake._authorized(self.headers.get("Authorization")):
                    self._error(401, "unauthorized")
                    return
                try:
                    message = json.loads(body)
                except ValueError:
                    self._error(400, "invalid request: request body must be message JSON")
                    return
                if self.path != "/" or not isinstance(message, dict) or not message.get("topic"):
                    self._error(400, "invalid request: topic missing")
                    return
                if message.get("email") and not fake.email_enabled:
                    self._error(400, "e-mail notifications are not enabled", code=40001)
                    return
                fake.accepted.append(message)
                reply = {"id": f"m{len(fake.accepted)}", "time": int(time.time()), "event": "message", **message}
                self._send(200, reply)

            def _error(self, status: int, text: str, code: int | None = None) -> None:
                self._send(status, {"code": code or status * 100 + 1, "http": status, "error": text})

            def _send(self, code: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server, self.url = serve(Handler, self.tls)

    def _authorized(self, header: str | None) -> bool:
        if self.token is not None:
            return header == f"Bearer {self.token}"
        if self.basic is not None:
            expected = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return header == f"Basic {expected}"
        return True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
