"""The test-mail contract: what a probe looks like, and the rule that decides what is ours.

Everything the monitor ever deletes passes through this module's guard, in two layers:
the server-side search (``search_criteria``) narrows a mailbox down to candidates, and
the client-side check of the fetched headers (``is_probe``, ``bounce_for``) decides. A
mail is a probe only when it carries the token header with a well-formed token AND its
Subject is ``<prefix> <route> <token>`` with that same token. A bounce is ours only when
the message it returns carries such a probe's headers.

Instances: every probe names the monitor that sent it (``INSTANCE_HEADER``). The stale
sweep removes its own instance's leftovers after ``stale_after``; probes of another
instance, or of versions before the marker, only after ``foreign_stale_after``, so two
monitors sharing a mailbox never delete each other's mail in flight.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import formatdate

TOKEN_HEADER = "X-Mail-Monitor-Token"
INSTANCE_HEADER = "X-Mail-Monitor-Instance"
ROUTE_HEADER = "X-Mail-Monitor-Route"
# The headers the client-side guard needs, for a BODY.PEEK[HEADER.FIELDS (...)] fetch.
GUARD_FIELDS = ("SUBJECT", TOKEN_HEADER.upper(), INSTANCE_HEADER.upper())

# Unix time, a dash, 16 hex digits: what new_token makes (and every earlier version made).
_TOKEN = re.compile(r"[0-9]{9,12}-[0-9a-f]{16}")

# Probes of another instance (or without the marker) are swept only this old, and never
# younger than 24 x the sweeping instance's own stale_after: a day by default.
FOREIGN_STALE_AFTER = 86400.0
FOREIGN_STALE_FACTOR = 24

# A bounce is read from at most this many bytes of the message (a partial fetch): the
# report and the returned headers come first, the returned body is not needed.
BOUNCE_FETCH_BYTES = 65536


def new_token() -> str:
    """Unique per probe; starts with the send time so a glance at it tells its age."""
    return f"{int(time.time())}-{secrets.token_hex(8)}"


def subject(prefix: str, route: str, token: str) -> str:
    return f"{prefix} {route} {token}"


def foreign_stale_after(stale_after: float) -> float:
    """How old another instance's probe must be before this instance sweeps it."""
    return max(FOREIGN_STALE_AFTER, FOREIGN_STALE_FACTOR * stale_after)


