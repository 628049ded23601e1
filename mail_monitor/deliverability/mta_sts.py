"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the HTTPS policy, and its ``mx`` patterns.

The policy is fetched through a :class:`PolicyFetcher`; :class:`HttpsFetcher` is the real one. It
resolves ``mta-sts.DOMAIN`` through the same :class:`Resolver` as every other check (so
``[monitor] resolver`` covers it), verifies the certificate for that name, follows no redirect
(RFC 8461 section 3.3) and reads at most 64 KiB within one deadline.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from mail_monitor.deliverability.dns import DnsError, Resolver, addresses

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 section 3.3 lets senders stop there
FETCH_TIMEOUT = 10.0  # seconds for the whole fetch: connect, TLS, request and body
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 section 3.2: about one year


class FetchError(Exception):
    """The policy could not be fetched; the message says where and why, in one line."""


@dataclass(frozen=True)
class FetchResponse:
    status: int
    content_type: str
    body: bytes


class PolicyFetcher(Protocol):
    def fetch(self, host: str, path: str) -> FetchResponse:
        """GET https://HOST/PATH; raises :class:`FetchError`."""


@dataclass(frozen=True)
class StsRecord:
    id: str


@dataclass(frozen=True)
class StsPolicy:
    mode: str  # enforce, testing or none
    max_age: int
    mx: tuple[str, ...]


def parse_record(text: str) -> StsRecord:
    """Parse ``v=STSv1; id=20240101T000000;`` (RFC 8461 section 3.1); raises ValueError."""
    fields = [f.strip() for f in text.split(";") if f.strip()]
    if not fields or fields[0].replace(" ", "") != "v=STSv1":
        raise ValueError("must start with v=STSv1")
    tags = dict(f.partition("=")[::2] for f in fields[1:])
    record_id = tags.get("id", "").strip()
    if not record_id or len(record_id) > 32 or not record_id.isalnum() or not record_id.isascii():
        raise ValueError(f"id= must be 1 to 32 letters and digits, got {record_id!r}")
    return StsRecord(record_id)


def parse_policy(text: str) -> StsPolicy:
    """Parse the policy file (RFC 8461 section 3.2); raises ValueError saying what is wrong."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"line {line.strip()[:60]!r} is not key: value")
        values.setdefault(key.strip().lower(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise ValueError(f"version must be STSv1, got {', '.join(values.get('version', [])) or 'nothing'}")
    mode = values.get("mode", [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"mode must be enforce, testing or none, got {mode or 'nothing'!r}")
    max_age_text = values.get("max_age", [""])[0]
    if not max_age_text.isdigit() or int(max_age_text) > MAX_AGE_LIMIT:
        raise ValueError(f"max_age must be seconds from 0 to {MAX_AGE_LIMIT}, got {max_age_text or 'nothing'!r}")
    patterns = tuple(p.rstrip(".").lower() for p in values.get("mx", []))
    if not patterns and mode != "none":
        raise ValueError("it lists no mx patterns")
    return StsPolicy(mode, int(max_age_text), patterns)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 section 4.1: a literal name, or ``*.example.org`` for exactly one more label."""
    pattern, host = pattern.rstrip(".").lower(), host.rstrip(".").lower()
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return pattern == host


class HttpsFetcher:
    """Fetches over HTTPS from the address our resolver gives; ``port`` and ``ca_file`` are for tests
    and private CAs (``ca_file`` replaces the system's trust store)."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        port: int = 443,
        ca_file: str | None = None,
        timeout: float = FETCH_TIMEOUT,
        max_bytes: int = MAX_POLICY_BYTES,
    ) -> None:
        self._resolver = resolver
        self._port = port
        self._ca_file = ca_file
        self._timeout = timeout
        self._max_bytes = max_bytes

    def fetch(self, host: str, path: str) -> FetchResponse:
        url = f"https://{host}{'' if self._port == 443 else f':{self._port}'}{path}"
        deadline = time.monotonic() + self._timeout
        try:
            address = addresses(self._resolver, host)[0]
        except DnsError as error:
            raise FetchError(f"{url}: {error.describe()}") from None
        try:
            context = ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ssl.SSLError) as error:
            raise FetchError(f"cannot read ca_file {self._ca_file}: {error}") from None
        connection = _PinnedConnection(host, self._port, address, context, self._timeout)
        try:
            connection.connect()
            if connection.sock is not None:  # connect and TLS came out of the same budget
                connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            connection.request("GET", path, headers={"Accept": "text/plain", "User-Agent": "mail-monitor"})
            response = connection.getresponse()
            body = b""
            while len(body) <= self._max_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FetchError(f"{url}: no complete answer within {self._timeout:g} s")
                if connection.sock is not None:
                    connection.sock.settimeout(remaining)
                chunk = response.read1(min(16384, self._max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > self._max_bytes:
                raise FetchError(f"{url}: policy larger than {self._max_bytes // 1024} KiB")
            return FetchResponse(response.status, response.getheader("Content-Type", ""), body)
        except ssl.SSLCertVerificationError as error:
            raise FetchError(f"{url}: certificate not trusted: {error.verify_message}") from None
        except (OSError, http.client.HTTPException) as error:
            raise FetchError(f"{url}: {str(error) or type(error).__name__}") from None
        finally:
            connection.close()


class _PinnedConnection(http.client.HTTPSConnection):
    """Connects to a given address while the TLS name and the Host header stay the host's."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
