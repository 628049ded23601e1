"""Which IP handed the probe to the receiving server, read from its ``Received:`` headers.

The pick: walking from the top (the newest header, written by the final receiving host), the
first header that records a hand-over from another host: its ``from`` clause carries an IP
literal (``[203.0.113.7]``) that is not loopback, and, when trusted hosts are given, its ``by``
host is one of them (a route's ``trusted_authserv_ids``: receivers name themselves the same way
in both headers, e.g. ``mx.google.com``). Headers below that one were written by earlier hops or
by the sender and prove nothing; headers above it record hops inside the receiving site (LMTP,
content filters on 127.0.0.1). With trusted hosts and no header matching, there is no answer:
better "cannot tell" than SPF judged on the wrong address. A hop recorded ``with ESMTPSA`` is
a logged-in submission, which receivers do not judge by SPF; :attr:`Hop.authenticated` says so.
"""

from __future__ import annotations

import email.message
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass

_IP_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_FROM = re.compile(r"^\s*from\s+(\S+)(.*?)(?:\bby\s+([^\s;()]+)|$)", re.IGNORECASE | re.DOTALL)
_WITH = re.compile(r"\bwith\s+([A-Za-z0-9-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Hop:
    helo: str  # the name the client gave (first word of the from clause)
    ip: str
    by: str  # the host that wrote the header
    protocol: str = ""  # the "with" keyword: ESMTPS, ESMTPSA, LMTP, ... (RFC 3848)

    @property
    def authenticated(self) -> bool:
        """A logged-in submission (``with ESMTPSA``): receivers do not judge SPF on those."""
        return self.protocol.endswith("A") and "SMTP" in self.protocol


def parse_received(value: str) -> Hop | None:
    """The hand-over a Received header records, or None when it names no client IP."""
    text = " ".join(value.split()).rpartition(";")[0] or " ".join(value.split())
    match = _FROM.match(text)
    if not match:
        return None
    helo, clause, by = match.group(1), match.group(2), match.group(3) or ""
    # The address the receiver saw is in the TCP-info comment after the name the client gave;
    # a bracketed HELO (``from [192.0.2.1]``) is only the client's claim, the last resort.
    for literal in [*_IP_LITERAL.findall(clause), *_IP_LITERAL.findall(helo)]:
        try:
            ip = ipaddress.ip_address(literal)
        except ValueError:
            continue
        protocol = _WITH.search(text[match.end(2) :])
        return Hop(
            helo=helo.strip("[]").lower(),
            ip=str(ip),
            by=by.rstrip(".").lower(),
            protocol=protocol.group(1).upper() if protocol else "",
        )
    return None


def connecting_hop(message: email.message.Message, trusted_hosts: Collection[str] = ()) -> Hop | None:
    trusted = {host.rstrip(".").lower() for host in trusted_hosts}
    for value in message.get_all("Received") or []:
        hop = parse_received(str(value))
        if hop is None or ipaddress.ip_address(hop.ip).is_loopback:
            continue
        if trusted and hop.by not in trusted:
            continue
        return hop
    return None
