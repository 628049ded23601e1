"""Every configured secret, in every form it takes on the wire, is scrubbed from any text."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from mail_monitor.config import Secret, load_config
from mail_monitor.redact import REDACTED, Scrubber, ScrubbingFilter, scrub_handlers

USER = "monitor@example.org"
PASSWORD = 'pa ss"wo\\rd&ü%'  # space, quote, backslash, URL-special and non-ASCII characters


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def scrub() -> Scrubber:
    return Scrubber([(USER, Secret(PASSWORD))])


@pytest.mark.parametrize(("name", "form"), [
    ("plain", PASSWORD),
    ("AUTH PLAIN", b64(f"\0{USER}\0{PASSWORD}")),
    ("AUTH PLAIN with authzid", b64(f"{USER}\0{USER}\0{PASSWORD}")),
    ("AUTH PLAIN unpadded", b64(f"\0{USER}\0{PASSWORD}").rstrip("=")),
    ("AUTH LOGIN", b64(PASSWORD)),
    ("IMAP quoted string", PASSWORD.replace("\\", "\\\\").replace('"', '\\"')),
    ("XOAUTH2", b64(f"user={USER}\x01auth=Bearer {PASSWORD}\x01\x01")),
    ("HTTP basic", b64(f"{USER}:{PASSWORD}")),
    ("URL-encoded", quote(PASSWORD, safe="")),
    ("URL-encoded form", quote_plus(PASSWORD, safe="")),
    ("URL-encoded lower-case hex", re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(PASSWORD, safe=""))),
    ("JSON", json.dumps(PASSWORD)[1:-1]),
    ("JSON ASCII", json.dumps(PASSWORD, ensure_ascii=True)[1:-1]),
    ("Python repr", repr(PASSWORD)[1:-1]),
    ("bytes repr", repr(PASSWORD.encode())[2:-1]),
])
def test_each_wire_form_is_scrubbed(scrub: Scrubber, name: str, form: str) -> None:
    text = f"server said: 535 5.7.8 {form} rejected"
    assert scrub(text) == f"server said: 535 5.7.8 {REDACTED} rejected", name


def test_echoed_imap_login(scrub: Scrubber) -> None:
    quoted = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    echo = f'NO [AUTHENTICATIONFAILED] LOGIN {USER} "{quoted}" failed'
    assert scrub(echo) == f'NO [AUTHENTICATIONFAILED] LOGIN {USER} "{REDACTED}" failed'


def test_everything_else_is_left_alone(scrub: Scrubber) -> None:
    text = "535 Authentication failed for monitor@example.org\nnext line"
    assert scrub(text) == text
    assert Scrubber()(f"{PASSWORD} stays without secrets") == f"{PASSWORD} stays without secrets"
    assert not Scrubber() and scrub


def test_longest_secret_wins() -> None:
    scrub = Scrubber([(None, "abc"), (None, "abcdef")])
    assert scrub("x abcdef y abc z") == f"x {REDACTED} y {REDACTED} z"


def test_scrub_data_and_add(scrub: Scrubber) -> None:
    data = {"error": f"LOGIN {PASSWORD}", "list": [PASSWORD, 3, None], "nested": {PASSWORD: (PASSWORD,)}}
    assert scrub.scrub_data(data) == {"error": f"LOGIN {REDACTED}", "list": [REDACTED, 3, None],
                                      "nested": {REDACTED: (REDACTED,)}}
    assert scrub("ya29.fresh-token") == "ya29.fresh-token"
    scrub.add([(USER, Secret("ya29.fresh-token"))])  # e.g. printed by oauth2_token_command during the run
    assert scrub("ya29.fresh-token " + PASSWORD) == f"{REDACTED} {REDACTED}"
    assert scrub(b64(f"user={USER}\x01auth=Bearer ya29.fresh-token\x01\x01")) == REDACTED


def test_config_scrubber_knows_every_secret(tmp_path: Path) -> None:
    secrets = {"pw": "account-password-1", "token": "oauth-token-2", "ntfy2": "ntfy-password-4",
               "hb": "heartbeat-token-5"}
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "c.toml"
    path.write_text(f"""
