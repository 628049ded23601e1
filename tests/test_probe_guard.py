"""The probe guard and bounces on the real Postfix + Dovecot: each layer alone, then together."""

from __future__ import annotations

import imaplib
import time
from collections.abc import Iterator

import pytest
from mailstack import MailStack

from mail_monitor.config import Endpoint, ImapEndpoint, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.probes.imap import Bounced, ImapLoginError, ImapSession
from mail_monitor.probes.smtp import SmtpSession
from mail_monitor.testmail import (
    INSTANCE_HEADER,
    TOKEN_HEADER,
    arrival_criteria,
    bounce_search_criteria,
    build_message,
    new_token,
    search_criteria,
)

pytestmark = pytest.mark.mailstack

PREFIX = "[mail-monitor]"
USERS = {"guarded": "guarded-secret-5", "bouncer": "bouncer-secret-6"}


def token(n: int) -> str:
    return f"1763900000-{n:016x}"


@pytest.fixture(scope="module")
def users(stack: MailStack) -> dict[str, str]:
    for user, password in USERS.items():
        if user not in stack.accounts:
            stack.add_user(user, password)
    # Dovecot looks at its passwd-file at most once a second: wait until it has seen ours.
    give_up = time.monotonic() + 10
    for user in USERS:
        while True:
            try:
                open_imap(stack, user).close()
                break
            except ImapLoginError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.2)
    return {user: stack.accounts[user].address for user in USERS}


def open_imap(stack: MailStack, user: str) -> ImapSession:
    session = ImapSession(ImapEndpoint(stack.host, stack.imaps_port, "implicit", stack.ca.ca_file),
                          Deadline(60))
    session.login(stack.accounts[user].address, Secret(USERS[user]))
    return session


@pytest.fixture
def guarded(stack: MailStack, users: dict[str, str]) -> Iterator[ImapSession]:
    """A session on an empty INBOX of its own."""
    session = open_imap(stack, "guarded")
    session.prepare([])
    uids = session.client.search(["ALL"])
    if uids:
        session.client.delete_messages(uids)
        session.client.expunge()
    try:
        yield session
    finally:
        session.close()


def append(session: ImapSession, subject: str, tok: str | None, *, instance: str | None = None,
           age: float = 0.0) -> int:
    lines = ["From: someone@example.test", "To: guarded@example.test", f"Subject: {subject}"]
    if tok is not None:
        lines.append(f"{TOKEN_HEADER}: {tok}")
    if instance is not None:
        lines.append(f"{INSTANCE_HEADER}: {instance}")
    raw = ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()
    when = imaplib.Time2Internaldate(time.time() - age)
    session.client._imap.append("INBOX", "", when, raw)
    return max(session.client.search(["ALL"]))


def test_the_server_side_search_alone_wants_the_header_and_the_prefix(guarded):
    probe = append(guarded, f"{PREFIX} self {token(1)}", token(1))
    append(guarded, f"Lunch {token(2)}", token(2))  # header, no prefix
    append(guarded, f"{PREFIX} self {token(3)}", None)  # prefix, no header
    append(guarded, "Lunch", None)
    shouting = append(guarded, f"[MAIL-MONITOR] self {token(4)}", token(4))
    found = guarded.client.search(search_criteria(PREFIX))
    # SEARCH is case-insensitive: it narrows down; the client-side check must decide.
    assert sorted(found) == [probe, shouting]
    assert guarded.client.search(search_criteria(PREFIX, token(1))) == [probe]


def test_the_client_side_guard_alone_deletes_only_probes(guarded):
    probe = append(guarded, f"{PREFIX} self {token(1)}", token(1))
    others = [append(guarded, f"Lunch {token(2)}", token(2)),
              append(guarded, f"{PREFIX} self {token(3)}", None),
              append(guarded, f"[MAIL-MONITOR] self {token(4)}", token(4)),
              append(guarded, f"{PREFIX} self {token(5)}", "")]
    # Every UID handed straight to delete_own, no search first: the guard alone decides.
    assert guarded.delete_own("INBOX", [probe, *others], PREFIX, token(9)) == 0
    assert guarded.delete_own("INBOX", [probe, *others], PREFIX) == 1
    assert sorted(guarded.client.search(["ALL"])) == sorted(others)


