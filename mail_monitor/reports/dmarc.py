"""DMARC aggregate reports (RFC 7489 appendix C, and the namespaced draft 2.0 form).

XML is read with defusedxml and DTDs forbidden outright: a report never needs one, and
without a DTD there are no entities to expand and no external references to follow.
Element names are compared without their namespace, so both schema versions read alike.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
from collections.abc import Iterator
from xml.etree.ElementTree import Element, ParseError

from mail_monitor.reports.model import (
    MAX_COUNT,
    AuthResult,
    Disposition,
    DmarcRecord,
    DmarcReport,
    InvalidReport,
    PolicyPublished,
    single_line,
)


def parse_dmarc(xml: bytes) -> DmarcReport:
    """Read the report as a stream: each record is converted and dropped from the tree at once,
    so memory holds the records, never the whole document's elements."""
    root: Element | None = None
    meta = published = None
    records: list[DmarcRecord] = []
    depth = 0
    for event, element in _events(xml):
        if event == "start":
            depth += 1
            if root is None:
                root = element
                if _local(root.tag) != "feedback":
                    raise InvalidReport(f"XML root is <{_local(root.tag)[:40]}>, not <feedback>")
            continue
        if depth == 2 and root is not None:  # a child of <feedback> is complete
            name = _local(element.tag)
            if name == "record":
                records.append(_record(element, len(records) + 1))
                root.remove(element)
            elif name == "report_metadata":
                meta = element
            elif name == "policy_published":
                published = element
        depth -= 1
    if meta is None:
        raise InvalidReport("<report_metadata> missing in <feedback>")
    if published is None:
        raise InvalidReport("<policy_published> missing in <feedback>")
    date_range = _required(meta, "date_range")
    return DmarcReport(
        reporter=_text(meta, "org_name", required=True),
        report_id=_text(meta, "report_id", required=True),
        begin=_timestamp(date_range, "begin"),
        end=_timestamp(date_range, "end"),
        policy=PolicyPublished(
            domain=_text(published, "domain", required=True).lower(),
            adkim=_text(published, "adkim") or "r",
            aspf=_text(published, "aspf") or "r",
            p=_text(published, "p") or "none",
            sp=_text(published, "sp") or None,
            pct=_count(published, "pct", default=100, where="policy_published/pct"),
        ),
        records=tuple(records),
        email=_text(meta, "email") or None,
    )


def _events(xml: bytes) -> Iterator[tuple[str, Element]]:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import iterparse

    try:
        yield from iterparse(io.BytesIO(xml), events=("start", "end"), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InvalidReport(f"XML refused: {_defused_reason(exc)}") from None
    except ParseError as exc:
        raise InvalidReport(f"malformed XML ({str(exc)[:80]})") from None


def _record(element: Element, index: int) -> DmarcRecord:
    where = f"record {index}"
    row = _required(element, "row", where)
    source_ip = _text(row, "source_ip", required=True, where=where)
    try:
        ipaddress.ip_address(source_ip)
    except ValueError:
        raise InvalidReport(f"{where}: source_ip {source_ip[:60]!r} is not an IP address") from None
    count = _count(row, "count", default=1, where=f"{where}/count")
    evaluated = _child(row, "policy_evaluated")
    disposition = Disposition.NONE
    dkim_evaluated = spf_evaluated = None
    if evaluated is not None:
        word = _text(evaluated, "disposition", where=where).lower() or "none"
        try:
            disposition = Disposition(word)
        except ValueError:
            raise InvalidReport(f"{where}: unknown disposition {word[:40]!r}") from None
        dkim_evaluated = _text(evaluated, "dkim", where=where).lower() or None
        spf_evaluated = _text(evaluated, "spf", where=where).lower() or None
    identifiers = _child(element, "identifiers")
    auth = _child(element, "auth_results")
    return DmarcRecord(
        source_ip=source_ip,
        count=count,
        disposition=disposition,
        dkim_evaluated=dkim_evaluated,
        spf_evaluated=spf_evaluated,
        header_from=_text(identifiers, "header_from", where=where).lower() if identifiers is not None else "",
        envelope_from=(_text(identifiers, "envelope_from", where=where).lower() or None)
        if identifiers is not None else None,
        dkim=tuple(_auth(a, "selector", where) for a in _children(auth, "dkim")) if auth is not None else (),
        spf=tuple(_auth(a, "scope", where) for a in _children(auth, "spf")) if auth is not None else (),
    )


def _auth(element: Element, extra: str, where: str) -> AuthResult:
    value = _text(element, extra, where=where) or None
    return AuthResult(
        domain=_text(element, "domain", where=where).lower(),
        result=_text(element, "result", where=where).lower(),
        selector=value if extra == "selector" else None,
        scope=value if extra == "scope" else None,
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c.tag) == name]


def _child(element: Element, name: str) -> Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _required(element: Element, name: str, where: str = "") -> Element:
    child = _child(element, name)
    if child is None:
        raise InvalidReport(f"{where + ': ' if where else ''}<{name}> missing in <{_local(element.tag)}>")
    return child


def _text(element: Element, name: str, *, required: bool = False, where: str = "") -> str:
    child = _child(element, name)
    text = single_line(child.text or "", f"{where + ': ' if where else ''}<{name}>") if child is not None else ""
    if required and not text:
        raise InvalidReport(f"{where + ': ' if where else ''}<{name}> missing or empty in <{_local(element.tag)}>")
    return text


def _int(element: Element, name: str, *, where: str) -> int | None:
    text = _text(element, name)
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 16 or int(text) > MAX_COUNT:
        raise InvalidReport(f"{where}: {text[:40]!r} is not a count")
    return int(text)


def _count(element: Element, name: str, *, default: int, where: str) -> int:
    value = _int(element, name, where=where)
    return default if value is None else value


def _timestamp(element: Element, name: str) -> datetime.datetime:
    value = _int(element, name, where=f"date_range/{name}")
    if value is None:
        raise InvalidReport(f"<{name}> missing in <date_range>")
    try:
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidReport(f"date_range/{name}: {value} is out of range") from None


def _defused_reason(exc: Exception) -> str:
    names = {"DTDForbidden": "a DTD", "EntitiesForbidden": "entity declarations",
             "ExternalReferenceForbidden": "an external reference"}
    return f"contains {names.get(type(exc).__name__, type(exc).__name__)}"
