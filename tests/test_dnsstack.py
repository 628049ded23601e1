"""The DNS world of the deliverability tests (scripts/dnsstack.py) is real and breakable.

Everything here goes through the real daemons: dnspython asks Knot, mail goes through
Postfix, OpenDKIM, policyd-spf and OpenDMARC into Dovecot, the MTA-STS policy comes from
nginx over TLS checked against the stack's CA.
"""

from __future__ import annotations

import base64
import email
import email.policy
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
import uuid
from email.message import EmailMessage, Message
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.resolver
import dns.reversename
import pytest
from conftest import PASSWORDS
from dnsstack import (
    AUTHSERV_ID,
    BLOCKLIST_ZONE,
    DOMAIN,
    HEALTHY_DMARC,
    HEALTHY_SPF,
    HEALTHY_SPF_INCLUDE,
    HEALTHY_TLS_RPT,
    MAIL_HOST,
    MTA_STS_HOST,
    DnsWorld,
    Zone,
    _txt,
    dnsbl_name,
)
from mailstack import CertificateAuthority

# ----------------------------------------------------------------- fast tier


def test_dnsbl_name_reverses_the_octets_under_the_zone() -> None:
    assert dnsbl_name("192.0.2.7") == f"7.2.0.192.{BLOCKLIST_ZONE}"
    assert dnsbl_name("127.0.0.2", "zen.example") == "2.0.0.127.zen.example"
    with pytest.raises(ValueError):
        dnsbl_name("2001:db8::1")


def test_long_txt_is_split_into_strings_dns_can_carry() -> None:
    text = "p=" + "A" * 600 + '"\\'
    rdata = _txt(text)
    strings = [s for s in rdata.split('"') if s.strip()]
    assert all(len(s) <= 255 for s in strings)
    assert len(strings) >= 3
    # Quotes and backslashes are escaped, so the zone file says exactly the text.
    assert rdata.endswith('\\"\\\\"')


def test_zone_text_has_soa_ns_and_each_record() -> None:
    zone = Zone("example.test", {("mail.example.test", "A"): ["127.0.0.1"]})
    text = zone.text(serial=42)
    assert "$ORIGIN example.test." in text
    assert " 42 " in text.splitlines()[2]
    assert "mail.example.test. A 127.0.0.1" in text


# ------------------------------------------------------------ real-stack tier

def resolver_for(world: DnsWorld) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = world.dns_port
    resolver.lifetime = 5.0
    resolver.cache = None
    return resolver


def txt(world: DnsWorld, name: str) -> list[str]:
    answer = resolver_for(world).resolve(name, "TXT")
    return sorted(b"".join(r.strings).decode() for r in answer)


def public_key_of_opendkim(world: DnsWorld) -> str:
    """The public half of the key file OpenDKIM signs with, base64 as DNS carries it."""
    from cryptography.hazmat.primitives import serialization

    pem = (world.root / "opendkim" / f"{world.selector}.private").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def dkim_p(record: str) -> str:
    tags = dict(part.strip().split("=", 1) for part in record.split(";") if "=" in part)
    return tags["p"].replace(" ", "")


