"""The test-mail contract alone, on raw headers and raw bounces: no network, milliseconds."""

from __future__ import annotations

from email.header import Header

import pytest

from mail_monitor.testmail import (
    FOREIGN_STALE_AFTER,
    INSTANCE_HEADER,
    TOKEN_HEADER,
    Bounce,
    ProbeHeaders,
    arrival_criteria,
    bounce_for,
    bounce_search_criteria,
    build_message,
    foreign_stale_after,
    is_probe,
    is_stale,
    new_token,
    probe_headers,
    search_criteria,
)

PREFIX = "[mail-monitor]"
TOKEN = "1763930000-0123456789abcdef"
OTHER = "1763930000-fedcba9876543210"


def headers(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def probe(token: str = TOKEN, subject: str | None = None, instance: str | None = "host-a") -> bytes:
    lines = [f"Subject: {subject if subject is not None else f'{PREFIX} self {token}'}",
             f"{TOKEN_HEADER}: {token}"]
    if instance is not None:
        lines.append(f"{INSTANCE_HEADER}: {instance}")
    return headers(*lines)


# -- composing ----------------------------------------------------------------------

def test_a_built_message_passes_the_guard_with_its_own_token_only():
    token = new_token()
    message = build_message(sender="a@example.test", recipient="b@example.test", subject_prefix=PREFIX,
                            route="to-gmail", token=token, instance="host-a")
    raw = message.as_bytes()
    assert is_probe(raw, PREFIX, token)
    assert not is_probe(raw, PREFIX, OTHER)
    assert probe_headers(raw, PREFIX) == ProbeHeaders(token, "host-a")
    assert message["Subject"] == f"{PREFIX} to-gmail {token}"
    assert message["Auto-Submitted"] == "auto-generated"


def test_a_non_ascii_instance_survives_the_round_trip():
    message = build_message(sender="a@example.test", recipient="b@example.test", subject_prefix=PREFIX,
                            route="r", token=TOKEN, instance="böx.example")
    assert probe_headers(message.as_bytes(), PREFIX) == ProbeHeaders(TOKEN, "böx.example")


# -- the client-side layer alone -------------------------------------------------------

@pytest.mark.parametrize("raw", [
    pytest.param(headers(f"Subject: Lunch {TOKEN}", f"{TOKEN_HEADER}: {TOKEN}"), id="header-without-prefix"),
    pytest.param(headers(f"Subject: Re: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}: {TOKEN}"), id="reply-to-a-probe"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}"), id="prefix-without-header"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}:"), id="empty-token"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}:   "), id="blank-token"),
    pytest.param(headers(f"Subject: {PREFIX} self abc", f"{TOKEN_HEADER}: abc"), id="malformed-token"),
    pytest.param(probe(subject=f"{PREFIX} self {OTHER}"), id="subject-names-another-token"),
    pytest.param(probe(subject=f"{PREFIX} {TOKEN}"), id="no-route-in-subject"),
    pytest.param(probe(subject=f"{PREFIX}self {TOKEN}"), id="prefix-glued-to-route"),
    pytest.param(probe(subject=f"[MAIL-MONITOR] self {TOKEN}"), id="prefix-in-another-case"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}: {TOKEN}",
                         f"{TOKEN_HEADER}: {TOKEN}"), id="token-header-twice"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}", f"Subject: {PREFIX} self {TOKEN}",
                         f"{TOKEN_HEADER}: {TOKEN}"), id="subject-twice"),
    pytest.param(headers(f"{TOKEN_HEADER}: {TOKEN}"), id="no-subject"),
    pytest.param(b"", id="nothing"),
])
def test_the_client_side_guard_rejects(raw):
    assert not is_probe(raw, PREFIX)
    assert probe_headers(raw, PREFIX) is None


def test_the_client_side_guard_accepts_encoded_and_folded_headers():
    encoded = Header(f"{PREFIX} self {TOKEN}", "utf-8").encode()
    assert encoded.startswith("=?utf-8?")
    assert is_probe(headers(f"Subject: {encoded}", f"{TOKEN_HEADER}: {TOKEN}"), PREFIX, TOKEN)
    folded = headers(f"Subject: {PREFIX}\r\n a-route-with-a-long-name\r\n\t{TOKEN}",
                     f"{TOKEN_HEADER}:\r\n {TOKEN}")
    assert is_probe(folded, PREFIX, TOKEN)
    # A probe of an older version, without the instance marker, is still a probe (a foreign one).
    assert probe_headers(probe(instance=None), PREFIX) == ProbeHeaders(TOKEN, None)


def test_a_probe_of_another_instance_is_a_probe_with_its_instance():
    assert probe_headers(probe(instance="host-b"), PREFIX) == ProbeHeaders(TOKEN, "host-b")
    assert probe_headers(headers(f"Subject: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}: {TOKEN}",
                                 f"{INSTANCE_HEADER}: a", f"{INSTANCE_HEADER}: b"), PREFIX) is None


# -- the server-side layer alone ---------------------------------------------------------

def test_the_server_side_search_asks_for_both_the_header_and_the_prefix():
    assert search_criteria(PREFIX) == ["HEADER", TOKEN_HEADER, "", "SUBJECT", PREFIX]
    assert search_criteria(PREFIX, TOKEN) == ["HEADER", TOKEN_HEADER, TOKEN, "SUBJECT", PREFIX]
    # The arrival is the token in the mail's own header; a bounce is the token in the text.
    assert arrival_criteria(TOKEN) == ["HEADER", TOKEN_HEADER, TOKEN]
    assert bounce_search_criteria(TOKEN) == ["TEXT", TOKEN]


