"""Result types shared by the probe verdicts, the DNS posture checks and the blocklist check."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mail_monitor.results import Outcome

METHODS: tuple[str, ...] = ("spf", "dkim", "dmarc")


class Verdict(enum.StrEnum):
    """The result words of RFC 8601 (section 2.7) for SPF, DKIM and DMARC."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    POLICY = "policy"  # DKIM: the signature verified but local policy rejected it
    TEMPERROR = "temperror"
    PERMERROR = "permerror"

    @classmethod
    def from_word(cls, word: str) -> Verdict | None:
        word = word.strip().lower()
        if word == "hardfail":  # RFC 5451's older name for fail
            return cls.FAIL
        try:
            return cls(word)
        except ValueError:
            return None


class Source(enum.StrEnum):
    MONITOR = "monitor"  # the monitor evaluated the received probe itself against DNS
    RECEIVER = "receiver"  # the receiving server's trusted Authentication-Results header


@dataclass(frozen=True)
class MethodResult:
    """One method's verdict on the probe from one source; ``detail`` names what was checked."""

    method: str  # one of METHODS
    source: Source
    verdict: Verdict
    detail: str = ""
    authserv_id: str = ""  # for receiver verdicts: who wrote them

    def describe(self) -> str:
        who = "monitor" if self.source is Source.MONITOR else f"receiver {self.authserv_id}"
        return f"{who}: {self.method}={self.verdict}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Finding:
    """One check of a domain (``mx``, ``spf``, ...) or of the blocklists.

    ``message`` is one line for the person who gets paged; ``details`` are facts for output
    (e.g. the DMARC policy) as ordered name/value pairs.
    """

    check: str
    outcome: Outcome
    message: str
    details: tuple[tuple[str, str], ...] = ()
