"""Gmail as a provider, against a Gmail-like IMAP stand-in on loopback (tests/gmail_server.py).

Nothing here can run Gmail itself: the stand-in keeps what the monitor depends on
(X-GM-RAW, the [Gmail] folders, labels: an expunge in INBOX only archives) and records
every command, so the tests assert what the monitor said to "Gmail".
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_monitor.config import ImapEndpoint, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.probes.imap import ImapLoginError, ImapSession, Sighting
from mail_monitor.testmail import build_message, new_token
from tests.conftest import run_cli
from tests.gmail_server import ALL, INBOX, SPAM, TRASH, FakeGmail

PREFIX = "[mail-monitor]"
USER = "someone@gmail.com"


@pytest.fixture
def gmail() -> Iterator[FakeGmail]:
    server = FakeGmail(username=USER, token="ya29.good-token")
    yield server
    server.close()


def probe(token: str, route: str = "to-gmail") -> bytes:
    return build_message(sender="monitor@example.org", recipient=USER, subject_prefix=PREFIX, route=route,
                         token=token, instance="mx").as_bytes()


def quoting(token: str) -> bytes:
    """Not a probe: a mail whose text (not its headers) carries the token, like a forward."""
    return (f"From: friend@example.com\r\nTo: {USER}\r\nSubject: {PREFIX} look at this\r\n\r\n"
            f"X-Mail-Monitor-Token: {token}\r\nI got your test mail {token}\r\n").encode()


def session(gmail: FakeGmail, provider: str = "gmail") -> ImapSession:
    endpoint = ImapEndpoint("127.0.0.1", gmail.port, "none", allow_plaintext=True, provider=provider)  # type: ignore[arg-type]
    imap = ImapSession(endpoint, Deadline(20.0, 5.0))
    imap.login_oauth2(USER, Secret("ya29.good-token"))
    return imap


def commands(gmail: FakeGmail, word: str) -> list[str]:
    return [c.partition(" ")[2] for c in gmail.commands if word in c.upper()]


def test_the_wait_searches_with_x_gm_raw_and_watches_spam_on_its_own(gmail: FakeGmail) -> None:
    token = new_token()
    imap = session(gmail)
    imap.prepare([])  # no extra_folders configured: [Gmail]/Spam is watched anyway
    assert imap.folders == [INBOX, SPAM]
    gmail.deliver(quoting(token))  # matches Gmail's search for the token, but is not the probe
    spam = gmail.deliver(probe(token), SPAM)
    found = imap.wait_for(token, time.monotonic(), 10.0)
    imap.close()
    assert isinstance(found, Sighting) and found.folder == SPAM and found.uid == spam.uids[SPAM]
    searches = commands(gmail, "SEARCH")
    assert searches and all("X-GM-RAW" in s for s in searches)
    assert any(f'X-GM-RAW "\\"{token}\\""' in s for s in searches)
    assert not any("HEADER" in s for s in searches)  # the stand-in would refuse it anyway
    assert any('STATUS "[Gmail]/Spam"' in c for c in gmail.commands)


def test_a_mail_quoting_the_token_in_inbox_is_not_taken_for_the_probe(gmail: FakeGmail) -> None:
    token = new_token()
    imap = session(gmail)
    imap.prepare([])
    gmail.deliver(quoting(token))
    assert imap.wait_for(token, time.monotonic(), 0.6) is None
    imap.close()


def test_deleting_moves_our_probe_to_trash_and_expunges_it_there(gmail: FakeGmail) -> None:
    token = new_token()
    ours = gmail.deliver(probe(token))
    other = gmail.deliver(quoting(token))  # in INBOX too, and offered for deletion: never touched
    trashed = gmail.deliver(quoting(token), TRASH)  # the user's own mail in Trash, quoting the token
    ours_uid = ours.uids[INBOX]
    imap = session(gmail)
    gmail.commands.clear()
    deleted = imap.delete_own(INBOX, [ours_uid, other.uids[INBOX]], PREFIX)
    imap.close()
    assert deleted == 1
    assert ours not in gmail.mails  # gone: not in INBOX, not in All Mail, not in Trash
    assert gmail.in_folder(INBOX) == [other] and other in gmail.in_folder(ALL)
    assert gmail.in_folder(TRASH) == [trashed]
    moves = commands(gmail, " MOVE ")
    assert len(moves) == 1 and moves[0] == f'UID MOVE {ours_uid} "{TRASH}"'
    trash_expunges = commands(gmail, "EXPUNGE")
    assert len(trash_expunges) == 1
    said = [c.partition(" ")[2] for c in gmail.commands if "CAPABILITY" not in c]
    kinds = [" ".join(c.split()[:2]) if c.startswith("UID") else c.split()[0] for c in said]
    # Guard in INBOX, move, then in Trash: search by the token, guard again, expunge just that.
    assert kinds == ["SELECT", "UID FETCH", "UID MOVE", "SELECT", "UID SEARCH", "UID FETCH", "UID STORE",
                     "UID EXPUNGE", "LOGOUT"]
    assert said[3] == f'SELECT "{TRASH}"' and token in said[4]


def test_a_plain_expunge_on_gmail_would_only_archive(gmail: FakeGmail) -> None:
    """Why the provider matters: the standard delete leaves the probe in All Mail."""
    token = new_token()
    ours = gmail.deliver(probe(token))
    imap = session(gmail, provider="default")
    assert imap.delete_own(INBOX, [ours.uids[INBOX]], PREFIX) == 1
    imap.close()
    assert gmail.in_folder(INBOX) == [] and gmail.in_folder(ALL) == [ours]


def test_the_stale_sweep_finds_old_probes_with_x_gm_raw(gmail: FakeGmail) -> None:
    old = gmail.deliver(probe("1600000000-0123456789abcdef"))
    old.arrived = time.time() - 7200
    gmail.deliver(probe(new_token()))  # young: stays
    gmail.deliver(quoting("1600000000-0123456789abcdef"))  # old text, not a probe
    imap = session(gmail)
    stale = imap.find_stale(INBOX, PREFIX, older_than=3600, window=86400)
    imap.close()
    assert stale == [old.uids[INBOX]]
    assert any('X-GM-RAW "subject:\\"[mail-monitor]\\""' in s for s in commands(gmail, "SEARCH"))


def test_xoauth2_with_a_bad_token_is_refused_with_gmails_status(gmail: FakeGmail) -> None:
    endpoint = ImapEndpoint("127.0.0.1", gmail.port, "none", allow_plaintext=True, provider="gmail")
    imap = ImapSession(endpoint, Deadline(20.0, 5.0))
    with pytest.raises(ImapLoginError) as refused:
        imap.login_oauth2(USER, Secret("ya29.expired"))
    imap.close()
    assert str(refused.value) == ("XOAUTH2 login refused: [AUTHENTICATIONFAILED] Invalid credentials (Failure) "
                                  "(OAuth2 status: 400)")
    # The error challenge was answered with an empty line, not with the token again.
    assert gmail.sasl == [base64.b64encode(f"user={USER}\x01auth=Bearer ya29.expired\x01\x01".encode()), b""]


def test_a_token_a_command_printed_never_shows_even_when_the_server_echoes_it(tmp_path: Path) -> None:
    """Through the real CLI: the token exists only in the command's output, and Gmail echoes it."""
    gmail = FakeGmail(username=USER, token="ya29.the-right-one", echo=True)
    try:
        leaked = "ya29.printed-by-the-command"
        command = tmp_path / "token.py"
        command.write_text(f"print({leaked!r})\n")
        config = tmp_path / "config.toml"
        config.write_text(f"""
[monitor]
deadline = "20s"
[accounts.gmail]
address = "{USER}"
[accounts.gmail.smtp]
host = "127.0.0.1"
port = 9
tls = "none"
allow_plaintext = true
oauth2_token_command = ["{sys.executable}", "{command}"]
[accounts.gmail.imap]
host = "127.0.0.1"
port = {gmail.port}
tls = "none"
allow_plaintext = true
provider = "gmail"
oauth2_token_command = ["{sys.executable}", "{command}"]
[[routes]]
name = "gmail"
from = "gmail"
to = "gmail"
""")
        cli = run_cli("-vv", "run", "--config", str(config), "--format", "json", "--no-state")
    finally:
        gmail.close()
    assert cli.returncode == 2, cli.stderr
    report = json.loads(cli.stdout)
    imap_auth = report["routes"][0]["checks"]["imap_auth"]
    assert "Invalid credentials for <redacted>" in imap_auth["message"]
    assert leaked not in cli.stdout and leaked not in cli.stderr
    assert any(leaked in c for c in gmail.commands) is False  # sent base64-encoded only, as SASL does