def build_message(*, sender: str, recipient: str, subject_prefix: str, route: str,
                  token: str, instance: str) -> EmailMessage:
    """A well-formed, plainly automated message that spam filters have no reason to dislike."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject(subject_prefix, route, token)
    message["Date"] = formatdate(localtime=True)
    # Unique through the token, and short enough not to be folded onto a second line.
    message["Message-ID"] = f"<{token}.mail-monitor@{sender.rpartition('@')[2]}>"
    message[TOKEN_HEADER] = token
    message[INSTANCE_HEADER] = instance
    message[ROUTE_HEADER] = route
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    message.set_content(
        f"This is an automated test message from mail-monitor on {instance}.\n\n"
        f"It checks that mail sent from {sender} reaches {recipient} (route \"{route}\").\n"
        "The monitor deletes it as soon as it has seen it; you can delete it too.\n"
    )
    return message


# -- the server-side layer ------------------------------------------------------------

def search_criteria(prefix: str, token: str | None = None) -> list[str]:
    """IMAP SEARCH keys for candidate probes (all, or the one with ``token``).

    SEARCH matches substrings, case-insensitively: it only narrows down; ``is_probe``
    on the fetched headers decides.
    """
    return ["HEADER", TOKEN_HEADER, token or "", "SUBJECT", prefix]


def arrival_criteria(token: str) -> list[str]:
    """IMAP SEARCH keys for the probe's arrival: the token in the mail's own header.

    HEADER searches only the top-level header, so a bounce that quotes the probe (in
    its body or an attached part) never counts as the probe's arrival.
    """
    return ["HEADER", TOKEN_HEADER, token]


def bounce_search_criteria(token: str) -> list[str]:
    """IMAP SEARCH keys for candidate bounces of the probe ``token``: the token in the text.

    Not ``HEADER``: a bounce carries the probe's headers in its body, never its own.
    """
    return ["TEXT", token]


def gmail_search_criteria(prefix: str | None, token: str | None = None) -> list[str]:
    """The same candidates on Gmail, from its own index: ``X-GM-RAW`` with a Gmail query.

    Gmail answers HEADER searches for headers it does not index slowly or not at all; its
    query language matches words anywhere in the mail, so bounces quoting the token match
    too, and the fetched headers decide as everywhere else.
    """
    terms = []
    if prefix:
        terms.append('subject:"' + prefix.replace('"', " ") + '"')
    if token:
        terms.append(f'"{token}"')
    return ["X-GM-RAW", " ".join(terms)]


# -- the client-side layer ------------------------------------------------------------

@dataclass(frozen=True)
class ProbeHeaders:
    """The headers of a probe that passed the guard."""

    token: str
    instance: str | None  # None: sent by a version without the instance marker


def probe_headers(raw_headers: bytes | Message, prefix: str) -> ProbeHeaders | None:
    """The probe's token and instance if these headers are a probe's; else None."""
    headers = raw_headers if isinstance(raw_headers, Message) else BytesHeaderParser().parsebytes(raw_headers)
    tokens = headers.get_all(TOKEN_HEADER) or []
    subjects = headers.get_all("Subject") or []
    if len(tokens) != 1 or len(subjects) != 1:
        return None
    token = _text(tokens[0])
    if not _TOKEN.fullmatch(token):
        return None
    text, head = _text(subjects[0]), " ".join(prefix.split()) + " "
    if not head.strip() or not text.startswith(head) or not text.endswith(" " + token) \
            or len(text) <= len(head) + len(token) + 1:
        return None  # not "<prefix> <route> <token>" with this very token
    instances = headers.get_all(INSTANCE_HEADER) or []
    if len(instances) > 1:
        return None
    return ProbeHeaders(token, _text(instances[0]) if instances else None)


def is_probe(raw_headers: bytes | Message, prefix: str, token: str | None = None) -> bool:
    """The client-side guard of every deletion: these headers are a probe's (with ``token``)."""
    found = probe_headers(raw_headers, prefix)
    return found is not None and (token is None or found.token == token)


def is_stale(probe: ProbeHeaders, age: float, *, instance: str | None, own_after: float,
             foreign_after: float) -> bool:
    """Whether the sweep may remove a probe ``age`` seconds old.

    Probes of this ``instance`` after ``own_after``; any other probe (another instance,
    or no marker) only after ``foreign_after``. With no ``instance`` every probe counts
    as foreign.
    """
    own = instance is not None and probe.instance == instance
    return age > (own_after if own else foreign_after)


# -- bounces -------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounce:
    """A delivery failure report for one probe."""

    token: str
    status: str | None = None  # RFC 3463 code from the DSN, e.g. "5.1.1"
    diagnostic: str | None = None  # Diagnostic-Code, e.g. "smtp; 550 5.1.1 <x@y>: User unknown"
    recipient: str | None = None  # Final-Recipient, without its address type
    action: str | None = None  # "failed", "delayed", ...
    # The probe came back as a part of its own (message/rfc822, text/rfc822-headers), not
    # only quoted in the text: only then is the bounce the monitor's to delete.
    attached: bool = False

    @property
    def permanent(self) -> bool:
        return self.status is None or self.status.startswith("5")

    def describe(self) -> str:
        """One line for the person who gets paged."""
        parts = [f"bounced{' (' + self.action + ')' if self.action and self.action != 'failed' else ''}"]
        if self.recipient:
            parts.append(f"for {self.recipient}")
        if self.status:
            parts.append(f"with status {self.status}")
        text = " ".join(parts)
        if self.diagnostic:
            text += f": {self.diagnostic}"
        return text


_STATUS = re.compile(r"\b([245]\.[0-9]{1,3}\.[0-9]{1,3})\b")


