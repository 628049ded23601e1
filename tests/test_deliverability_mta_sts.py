"""MTA-STS: record and policy parsing, RFC 8461 wildcards, the check, and the HTTPS fetch bounds."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack import CertificateAuthority

from mail_monitor.deliverability import mta_sts
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.posture import check_mta_sts
from mail_monitor.results import Outcome

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.backup.example.org\r\nmax_age: 604800\r\n"


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.org", "mail.example.org", True),
        ("mail.example.org", "MAIL.example.org.", True),
        ("mail.example.org", "mail2.example.org", False),
        ("*.example.org", "mail.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.b.example.org", False),  # the wildcard covers one label only
        ("*.example.org", "mail.example.org.evil.test", False),
        ("*.example.org", "mailexample.org", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mta_sts.mx_matches(pattern, host) is expected


def test_parse_policy() -> None:
    policy = mta_sts.parse_policy(POLICY.decode())
    assert policy == mta_sts.StsPolicy("enforce", 604800, ("mail.example.org", "*.backup.example.org"))
    assert mta_sts.parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mx == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mode: enforce\nmx: a\nmax_age: 1", "version must be STSv1"),
        ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1", "mode must be"),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999", "max_age"),
        ("version: STSv1\nmode: enforce\nmax_age: 86400", "no mx patterns"),
        ("version: STSv1\n<html>", "not key: value"),
    ],
)
def test_invalid_policies(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        mta_sts.parse_policy(text)


def test_parse_record() -> None:
    assert mta_sts.parse_record("v=STSv1; id=20240101T000000;") == mta_sts.StsRecord("20240101T000000")
    for bad in ("v=STSv2; id=1", "v=STSv1;", "v=STSv1; id=has-dash", "v=STSv1; id=" + "9" * 33):
        with pytest.raises(ValueError):
            mta_sts.parse_record(bad)


class FakeFetcher:
    def __init__(self, body: bytes = POLICY, status: int = 200, content_type: str = "text/plain",
                 error: str = "") -> None:
        self.response = mta_sts.FetchResponse(status, content_type, body)
        self.error = error
        self.asked: list[tuple[str, str]] = []

    def fetch(self, host: str, path: str) -> mta_sts.FetchResponse:
        self.asked.append((host, path))
        if self.error:
            raise mta_sts.FetchError(self.error)
        return self.response


def zone(*mx: str, record: str = "v=STSv1; id=2024") -> StaticResolver:
    return StaticResolver({
        ("example.org", "MX"): [(10 * n, host) for n, host in enumerate(mx or ("mail.example.org",), 1)],
        ("_mta-sts.example.org", "TXT"): [record],
    })


def test_check_covers_every_mx() -> None:
    fetcher = FakeFetcher()
    finding = check_mta_sts("example.org", zone("mail.example.org", "a.backup.example.org"), fetcher)
    assert finding.outcome is Outcome.OK, finding.message
    assert "mode enforce" in finding.message and ("id", "2024") in finding.details
    assert fetcher.asked == [("mta-sts.example.org", "/.well-known/mta-sts.txt")]


def test_check_names_the_uncovered_mx() -> None:
    finding = check_mta_sts("example.org", zone("mail.example.org", "mail2.example.org"), FakeFetcher())
    assert finding.outcome is Outcome.FAILED
    assert finding.message.startswith("MTA-STS policy of example.org does not cover MX mail2.example.org: its mx "
                                      "patterns are mail.example.org, *.backup.example.org")


@pytest.mark.parametrize(
    ("resolver", "fetcher", "outcome", "words"),
    [
        (zone(record="v=spf1 -all"), FakeFetcher(), Outcome.FAILED, "no MTA-STS record"),
        (zone(record="v=STSv1; id="), FakeFetcher(), Outcome.FAILED, "id="),
        (zone(), FakeFetcher(error="refused"), Outcome.FAILED, "could not be fetched: refused"),
        (zone(), FakeFetcher(status=404), Outcome.FAILED, "HTTP 404"),
        (zone(), FakeFetcher(body=b"<html>hello</html>"), Outcome.FAILED, "is invalid"),
        (zone(), FakeFetcher(body=b"\xff\xfe"), Outcome.FAILED, "is invalid"),
        (zone(), FakeFetcher(content_type="text/html"), Outcome.WARNING, "not text/plain"),
        (zone(), FakeFetcher(body=b"version: STSv1\nmode: none\nmax_age: 86400\n"), Outcome.WARNING, "mode none"),
    ],
)
def test_check_problems(resolver: StaticResolver, fetcher: FakeFetcher, outcome: Outcome, words: str) -> None:
    finding = check_mta_sts("example.org", resolver, fetcher)
    assert finding.outcome is outcome and words in finding.message


# The real fetcher against an HTTPS server on loopback with a throw-away CA.
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(301)
            self.send_header("Location", "https://elsewhere.example/")
            self.end_headers()
            return
        body = POLICY if self.path == mta_sts.POLICY_PATH else b"x" * (mta_sts.MAX_POLICY_BYTES + 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if self.path == "/drip":
            self.end_headers()
            try:
                for _ in range(50):  # slower than any fetch deadline in these tests
                    self.wfile.write(b"v")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass  # the fetcher gave up, as it should
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("mta-sts")
    ca = CertificateAuthority(directory)
    cert, key = ca.issue("mta-sts", names=("mta-sts.example.org",), ips=())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca.ca_file
    server.shutdown()
    server.server_close()


LOOPBACK = StaticResolver({("mta-sts.example.org", "A"): ["127.0.0.1"]})


def test_fetch_resolves_through_our_resolver_and_checks_the_name(https: tuple[int, Path]) -> None:
    port, ca_file = https
    fetcher = mta_sts.HttpsFetcher(LOOPBACK, port=port, ca_file=str(ca_file), timeout=5)
    response = fetcher.fetch("mta-sts.example.org", mta_sts.POLICY_PATH)
    assert (response.status, response.content_type, response.body) == (200, "text/plain", POLICY)
    finding = check_mta_sts("example.org", zone("mail.example.org"), fetcher)
    assert finding.outcome is Outcome.OK


def test_fetch_refuses_an_untrusted_certificate(https: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = https
    other = CertificateAuthority(tmp_path)
    fetcher = mta_sts.HttpsFetcher(LOOPBACK, port=port, ca_file=str(other.ca_file), timeout=5)
    with pytest.raises(mta_sts.FetchError, match="certificate not trusted"):
        fetcher.fetch("mta-sts.example.org", mta_sts.POLICY_PATH)


def test_fetch_bounds(https: tuple[int, Path]) -> None:
    port, ca_file = https
    fetcher = mta_sts.HttpsFetcher(LOOPBACK, port=port, ca_file=str(ca_file), timeout=1)
    assert fetcher.fetch("mta-sts.example.org", "/redirect").status == 301  # reported, never followed
    with pytest.raises(mta_sts.FetchError, match="larger than 64 KiB"):
        fetcher.fetch("mta-sts.example.org", "/big")
    with pytest.raises(mta_sts.FetchError, match="no complete answer within 1 s"):
        fetcher.fetch("mta-sts.example.org", "/drip")
    with pytest.raises(mta_sts.FetchError, match="name does not exist"):
        fetcher.fetch("mta-sts.nowhere.example", mta_sts.POLICY_PATH)
