"""From one report mail (raw bytes) to the reports it carries.

A part is a report candidate by its content type, or, for the generic
``application/octet-stream`` that some receivers use, by its file name. What it
holds is then decided by its bytes (gzip, zip, XML or JSON), never by its name alone.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message

from mail_monitor.reports.archive import gunzip, is_gzip, is_zip, unzip
from mail_monitor.reports.dmarc import parse_dmarc
from mail_monitor.reports.model import InvalidReport, Limits, Report
from mail_monitor.reports.tlsrpt import parse_tlsrpt

REPORT_TYPES = frozenset({
    "application/gzip",
    "application/x-gzip",
    "application/zip",
    "application/x-zip",
    "application/x-zip-compressed",
    "application/xml",
    "text/xml",
    "application/json",
    "application/tlsrpt+json",  # RFC 8460 section 5.3
    "application/tlsrpt+gzip",
})
GENERIC_TYPES = frozenset({"application/octet-stream"})
REPORT_SUFFIXES = (".zip", ".gz", ".xml", ".json")
COMPRESSED_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/zip", "application/x-zip",
                              "application/x-zip-compressed", "application/tlsrpt+gzip"})


def parse_message(raw: bytes, limits: Limits | None = None) -> tuple[Report, ...]:
    """Every report in the mail, or InvalidReport naming why the mail is unreadable."""
    limits = limits or Limits()
    if len(raw) > limits.max_message_bytes:
        raise InvalidReport(f"mail of {len(raw)} bytes is over the {limits.max_message_bytes} byte limit")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        parts = _candidate_parts(message, limits)
    except RecursionError:
        raise InvalidReport("MIME structure nested too deeply") from None
    if not parts:
        raise InvalidReport("no report attachment (expected XML, JSON, .gz or .zip)")
    if len(parts) > limits.max_reports_per_message:
        raise InvalidReport(f"{len(parts)} report attachments (at most {limits.max_reports_per_message})")
    reports: list[Report] = []
    for part in parts:
        for payload in _payloads(part, limits):
            reports.append(_parse_payload(payload))
            if len(reports) > limits.max_reports_per_message:
                raise InvalidReport(f"more than {limits.max_reports_per_message} reports in one mail")
    return tuple(reports)


def _candidate_parts(message: Message, limits: Limits) -> list[Message]:
    found = []
    stack = [message]
    seen = 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > limits.max_mime_parts:
            raise InvalidReport(f"more than {limits.max_mime_parts} MIME parts")
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in reversed(payload) if isinstance(p, Message))
            continue
        content_type = part.get_content_type()
        filename = (part.get_filename() or "").lower()
        if content_type in REPORT_TYPES or (content_type in GENERIC_TYPES and filename.endswith(REPORT_SUFFIXES)):
            found.append(part)
    return found


def _payloads(part: Message, limits: Limits) -> list[bytes]:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or not data:
        raise InvalidReport("empty report attachment")
    compressed = is_gzip(data) or is_zip(data)
    bound = limits.max_attachment_bytes if compressed or part.get_content_type() in COMPRESSED_TYPES \
        else limits.max_report_bytes
    if len(data) > bound:
        raise InvalidReport(f"attachment of {len(data)} bytes is over the {bound} byte limit")
    if is_zip(data):
        return [content for _, content in unzip(data, limits)]
    if is_gzip(data):
        content = gunzip(data, limits)
        if is_gzip(content) or is_zip(content):
            raise InvalidReport("nested archive in gzip")
        return [content]
    if part.get_content_type() in COMPRESSED_TYPES:
        raise InvalidReport(f"attachment says {part.get_content_type()} but is not compressed")
    return [data]


def _parse_payload(data: bytes) -> Report:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return parse_dmarc(data)
    if head.startswith(b"{"):
        return parse_tlsrpt(data)
    raise InvalidReport("attachment is neither an XML aggregate report nor a JSON TLS report")