@pytest.mark.dnsworld
def test_knot_serves_every_record_of_the_test_domain(world: DnsWorld) -> None:
    resolver = resolver_for(world)
    mx = resolver.resolve(DOMAIN, "MX")
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, f"{MAIL_HOST}.")]
    assert [r.address for r in resolver.resolve(MAIL_HOST, "A")] == ["127.0.0.1"]
    assert [r.address for r in resolver.resolve(MTA_STS_HOST, "A")] == ["127.0.0.1"]
    assert txt(world, DOMAIN) == [HEALTHY_SPF]
    assert txt(world, f"_spf.{DOMAIN}") == [HEALTHY_SPF_INCLUDE]
    assert "include:_spf.example.test" in HEALTHY_SPF
    dkim = txt(world, f"{world.selector}._domainkey.{DOMAIN}")
    assert len(dkim) == 1 and dkim[0].startswith("v=DKIM1; k=rsa; ")
    assert dkim_p(dkim[0]) == public_key_of_opendkim(world)
    assert txt(world, f"_dmarc.{DOMAIN}") == [HEALTHY_DMARC]
    (sts,) = txt(world, f"_mta-sts.{DOMAIN}")
    assert sts.startswith("v=STSv1; id=")
    assert txt(world, f"_smtp._tls.{DOMAIN}") == [HEALTHY_TLS_RPT]
    ptr = resolver.resolve(dns.reversename.from_address("127.0.0.1"), "PTR")
    assert [r.target.to_text() for r in ptr] == [f"{MAIL_HOST}."]
    # The DNSBL lists its RFC 5782 test entry and nothing else.
    assert [r.address for r in resolver.resolve(dnsbl_name("127.0.0.2"), "A")] == ["127.0.0.2"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(dnsbl_name("127.0.0.1"), "A")


@pytest.mark.dnsworld
def test_knot_answers_authoritatively_on_udp_and_tcp(world: DnsWorld) -> None:
    query = dns.message.make_query(f"_dmarc.{DOMAIN}", "TXT")
    for send in (dns.query.udp, dns.query.tcp):
        response = send(query, "127.0.0.1", port=world.dns_port, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA


@pytest.mark.dnsworld
def test_a_broken_record_is_visible_on_the_next_query_and_reset_heals_it(world: DnsWorld) -> None:
    world.set_spf("v=spf1 ip4:198.51.100.0/24 -all")
    assert txt(world, DOMAIN) == ["v=spf1 ip4:198.51.100.0/24 -all"]
    world.remove_dmarc()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver_for(world).resolve(f"_dmarc.{DOMAIN}", "TXT")
    world.set_records(MAIL_HOST, "A", "127.0.0.9")
    assert [r.address for r in resolver_for(world).resolve(MAIL_HOST, "A")] == ["127.0.0.9"]
    world.reset()
    assert txt(world, DOMAIN) == [HEALTHY_SPF]
    assert txt(world, f"_dmarc.{DOMAIN}") == [HEALTHY_DMARC]
    assert [r.address for r in resolver_for(world).resolve(MAIL_HOST, "A")] == ["127.0.0.1"]


@pytest.mark.dnsworld
def test_an_ip_listed_in_the_blocklist_carries_its_reason(world: DnsWorld) -> None:
    name = dnsbl_name("127.0.0.1")
    world.list_ip("127.0.0.1", reason="spam trap hit, see https://bl.test/127.0.0.1", code="127.0.0.4")
    assert [r.address for r in resolver_for(world).resolve(name, "A")] == ["127.0.0.4"]
    assert txt(world, name) == ["spam trap hit, see https://bl.test/127.0.0.1"]
    world.unlist_ip("127.0.0.1")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver_for(world).resolve(name, "A")


def fetch_policy(world: DnsWorld) -> tuple[int, str]:
    """GET the policy the way a client must: name from DNS, TLS verified for mta-sts.<domain>."""
    (address,) = [r.address for r in resolver_for(world).resolve(MTA_STS_HOST, "A")]
    assert world.stack is not None
    context = ssl.create_default_context(cafile=str(world.stack.ca.ca_file))
    with socket.create_connection((address, world.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=MTA_STS_HOST) as tls:
        tls.sendall(f"GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {MTA_STS_HOST}\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@pytest.mark.dnsworld
def test_mta_sts_policy_over_https_and_a_policy_that_misses_the_mx(world: DnsWorld) -> None:
    status, body = fetch_policy(world)
    assert status == 200
    assert body.splitlines()[:3] == ["version: STSv1", "mode: enforce", f"mx: {MAIL_HOST}"]
    (old_id,) = txt(world, f"_mta-sts.{DOMAIN}")
    world.set_mta_sts_policy(mx=("mx.elsewhere.test",))
    status, body = fetch_policy(world)
    assert status == 200 and "mx: mx.elsewhere.test" in body and MAIL_HOST not in body
    (new_id,) = txt(world, f"_mta-sts.{DOMAIN}")
    assert new_id != old_id


@pytest.mark.dnsworld
def test_https_refuses_a_client_that_does_not_trust_the_private_ca(world: DnsWorld) -> None:
    context = ssl.create_default_context()  # the system's CAs only
    with socket.create_connection(("127.0.0.1", world.https_port), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname=MTA_STS_HOST)


# ------------------------------------------------------------------ mail


def send_and_receive(world: DnsWorld, user: str = "monitor") -> Message:
    """Submit a mail (STARTTLS + AUTH, as the monitor does) and read it from the Maildir."""
    stack = world.stack
    assert stack is not None
    address = stack.accounts[user].address
    subject = f"dnsworld {uuid.uuid4().hex}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = address, address, subject
    message.set_content("deliverability test\n")
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    with smtplib.SMTP("localhost", stack.submission_port, timeout=20) as smtp:
        smtp.starttls(context=context)
        smtp.login(address, PASSWORDS[user])
        smtp.send_message(message)
    new = stack.maildir(user) / "new"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in new.iterdir() if new.exists() else ():
            received = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
            if received["Subject"] == subject:
                return received
        time.sleep(0.1)
    raise AssertionError(f"{subject} not delivered:\n{stack.log_tail()}")


def verdicts(message: Message, authserv_id: str = AUTHSERV_ID) -> dict[str, str]:
    """method -> result from the Authentication-Results headers of one authserv-id."""
    out: dict[str, str] = {}
    for header in message.get_all("Authentication-Results", []):
        parts = [p.strip() for p in " ".join(str(header).split()).split(";")]
        if parts[0] != authserv_id:
            continue
        for part in parts[1:]:
            method, sep, rest = part.partition("=")
            if sep and method in ("spf", "dkim", "dmarc"):
                out[method] = rest.split()[0]
    return out


@pytest.mark.dnsworld
def test_a_submitted_mail_arrives_signed_with_passing_verdicts(world: DnsWorld) -> None:
    received = send_and_receive(world)
    signature = " ".join(str(received["DKIM-Signature"]).split())
    tags = dict(t.strip().split("=", 1) for t in signature.split(";") if "=" in t)
    assert (tags["d"], tags["s"]) == (DOMAIN, world.selector)
    expected = {"spf": "pass", "dkim": "pass"}
    if world.dmarc_enabled:
        expected["dmarc"] = "pass"
    assert verdicts(received) == expected
    # The MX hop saw the loopback client the SPF record authorises.
    assert any("[127.0.0.1]" in str(h) for h in received.get_all("Received", []))


@pytest.mark.dnsworld
def test_a_rotated_dkim_key_not_in_dns_fails_dkim(world: DnsWorld) -> None:
    old_key = public_key_of_opendkim(world)
    world.rotate_dkim_key()
    assert public_key_of_opendkim(world) != old_key
    assert dkim_p(txt(world, f"{world.selector}._domainkey.{DOMAIN}")[0]) == old_key
    result = verdicts(send_and_receive(world))
    assert result["dkim"] == "fail"
    assert result["spf"] == "pass"
    world.publish_dkim_key()
    assert verdicts(send_and_receive(world))["dkim"] == "pass"


@pytest.mark.dnsworld
def test_spf_without_the_ip_and_no_dmarc_show_in_the_receivers_verdicts(world: DnsWorld) -> None:
    world.set_spf("v=spf1 ip4:198.51.100.0/24 -all")
    world.remove_dmarc()
    result = verdicts(send_and_receive(world))
    assert result["spf"] == "fail"
    assert result["dkim"] == "pass"
    if world.dmarc_enabled:
        assert result["dmarc"] == "none"


# ------------------------------------------------------------ lifecycle


@pytest.mark.dnsworld
def test_stop_ends_every_process_of_the_world() -> None:
    root = Path(tempfile.mkdtemp(prefix="dnsworld-life-"))  # short: unix socket paths live in it
    world = DnsWorld(root / "world", CertificateAuthority(root / "tls")).start()
    try:
        pids = world.pids()
        assert len(pids) >= len(world.daemons)
        assert [r.address for r in resolver_for(world).resolve(MAIL_HOST, "A")] == ["127.0.0.1"]
    finally:
        world.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert world.pids() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    for port in (world.dns_port, world.https_port, world.dkim_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.dnsworld
def test_a_forged_authentication_results_upstream_reaches_the_mailbox(world: DnsWorld) -> None:
    world.forge_header("Authentication-Results: evil.test; dkim=pass header.d=example.test")
    received = send_and_receive(world)
    assert verdicts(received, "evil.test") == {"dkim": "pass"}
    # Added before the receiving hop: below the receiver's own verdicts.
    headers = [(k, " ".join(str(v).split())) for k, v in received.items()]
    forged = headers.index(("Authentication-Results", "evil.test; dkim=pass header.d=example.test"))
    ours = [i for i, (k, v) in enumerate(headers) if k == "Authentication-Results" and v.startswith(AUTHSERV_ID)]
    assert ours and max(ours) < forged
    world.forge_header(None)
    assert verdicts(send_and_receive(world), "evil.test") == {}


def test_a_directory_too_long_for_unix_sockets_is_refused_up_front(tmp_path: Path) -> None:
    root = tmp_path / ("d" * 100)
    with pytest.raises(ValueError, match="too long for unix socket paths"):
        DnsWorld(root, CertificateAuthority(tmp_path / "tls"))


@pytest.mark.dnsworld
def test_a_stopped_daemon_is_down_until_reset_brings_it_back(world: DnsWorld) -> None:
    world.stop_daemon("nginx")
    with pytest.raises(ConnectionRefusedError):
        fetch_policy(world)
    world.stop_daemon("knot")
    with pytest.raises(ConnectionRefusedError):
        dns.query.tcp(dns.message.make_query(MAIL_HOST, "A"), "127.0.0.1", port=world.dns_port, timeout=2)
    world.reset()
    assert fetch_policy(world)[0] == 200
    assert [r.address for r in resolver_for(world).resolve(MAIL_HOST, "A")] == ["127.0.0.1"]