# -- the stale sweep ------------------------------------------------------------------

@pytest.mark.parametrize(("instance", "age", "stale"), [
    ("host-a", 3599, False),  # our own, not old enough
    ("host-a", 3601, True),  # our own, stale after stale_after
    ("host-b", 3601, False),  # another monitor's: maybe still in flight
    ("host-b", 86399, False),
    ("host-b", 86401, True),
    (None, 3601, False),  # an older version's, without marker: like another instance's
    (None, 86401, True),
])
def test_the_sweep_waits_much_longer_for_other_instances(instance, age, stale):
    found = ProbeHeaders(TOKEN, instance)
    assert is_stale(found, age, instance="host-a", own_after=3600, foreign_after=86400) is stale


def test_without_an_instance_every_probe_is_foreign():
    assert not is_stale(ProbeHeaders(TOKEN, "host-a"), 3601, instance=None, own_after=3600, foreign_after=86400)


def test_the_foreign_age_is_a_day_or_24_times_stale_after():
    assert foreign_stale_after(3600) == FOREIGN_STALE_AFTER == 86400
    assert foreign_stale_after(7200) == 24 * 7200


# -- bounces ---------------------------------------------------------------------------

def postfix_dsn(returned: bytes, *, status: str = "5.1.1", returned_type: str = "text/rfc822-headers") -> bytes:
    """Shaped like Postfix's bounce(8) output."""
    return (
        b"From: MAILER-DAEMON@example.test (Mail Delivery System)\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"To: monitor@example.test\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="B1"\r\n\r\n'
        b"--B1\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not\r\nbe delivered.\r\n\r\n"
        b"--B1\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mail.example.test\r\nArrival-Date: Mon, 23 Nov 2026 20:00:00 +0000\r\n\r\n"
        b"Final-Recipient: rfc822; nobody@example.test\r\nOriginal-Recipient: rfc822;nobody@example.test\r\n"
        b"Action: failed\r\nStatus: " + status.encode() + b"\r\n"
        b"Diagnostic-Code: smtp; 550 " + status.encode() + b" <nobody@example.test>: User doesn't\r\n"
        b"    exist: nobody@example.test\r\n\r\n"
        b"--B1\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: "
        + returned_type.encode() + b"\r\n\r\n" + returned + b"\r\n--B1--\r\n"
    )


def test_a_postfix_dsn_for_our_probe_is_read_with_status_and_diagnostic():
    bounce = bounce_for(postfix_dsn(probe()), PREFIX, TOKEN, "host-a")
    assert bounce == Bounce(TOKEN, status="5.1.1", recipient="nobody@example.test", action="failed",
                            diagnostic="smtp; 550 5.1.1 <nobody@example.test>: User doesn't exist: "
                                       "nobody@example.test", attached=True)
    assert bounce.permanent
    assert bounce.describe() == ("bounced for nobody@example.test with status 5.1.1: smtp; 550 5.1.1 "
                                 "<nobody@example.test>: User doesn't exist: nobody@example.test")


def test_a_dsn_returning_the_whole_message_is_read_too():
    returned = probe() + b"This is an automated test message.\r\n"
    bounce = bounce_for(postfix_dsn(returned, status="4.4.1", returned_type="message/rfc822"), PREFIX, TOKEN)
    assert bounce is not None and bounce.status == "4.4.1" and not bounce.permanent


@pytest.mark.parametrize("raw", [
    pytest.param(postfix_dsn(probe(token=OTHER)), id="another-probe"),
    pytest.param(postfix_dsn(probe(subject=f"Hello {TOKEN}")), id="returned-without-prefix"),
    pytest.param(postfix_dsn(headers(f"Subject: {PREFIX} self {TOKEN}")), id="returned-without-header"),
    pytest.param(postfix_dsn(probe(instance="host-b")), id="another-instance"),
    pytest.param(postfix_dsn(probe(instance=None)), id="no-instance-marker"),
    pytest.param(postfix_dsn(b"", returned_type="text/plain"), id="no-returned-part"),
    pytest.param(headers(f"Subject: {PREFIX} self {TOKEN}", f"{TOKEN_HEADER}: {TOKEN}") + b"hi\r\n",
                 id="the-probe-itself"),
    pytest.param(headers("Subject: Lunch?") + f"Did you see {TOKEN}?\r\n".encode(), id="mentions-the-token"),
])
def test_only_a_bounce_returning_our_probe_is_ours(raw):
    assert bounce_for(raw, PREFIX, TOKEN, "host-a") is None


def test_a_plain_text_bounce_quoting_the_probe_is_ours():
    raw = headers("From: MAILER-DAEMON@far.example", "Subject: failure notice") + (
        b"Hi. This is the qmail-send program at far.example.\r\n"
        b"<nobody@far.example>:\r\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\r\n"
        b"Remote host said: 550 5.1.1 mailbox unavailable\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
    ) + probe() + b"This is an automated test message.\r\n"
    bounce = bounce_for(raw, PREFIX, TOKEN, "host-a")
    assert bounce is not None and bounce.status == "5.1.1"
    assert bounce.diagnostic == "550 5.1.1 mailbox unavailable"
    # It explains the failure, but text that merely quotes the probe is never deleted.
    assert not bounce.attached
    quoted_other = raw.replace(TOKEN.encode(), OTHER.encode())
    assert bounce_for(quoted_other, PREFIX, TOKEN, "host-a") is None