def test_the_stale_sweep_leaves_other_instances_in_flight_mail_alone(guarded):
    hour, day = 3600.0, 86400.0
    mine_old = append(guarded, f"{PREFIX} a {token(1)}", token(1), instance="host-a", age=2 * hour)
    append(guarded, f"{PREFIX} a {token(2)}", token(2), instance="host-a", age=60)
    theirs_young = append(guarded, f"{PREFIX} b {token(3)}", token(3), instance="host-b", age=2 * hour)
    unmarked_young = append(guarded, f"{PREFIX} b {token(4)}", token(4), age=2 * hour)
    theirs_old = append(guarded, f"{PREFIX} b {token(5)}", token(5), instance="host-b", age=2 * day)
    unmarked_old = append(guarded, f"{PREFIX} b {token(6)}", token(6), age=2 * day)
    append(guarded, f"Lunch {token(7)}", token(7), instance="host-a", age=2 * day)
    stale = guarded.find_stale("INBOX", PREFIX, hour, 7 * day, instance="host-a", foreign_older_than=day)
    assert sorted(stale) == sorted([mine_old, theirs_old, unmarked_old])
    # Called as before instance markers existed: every probe after older_than.
    legacy = guarded.find_stale("INBOX", PREFIX, hour, 7 * day)
    assert sorted(legacy) == sorted([mine_old, theirs_young, unmarked_young, theirs_old, unmarked_old])


def test_a_real_bounce_is_found_never_taken_for_the_probe_and_deleted_by_the_guard(stack, users):
    imap = open_imap(stack, "bouncer")
    imap.prepare([])
    smtp = SmtpSession(Endpoint(stack.host, stack.submission_port, "starttls", stack.ca.ca_file),
                       Deadline(60), "test-host")
    tok = new_token()
    try:
        smtp.login(users["bouncer"], Secret(USERS["bouncer"]))
        message = build_message(sender=users["bouncer"], recipient="nobody-here@example.test",
                                subject_prefix=PREFIX, route="lost", token=tok, instance="host-a")
        sent = smtp.send(message, users["bouncer"], "nobody-here@example.test")
        smtp.close()
        # The wait on the sender's mailbox ends with the bounce, not with an arrival.
        waited = imap.wait_for_probe_or_bounce(tok, sent, 30.0, prefix=PREFIX, instance="host-a")
        assert isinstance(waited, Bounced), waited
        found = imap.find_bounce(tok, PREFIX, instance="host-a")
        assert found is not None and found == (waited.uid, waited.bounce)
        uid, bounce = found
        assert bounce.token == tok and bounce.status == "5.1.1" and bounce.action == "failed"
        assert bounce.recipient == "nobody-here@example.test"
        assert bounce.diagnostic is not None and "550 5.1.1" in bounce.diagnostic
        # The bounce quotes the probe's headers: the wait must still not count it as the arrival,
        # neither its search alone nor the wait as a whole.
        assert imap.client.search(bounce_search_criteria(tok)) == [uid]
        assert imap.client.search(arrival_criteria(tok)) == []
        assert imap.wait_for(tok, sent, timeout=2.0) is None
        # Neither another instance's guard nor another token's may delete it; ours does.
        assert not imap.delete_bounce(uid, tok, PREFIX, instance="host-b")
        assert not imap.delete_bounce(uid, new_token(), PREFIX, instance="host-a")
        assert not imap.delete_own("INBOX", [uid], PREFIX)  # a bounce is not a probe
        assert imap.client.search(["UID", str(uid)]) == [uid]
        assert imap.delete_bounce(uid, tok, PREFIX, instance="host-a")
        assert imap.client.search(["UID", str(uid)]) == []
        assert imap.find_bounce(tok, PREFIX, instance="host-a") is None
    finally:
        imap.close()


def test_a_bounce_that_only_quotes_the_probe_in_its_text_explains_but_is_never_deleted(guarded):
    tok = token(8)
    probe = build_message(sender="guarded@example.test", recipient="nobody@far.example", subject_prefix=PREFIX,
                          route="self", token=tok, instance="host-a")
    # qmail's format: the original pasted below a line of text, no part of its own. A person
    # forwarding the probe inline looks the same: the spec lets only returned parts be deleted.
    raw = (b"From: MAILER-DAEMON@far.example\r\nTo: guarded@example.test\r\nSubject: failure notice\r\n\r\n"
           b"Hi. This is the qmail-send program at far.example.\r\n<nobody@far.example>:\r\n"
           b"Remote host said: 550 5.1.1 mailbox unavailable\r\n\r\n"
           b"--- Below this line is a copy of the message.\r\n\r\n") + probe.as_bytes()
    guarded.client._imap.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
    [uid] = guarded.client.search(["ALL"])
    found = guarded.find_bounce(tok, PREFIX, instance="host-a")
    assert found is not None and found[0] == uid and found[1].status == "5.1.1" and not found[1].attached
    assert not guarded.delete_bounce(uid, tok, PREFIX, instance="host-a")
    assert guarded.client.search(["ALL"]) == [uid]
