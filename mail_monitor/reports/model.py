"""What a receiver's report says, once read: frozen dataclasses, and the bounds on reading one."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import ClassVar

KIB = 1024
MIB = 1024 * KIB
MAX_COUNT = 2**53  # the largest count a float metric still holds exactly


MAX_TEXT = 255  # any one value read from a report: names, ids, domains (DNS names stop at 253)


class InvalidReport(ValueError):
    """A report that cannot be read: malformed, hostile or over a bound.

    ``reason`` is one short line for output and logs; it never carries a traceback or
    the report's content beyond a name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def single_line(text: str, where: str) -> str:
    """A report's value as it may reach metric labels, the state and alerts: one printable line, bounded."""
    if len(text) > 4 * MAX_TEXT:
        raise InvalidReport(f"{where}: longer than {MAX_TEXT} characters")
    clean = "".join(c for c in " ".join(text.split()) if c.isprintable())
    if len(clean) > MAX_TEXT:
        raise InvalidReport(f"{where}: longer than {MAX_TEXT} characters")
    return clean


@dataclass(frozen=True)
class Limits:
    """Hard bounds on one report mail. Real reports are kilobytes; a bomb is what exceeds these.

    A report grows with the number of distinct sending IPs, not with mail volume: a
    self-hosted domain's reports are a few KiB. Reading costs about 1 s of CPU and 20 MiB
    of memory per 8 MiB of XML (30,000 records), which bounds one hostile mail's cost.
    """

    max_message_bytes: int = 10 * MIB  # whole mail, RFC822.SIZE; larger ones are not fetched
    max_attachment_bytes: int = 5 * MIB  # one compressed attachment
    max_report_bytes: int = 8 * MIB  # one report after decompression
    max_ratio: int = 100  # decompressed / compressed, enforced once past RATIO_GRACE bytes
    max_zip_members: int = 4
    max_reports_per_message: int = 8
    max_mime_parts: int = 64


RATIO_GRACE = 1 * MIB  # small outputs may compress as well as they like


class Disposition(enum.StrEnum):
    """What the receiver did with the mail (RFC 7489 ``policy_evaluated/disposition``)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True)
class PolicyPublished:
    """The sender's DMARC record as the receiver saw it."""

    domain: str
    adkim: str = "r"
    aspf: str = "r"
    p: str = "none"
    sp: str | None = None
    pct: int = 100


@dataclass(frozen=True)
class AuthResult:
    """One raw DKIM or SPF verdict of ``auth_results``, before DMARC alignment."""

    domain: str
    result: str
    selector: str | None = None  # DKIM only
    scope: str | None = None  # SPF only: "mfrom" or "helo"


@dataclass(frozen=True)
class DmarcRecord:
    """One row: ``count`` mails from ``source_ip`` that the receiver evaluated alike."""

    source_ip: str
    count: int
    disposition: Disposition
    dkim_evaluated: str | None  # policy_evaluated/dkim: "pass" means DKIM passed *and* aligned
    spf_evaluated: str | None  # policy_evaluated/spf: "pass" means SPF passed *and* aligned
    header_from: str
    dkim: tuple[AuthResult, ...] = ()
    spf: tuple[AuthResult, ...] = ()
    envelope_from: str | None = None


@dataclass(frozen=True)
class DmarcReport:
    """An aggregate report (RFC 7489 appendix C)."""

    reporter: str  # report_metadata/org_name
    report_id: str
    begin: datetime.datetime
    end: datetime.datetime
    policy: PolicyPublished
    records: tuple[DmarcRecord, ...]
    email: str | None = None

    kind: ClassVar[str] = "dmarc"


@dataclass(frozen=True)
class TlsFailure:
    """One ``failure-details`` entry of a TLS-RPT policy."""

    result_type: str
    sessions: int
    receiving_mx_hostname: str | None = None
    sending_mta_ip: str | None = None


@dataclass(frozen=True)
class TlsPolicy:
    """One policy's summary in a TLS-RPT report (RFC 8460 section 4.4)."""

    policy_type: str  # "sts", "tlsa" or "no-policy-found"
    policy_domain: str
    successful_sessions: int
    failed_sessions: int
    failures: tuple[TlsFailure, ...] = ()


@dataclass(frozen=True)
class TlsReport:
    """A TLS-RPT report (RFC 8460)."""

    reporter: str  # organization-name
    report_id: str
    begin: datetime.datetime
    end: datetime.datetime
    policies: tuple[TlsPolicy, ...]
    contact: str | None = None

    kind: ClassVar[str] = "tlsrpt"


Report = DmarcReport | TlsReport