[accounts.a]
address = "a@example.org"
password_file = "{tmp_path / 'pw'}"
smtp = {{ host = "mail.example.org" }}
imap = {{ host = "mail.example.org", oauth2_token_file = "{tmp_path / 'token'}" }}
[accounts.b]
address = "b@example.org"
password_file = "{tmp_path / 'pw'}"
imap = {{ host = "mail.example.org" }}
[[routes]]
name = "r"
from = "a"
to = "b"
[alerts.ntfy]
topic = "t"
username = "alerts"
password_file = "{tmp_path / 'ntfy2'}"
[heartbeat]
url = "https://hc.example.org/x"
token_file = "{tmp_path / 'hb'}"
""")
    scrub = load_config(path).scrubber()
    for value in secrets.values():
        assert scrub(f"<{value}>") == f"<{REDACTED}>", value
    assert scrub(b64("\0a@example.org\0account-password-1")) == REDACTED
    assert scrub(b64("user=a@example.org\x01auth=Bearer oauth-token-2\x01\x01")) == REDACTED
    assert scrub(b64("alerts:ntfy-password-4")) == REDACTED


def test_logging_filter_scrubs_message_arguments_and_tracebacks(scrub: Scrubber) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_redact.filter")
    logger.addHandler(handler)
    logger.propagate = False
    scrub_handlers(scrub, logger)
    assert any(isinstance(f, ScrubbingFilter) for f in handler.filters)
    try:
        logger.warning("login %s failed: %r", USER, PASSWORD)
        logger.warning("AUTH PLAIN %s", b64(f"\0{USER}\0{PASSWORD}"))
        try:
            raise RuntimeError(f"server echoed {PASSWORD}")
        except RuntimeError:
            logger.exception("unexpected")
        logger.warning("stack", stack_info=True, extra={"note": PASSWORD})
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert PASSWORD not in output and b64(f"\0{USER}\0{PASSWORD}").rstrip("=") not in output
    assert repr(PASSWORD)[1:-1] not in output
    assert output.count(REDACTED) >= 3
    assert f"login {USER} failed" in output and "RuntimeError: server echoed <redacted>" in output


def test_scrubbing_is_fast_enough_for_every_message() -> None:
    scrub = Scrubber([(f"user{i}@example.org", f"password-number-{i}") for i in range(50)])
    text = "a fairly ordinary error message from a server " * 20
    for _ in range(2000):  # would take minutes if the pattern were rebuilt or backtracked per call
        assert scrub(text) == text


def test_config_scrubber_knows_the_ntfy_token(tmp_path: Path) -> None:
    from mail_monitor.config import parse_config, read_secrets

    (tmp_path / "tok").write_text("tk_ntfy-token-3\n")
    (tmp_path / "tok").chmod(0o600)
    data = {"accounts": {"a": {"address": "a@example.org", "password_file": str(tmp_path / "tok"),
                               "imap": {"host": "h"}, "smtp": {"host": "h"}}},
            "routes": [{"name": "r", "from": "a", "to": "a"}],
            "alerts": {"ntfy": {"topic": "t", "token_file": str(tmp_path / "tok")}}}
    config = read_secrets(parse_config(data, "x"))
    assert config.ntfy is not None and config.ntfy.token == Secret("tk_ntfy-token-3")
    assert (None, Secret("tk_ntfy-token-3")) in config.credentials()
    assert config.scrubber()("Authorization: Bearer tk_ntfy-token-3") == f"Authorization: Bearer {REDACTED}"
    assert parse_config(data, "x").scrubber()("tk_ntfy-token-3") == "tk_ntfy-token-3"  # nothing read yet
