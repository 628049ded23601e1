"""DMARC aggregate reports (RFC 7489 appendix C, and the namespaced draft 2.0 form).

XML is read with defusedxml and DTDs forbidden outright: a report never needs one, and
without a DTD there are no entities to expand and no external references to follow.
Element names are compared without their namespace, so both schema versions read alike.
"""

from __future__ import annotations

import datetime
import ipaddress
from xml.etree.ElementTree import Element, ParseError

from mail_monitor.reports.model import (
    MAX_COUNT,
    AuthResult,
    Disposition,
    DmarcRecord,
    DmarcReport,
    InvalidReport,
    PolicyPublished,
)


def parse_dmarc(xml: bytes) -> DmarcReport:
    root = _parse_xml(xml)
    if _local(root.tag) != "feedback":
        raise InvalidReport(f"XML root is <{_local(root.tag)[:40]}>, not <feedback>")
    meta = _required(root, "report_metadata")
    date_range = _required(meta, "date_range")
    published = _required(root, "policy_published")
    records = tuple(_record(r, i) for i, r in enumerate(_children(root, "record"), start=1))
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
        records=records,
        email=_text(meta, "email") or None,
    )


def _parse_xml(xml: bytes) -> Element:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(xml, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InvalidReport(f"XML refused: {_defused_reason(exc)}") from None
    except ParseError as exc:
        raise InvalidReport(f"malformed XML ({str(exc)[:80]})") from None
    except RecursionError:
        raise InvalidReport("XML nested too deeply") from None


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
        word = _text(evaluated, "disposition").lower() or "none"
        try:
            disposition = Disposition(word)
        except ValueError:
            raise InvalidReport(f"{where}: unknown disposition {word[:40]!r}") from None
        dkim_evaluated = _text(evaluated, "dkim").lower() or None
        spf_evaluated = _text(evaluated, "spf").lower() or None
    identifiers = _child(element, "identifiers")
    auth = _child(element, "auth_results")
    return DmarcRecord(
        source_ip=source_ip,
        count=count,
        disposition=disposition,
        dkim_evaluated=dkim_evaluated,
        spf_evaluated=spf_evaluated,
        header_from=_text(identifiers, "header_from").lower() if identifiers is not None else "",
        envelope_from=(_text(identifiers, "envelope_from").lower() or None) if identifiers is not None else None,
        dkim=tuple(_auth(a, "selector") for a in _children(auth, "dkim")) if auth is not None else (),
        spf=tuple(_auth(a, "scope") for a in _children(auth, "spf")) if auth is not None else (),
    )


def _auth(element: Element, extra: str) -> AuthResult:
    value = _text(element, extra) or None
    return AuthResult(
        domain=_text(element, "domain").lower(),
        result=_text(element, "result").lower(),
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
    text = (child.text or "").strip() if child is not None else ""
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
