"""The DNS seam: address parsing, the fake zone, and dnspython's errors mapped to our three kinds."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_monitor.deliverability.dns import (
    DnsError,
    DnsErrorKind,
    DnspythonResolver,
    MxRecord,
    StaticResolver,
    addresses,
    parse_server,
    reverse_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "[::1]x", "1.2.3.4:x"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected"):
        parse_server(text)


def test_reverse_names() -> None:
    assert reverse_name("203.0.113.7") == "7.113.0.203.in-addr.arpa"
    assert reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.ip6.arpa")
    assert len(reverse_name("2001:db8::1").split(".")) == 34


def test_static_resolver_kinds() -> None:
    zone = StaticResolver(
        {("example.org", "TXT"): ["v=spf1 -all"], ("example.org", "MX"): [(10, "Mail.Example.org.")],
         ("deep.sub.example.org", "A"): ["192.0.2.1"]},
        tempfail=frozenset({"flaky.example.org"}),
    )
    assert zone.txt("Example.ORG.") == (b"v=spf1 -all",)
    assert zone.mx("example.org") == (MxRecord(10, "mail.example.org"),)
    with pytest.raises(DnsError) as nodata:
        zone.a("example.org")
    assert nodata.value.kind is DnsErrorKind.NODATA and nodata.value.void
    with pytest.raises(DnsError) as empty_non_terminal:
        zone.a("sub.example.org")
    assert empty_non_terminal.value.kind is DnsErrorKind.NODATA
    with pytest.raises(DnsError) as nx:
        zone.a("nope.example.org")
    assert nx.value.kind is DnsErrorKind.NXDOMAIN
    with pytest.raises(DnsError) as temp:
        zone.txt("flaky.example.org")
    assert temp.value.kind is DnsErrorKind.TEMPFAIL and not temp.value.void
    assert ("flaky.example.org", "TXT") in zone.queries


def test_addresses_prefers_any_answer_and_reports_tempfail_first() -> None:
    zone = StaticResolver({("v6.example", "AAAA"): ["2001:db8::1"], ("v4.example", "A"): ["192.0.2.1"]})
    assert addresses(zone, "v6.example") == ("2001:db8::1",)
    assert addresses(zone, "v4.example") == ("192.0.2.1",)
    with pytest.raises(DnsError) as error:
        addresses(zone, "none.example")
    assert error.value.kind is DnsErrorKind.NXDOMAIN


# A DNS server that misbehaves on purpose, per name, to see dnspython's errors mapped.
@pytest.fixture
def odd_server() -> Iterator[str]:
    import dns.message
    import dns.rcode
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text()
            reply = dns.message.make_response(query)
            if name.startswith("silent."):
                continue
            if name.startswith("nx."):
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif name.startswith("fail."):
                reply.set_rcode(dns.rcode.SERVFAIL)
            elif name.startswith("refused."):
                reply.set_rcode(dns.rcode.REFUSED)
            elif name.startswith("txt."):
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", '"v=spf1 " "ip4:192.0.2.1 -all"'))
            elif name.startswith("mx."):
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "MX", "10 Mail.Example.ORG.", "20 ."))
            elif name.startswith("a."):
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.7"))
            elif name.startswith("ptr."):
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "PTR", "host.example.org."))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def test_dnspython_answers(odd_server: str) -> None:
    resolver = DnspythonResolver(odd_server, timeout=2)
    assert resolver.txt("txt.test") == (b"v=spf1 ip4:192.0.2.1 -all",)
    mx = sorted(resolver.mx("mx.test"), key=lambda r: r.preference)
    assert mx == [MxRecord(10, "mail.example.org"), MxRecord(20, "")]
    assert resolver.a("a.test") == ("192.0.2.7",)
    assert resolver.ptr("ptr.test") == ("host.example.org",)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nx.test", DnsErrorKind.NXDOMAIN),
        ("empty.test", DnsErrorKind.NODATA),
        ("fail.test", DnsErrorKind.TEMPFAIL),
        ("refused.test", DnsErrorKind.TEMPFAIL),
        ("silent.test", DnsErrorKind.TEMPFAIL),
    ],
)
def test_dnspython_errors(odd_server: str, name: str, kind: DnsErrorKind) -> None:
    resolver = DnspythonResolver(odd_server, timeout=0.5)
    with pytest.raises(DnsError) as error:
        resolver.txt(name)
    assert error.value.kind is kind
    assert name in str(error.value)


def test_dnspython_bad_name_is_nxdomain(odd_server: str) -> None:
    with pytest.raises(DnsError) as error:
        DnspythonResolver(odd_server, timeout=0.5).a("x" * 64 + ".test")
    assert error.value.kind is DnsErrorKind.NXDOMAIN


def test_caching_resolver_asks_each_question_once_errors_included() -> None:
    from mail_monitor.deliverability.dns import CachingResolver

    inner = StaticResolver({("example.org", "MX"): [(10, "mail.example.org")]}, frozenset({"flaky.example"}))
    cached = CachingResolver(inner)
    for _ in range(3):
        assert cached.mx("example.org") == cached.mx("EXAMPLE.org.") == (MxRecord(10, "mail.example.org"),)
        for name, kind in (("nope.example", DnsErrorKind.NXDOMAIN), ("flaky.example", DnsErrorKind.TEMPFAIL)):
            with pytest.raises(DnsError) as error:
                cached.txt(name)
            assert error.value.kind is kind
    assert sorted(inner.queries) == [("example.org", "MX"), ("flaky.example", "TXT"), ("nope.example", "TXT")]


def test_no_system_resolver_is_a_tempfail_per_query_not_a_crash(tmp_path: Path) -> None:
    resolver = DnspythonResolver(resolv_conf=str(tmp_path / "missing-resolv.conf"))
    with pytest.raises(DnsError) as error:
        resolver.a("example.org")
    assert error.value.kind is DnsErrorKind.TEMPFAIL and "no DNS resolver configured" in error.value.reason