def test_a_bounce_is_found_and_deleted_through_trash_with_its_own_guard(gmail: FakeGmail) -> None:
    from tests.test_testmail import postfix_dsn

    token = new_token()
    ours = probe(token)
    bounce = gmail.deliver(postfix_dsn(ours.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n") + b"\r\n"))
    imap = session(gmail)
    found = imap.find_bounce(token, PREFIX, instance="mx")
    assert found is not None and found[0] == bounce.uids[INBOX] and found[1].status == "5.1.1"
    other = gmail.deliver(postfix_dsn(probe(new_token()).split(b"\n\n", 1)[0]))  # another probe's bounce
    assert not imap.delete_bounce(other.uids[INBOX], token, PREFIX, instance="mx")
    assert imap.delete_bounce(bounce.uids[INBOX], token, PREFIX, instance="mx")
    imap.close()
    assert bounce not in gmail.mails and other in gmail.in_folder(INBOX)
    assert len(commands(gmail, " MOVE ")) == 1


def test_an_async_collection_finds_earlier_probes_in_spam(gmail: FakeGmail) -> None:
    token = new_token()
    sent = time.time()
    mail = gmail.deliver(probe(token), SPAM)
    imap = session(gmail)
    imap.prepare([])
    arrived = imap.find_tokens([token, new_token()], PREFIX, since=sent - 60)
    imap.close()
    assert list(arrived) == [token] and arrived[token].folder == SPAM and arrived[token].uid == mail.uids[SPAM]
    assert all("X-GM-RAW" in s for s in commands(gmail, "SEARCH"))
