"""XOAUTH2 against a real Dovecot (and Postfix, whose SASL goes through Dovecot).

Dovecot 2.3's oauth2 passdb checks each token with an introspection endpoint (RFC 7662);
that endpoint is the one hand-written part here: a few lines of loopback HTTP that play
the identity provider, knowing one good token.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from scripts.mailstack import MailStack
from tests.conftest import route_toml, run_cli

GOOD_TOKEN = "ya29.real-dovecot-token"
BAD_TOKEN = "ya29.revoked-token-xyz"


@dataclass
class IdentityProvider:
    """Answers Dovecot's introspection POSTs: active, with the user name, for the good token only."""

    username: str
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                token = (parse_qs(body).get("token") or [""])[0]
                provider.seen.append(token)
                answer = {"active": True, "username": provider.username} if token == GOOD_TOKEN \
                    else {"active": False}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def oauth_stack() -> Iterator[tuple[MailStack, IdentityProvider]]:
    root = Path(tempfile.mkdtemp(prefix="mailstack-oauth2-"))
    stack = MailStack(root)
    account = stack.add_user("oauth", "the-password-is-not-used")
    provider = IdentityProvider(account.address)
    stack.oauth2_introspection_url = provider.url
    stack.start()
    try:
        yield stack, provider
    finally:
        stack.destroy()
        provider.close()


def oauth_config(stack: MailStack, tmp_path: Path, token: str) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    ca = stack.ca.ca_file
    address = stack.accounts["oauth"].address
    config = tmp_path / "config.toml"
    config.write_text(
        f'[monitor]\ndeadline = "40s"\nstate_file = "{tmp_path / "state.json"}"\n\n'
        f"[accounts.self]\n"
        f'address = "{address}"\n'
        f'smtp = {{ host = "{stack.host}", port = {stack.submission_port}, tls = "starttls", ca_file = "{ca}", '
        f'oauth2_token_file = "{token_file}" }}\n'
        f'imap = {{ host = "{stack.host}", port = {stack.imaps_port}, tls = "implicit", ca_file = "{ca}", '
        f'oauth2_token_file = "{token_file}" }}\n\n'
        + route_toml("self", "self", "self")
    )
    return config


def test_a_good_token_logs_in_over_imap_and_smtp_and_the_route_passes(
        oauth_stack: tuple[MailStack, IdentityProvider], tmp_path: Path) -> None:
    stack, provider = oauth_stack
    provider.seen.clear()
    cli = run_cli("run", "--config", str(oauth_config(stack, tmp_path, GOOD_TOKEN)), "--format", "json")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    checks = json.loads(cli.stdout)["routes"][0]["checks"]
    assert {name: check["outcome"] for name, check in checks.items()} == dict.fromkeys(
        ("imap_auth", "smtp_auth", "send", "receive", "cleanup", "tls"), "ok")
    # Both logins went to the identity provider: Dovecot's IMAP, and Postfix through Dovecot.
    assert provider.seen.count(GOOD_TOKEN) >= 2
    assert "xoauth2" in (stack.root / "dovecot.conf").read_text()


def test_a_bad_token_fails_both_logins_clearly_and_never_shows(
        oauth_stack: tuple[MailStack, IdentityProvider], tmp_path: Path) -> None:
    stack, provider = oauth_stack
    cli = run_cli("-v", "run", "--config", str(oauth_config(stack, tmp_path, BAD_TOKEN)), "--format", "json")
    assert cli.returncode == 2, cli.stdout + cli.stderr
    checks = json.loads(cli.stdout)["routes"][0]["checks"]
    assert checks["imap_auth"]["outcome"] == "failed"
    assert checks["imap_auth"]["message"].startswith("XOAUTH2 login refused: [AUTHENTICATIONFAILED]")
    assert checks["smtp_auth"]["outcome"] == "failed"
    assert checks["smtp_auth"]["message"].startswith("authentication failed: 535")
    for login in ("imap_auth", "smtp_auth"):  # the server's JSON error, in words
        assert checks[login]["message"].endswith("(OAuth2 status: 401)")
    assert checks["send"]["outcome"] == "skipped"
    assert BAD_TOKEN in provider.seen  # it was really checked, and refused, by the provider
    state = (tmp_path / "state.json").read_text()
    for text in (cli.stdout, cli.stderr, state):
        assert BAD_TOKEN not in text


def test_a_password_still_works_beside_xoauth2(oauth_stack: tuple[MailStack, IdentityProvider]) -> None:
    """The stack's own check: with XOAUTH2 on, PLAIN still logs in, and a token is no password."""
    import imaplib
    import ssl

    stack, _ = oauth_stack
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    with imaplib.IMAP4_SSL("localhost", stack.imaps_port, ssl_context=context, timeout=10) as client:
        assert "AUTH=XOAUTH2" in client.capabilities
        client.login(stack.accounts["oauth"].address, "the-password-is-not-used")
    with imaplib.IMAP4_SSL("localhost", stack.imaps_port, ssl_context=context, timeout=10) as client, \
            pytest.raises(imaplib.IMAP4.error):
        client.login(stack.accounts["oauth"].address, GOOD_TOKEN)