def bounce_for(raw: bytes, prefix: str, token: str, instance: str | None = None) -> Bounce | None:
    """The bounce of the probe ``token`` if ``raw`` (a whole or partly fetched mail) is one.

    A DSN (multipart/report; report-type=delivery-status) or any message returning the
    probe in a message/rfc822 or text/rfc822-headers part; failing those, a plain-text
    bounce that quotes the probe's header block. Ours only when the returned headers
    pass ``is_probe`` for ``token`` and, when ``instance`` is given, name that instance.
    A quoted block explains a failure but is not ``attached``: such a mail is not deleted.
    """
    message = message_from_bytes(raw)
    attached = _attached_headers(message)
    returned = attached if attached is not None else _quoted_headers(message)
    if returned is None or not _ours(returned, prefix, token, instance):
        return None
    report = _delivery_status(message)
    if report is not None:
        return _bounce_from_report(token, report, attached=attached is not None)
    text = _plain_text(message)
    status = _STATUS.search(text)
    return Bounce(token, status=status.group(1) if status else None,
                  diagnostic=_first_smtp_reply(text), attached=attached is not None)


def _ours(headers: Message, prefix: str, token: str, instance: str | None) -> bool:
    found = probe_headers(headers, prefix)
    if found is None or found.token != token:
        return False
    return instance is None or found.instance == instance


def _attached_headers(message: Message) -> Message | None:
    """The headers of the original returned as a part of its own."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return BytesHeaderParser().parsebytes(raw)
    return None


def _quoted_headers(message: Message) -> Message | None:
    """A header block quoted in the text (qmail and friends): the lines around our token header."""
    if message.get_content_type() == "multipart/report":
        return None  # a report without a returned part: nothing proves it is ours
    lines = _plain_text(message).splitlines()
    for index, line in enumerate(lines):
        if line.lower().startswith(TOKEN_HEADER.lower() + ":"):
            start = index
            while start > 0 and _header_line(lines[start - 1]):
                start -= 1
            end = index + 1
            while end < len(lines) and _header_line(lines[end]):
                end += 1
            block = "\n".join(lines[start:end]) + "\n\n"
            return BytesHeaderParser().parsebytes(block.encode("utf-8", "replace"))
    return None


def _header_line(line: str) -> bool:
    return bool(line) and (line[0] in " \t" or re.match(r"[!-9;-~]+:", line) is not None)


def _delivery_status(message: Message) -> Message | None:
    """The per-recipient fields of a DSN (RFC 3464), the first failed one first."""
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() != "delivery-status":
        return None
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, str):  # a part the parser did not split: parse it here
            payload = [BytesHeaderParser().parsebytes(block.encode("utf-8", "replace"))
                       for block in re.split(r"\r?\n\r?\n", payload) if block.strip()]
        blocks = [block for block in payload if isinstance(block, Message)]
        recipients = [block for block in blocks[1:] if block.get("Action") or block.get("Status")]
        failed = [block for block in recipients if _text(block.get("Action", "")).lower() == "failed"]
        chosen = failed or recipients
        return chosen[0] if chosen else None
    return None


def _bounce_from_report(token: str, fields: Message, *, attached: bool) -> Bounce:
    recipient = _text(fields.get("Final-Recipient", "")) or None
    if recipient and ";" in recipient:
        recipient = recipient.split(";", 1)[1].strip()
    status = _STATUS.search(_text(fields.get("Status", "")))
    return Bounce(
        token,
        status=status.group(1) if status else None,
        diagnostic=_text(fields.get("Diagnostic-Code", "")) or None,
        recipient=recipient,
        action=_text(fields.get("Action", "")).lower() or None,
        attached=attached,
    )


def _plain_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _first_smtp_reply(text: str) -> str | None:
    match = re.search(r"\b[45][0-9]{2}[ -][^\n]*", text)
    return " ".join(match.group(0).split()) if match else None


def _text(value: object) -> str:
    """A header value decoded (RFC 2047) and unfolded, with runs of white space as one."""
    try:
        decoded = str(make_header(decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError):
        decoded = str(value)
    return " ".join(decoded.split())
