"""DNS posture of a domain (spec 8.2): one function per check, each returning a :class:`Finding`.

Every function takes plain values and a :class:`Resolver`; none raises for what DNS answers.
A DNS lookup that fails temporarily makes a check WARNING ("could not check"), never FAILED: a
flaky resolver next to the monitor is not a broken domain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mail_monitor.deliverability import dkim, dmarc, mta_sts, spf
from mail_monitor.deliverability.dns import DnsError, DnsErrorKind, Resolver, addresses, reverse_name
from mail_monitor.deliverability.model import Finding, Verdict
from mail_monitor.results import Outcome

CHECKS: tuple[str, ...] = ("mx", "spf", "dkim", "dmarc", "mta_sts", "tls_rpt", "ptr")
PROBE_IDENTITY = "postmaster"  # local part SPF is evaluated for: the domain's own mail
TLS_RPT_SCHEMES = ("mailto:", "https:")


@dataclass(frozen=True)
class SendingIps:
    ips: tuple[str, ...]
    problems: tuple[str, ...]  # hosts that did not resolve


def sending_ips(hosts: Iterable[str], resolver: Resolver) -> SendingIps:
    """The A and AAAA of the given SMTP hosts (spec: the default ``sending_ips`` of a domain)."""
    ips: list[str] = []
    problems: list[str] = []
    for host in dict.fromkeys(h.rstrip(".").lower() for h in hosts):
        try:
            found = addresses(resolver, host)
        except DnsError as error:
            problems.append(f"SMTP host {error.describe()}")
            continue
        ips.extend(ip for ip in found if ip not in ips)
    return SendingIps(tuple(ips), tuple(problems))


def _finding(
    check: str, parts: Sequence[tuple[Outcome, str]], ok: str, details: Iterable[tuple[str, str]] = ()
) -> Finding:
    """The worst part decides; its problems (worst first) make the message, else ``ok``."""
    bad = [(outcome, text) for outcome, text in parts if outcome is not Outcome.OK]
    if not bad:
        return Finding(check, Outcome.OK, ok, tuple(details))
    order = {Outcome.FAILED: 0, Outcome.WARNING: 1, Outcome.SKIPPED: 2}
    bad.sort(key=lambda part: order[part[0]])
    return Finding(check, bad[0][0], "; ".join(text for _, text in bad), tuple(details))


def _unavailable(check: str, error: DnsError) -> Finding:
    return Finding(check, Outcome.WARNING, f"could not check {check}: {error.describe()}")


def check_mx(domain: str, resolver: Resolver) -> Finding:
    """MX records exist, are not a null MX, and each exchange resolves."""
    try:
        records = sorted(resolver.mx(domain), key=lambda r: (r.preference, r.exchange))
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return _unavailable("mx", error)
        what = "does not exist" if error.kind is DnsErrorKind.NXDOMAIN else "has no MX record"
        return Finding("mx", Outcome.FAILED, f"{domain} {what}: other servers cannot deliver mail to it")
    if any(not r.exchange for r in records):
        return Finding("mx", Outcome.FAILED, f"{domain} publishes a null MX (RFC 7505): it declares it takes no mail")
    parts: list[tuple[Outcome, str]] = []
    shown = []
    for record in records:
        try:
            ips = addresses(resolver, record.exchange)
        except DnsError as error:
            outcome = Outcome.WARNING if error.kind is DnsErrorKind.TEMPFAIL else Outcome.FAILED
            parts.append((outcome, f"MX {record.exchange} of {domain} does not resolve ({error.describe()})"))
            continue
        shown.append(f"{record.preference} {record.exchange} ({', '.join(ips)})")
    details = [("mx", ", ".join(r.exchange for r in records))]
    return _finding("mx", parts, f"MX of {domain}: {'; '.join(shown)}", details)


def check_spf(domain: str, ips: Sequence[str], resolver: Resolver) -> Finding:
    """Exactly one v=spf1 record, at most 10 DNS-querying terms in all, and every sending IP passes."""
    try:
        found = spf.records(domain, resolver)
    except DnsError as error:
        return _unavailable("spf", error)
    if not found:
        return Finding("spf", Outcome.FAILED, f"{domain} has no SPF record (TXT v=spf1): receivers get spf=none")
    if len(found) > 1:
        message = f"{domain} has {len(found)} SPF records; receivers return permerror: merge them into one"
        return Finding("spf", Outcome.FAILED, message)
    record = found[0]
    details = [("record", record)]
    try:
        counted = spf.lookup_count(domain, record, resolver)
    except DnsError as error:
        return _unavailable("spf", error)
    parts: list[tuple[Outcome, str]] = [(Outcome.FAILED, f"SPF for {domain}: {p}") for p in counted.problems]
    if counted.count > spf.LOOKUP_LIMIT:
        parts.append((
            Outcome.FAILED,
            f"SPF for {domain} needs {counted.count} DNS lookups ({', '.join(counted.terms)}), more than the "
            f"{spf.LOOKUP_LIMIT} receivers allow: they return permerror; replace includes with ip4:/ip6: terms",
        ))
    details.append(("lookups", str(counted.count)))
    # With no sending IP to check, an address from TEST-NET-1 still makes pyspf parse every term.
    for ip in ips or ["192.0.2.0"]:
        result = spf.check_host(ip, f"{PROBE_IDENTITY}@{domain}", resolver)
        if result.verdict is Verdict.TEMPERROR:
            parts.append((Outcome.WARNING, f"could not check SPF of {ip} for {domain}: {result.explanation}"))
        elif result.verdict is Verdict.PERMERROR:
            if counted.count <= spf.LOOKUP_LIMIT or "DNS lookups" not in result.explanation:
                parts.append((Outcome.FAILED, f"SPF for {domain} is broken (permerror): {result.explanation}"))
        elif ips and result.verdict is not Verdict.PASS:
            message = f"SPF for {domain} does not authorise {ip} ({result.verdict}): {spf.summary(record)}"
            parts.append((Outcome.FAILED, message))
    checked = f"authorises {', '.join(ips)}" if ips else "parses (no sending IPs to check)"
    ok = f"SPF for {domain} {checked} with {counted.count} of {spf.LOOKUP_LIMIT} DNS lookups"
    return _finding("spf", list(dict.fromkeys(parts)), ok, details)


def check_dkim(
    domain: str,
    selectors: Sequence[str],
    resolver: Resolver,
    probe_signatures: Sequence[dkim.DkimSignature] = (),
) -> Finding:
    """Each selector publishes a usable key; a probe signature made with it verifies.

    ``probe_signatures`` are the latest probe's (:attr:`ProbeAuth.dkim`); their selectors for
    this domain are checked too, configured or not.
    """
    domain = domain.rstrip(".").lower()
    ours = [s for s in probe_signatures if s.domain == domain]
    all_selectors = list(dict.fromkeys([*selectors, *(s.selector for s in ours)]))
    if not all_selectors:
        return Finding("dkim", Outcome.SKIPPED, f"no DKIM selector to check for {domain}: set dkim_selectors")
    parts: list[tuple[Outcome, str]] = []
    shown = []
    for selector in all_selectors:
        lookup = dkim.fetch_key(domain, selector, resolver)
        if lookup.key is None:
            outcome = Outcome.WARNING if lookup.verdict is Verdict.TEMPERROR else Outcome.FAILED
            parts.append((outcome, f"DKIM selector {selector} of {domain}: {lookup.problem}"))
            continue
        shown.append(f"{selector} ({lookup.key.key_type} {lookup.key.bits} bits)")
        if lookup.key.testing:
            parts.append((Outcome.WARNING, f"DKIM key at {lookup.name} is in testing mode (t=y): remove t=y"))
        for signature in ours:
            if signature.selector == selector and signature.verdict is not Verdict.PASS:
                parts.append((
                    Outcome.WARNING if signature.verdict is Verdict.TEMPERROR else Outcome.FAILED,
                    f"the key at {lookup.name} does not verify the probe's signature "
                    f"({signature.verdict}: {signature.reason}); publish the key the server signs with",
                ))
    details = [("selectors", ", ".join(all_selectors))]
    return _finding("dkim", parts, f"DKIM keys of {domain}: {', '.join(shown)}", details)


def check_dmarc(domain: str, resolver: Resolver, org_domain: dmarc.OrgDomain) -> Finding:
    """A DMARC record applies to the domain (its own or its organisational domain's) and parses."""
    lookup = dmarc.find_policy(domain, resolver, org_domain)
    if lookup.verdict is Verdict.TEMPERROR:
        return Finding("dmarc", Outcome.WARNING, f"could not check DMARC for {domain}: {lookup.problem}")
    if lookup.record is None:
        hint = ": publish e.g. v=DMARC1; p=none; rua=mailto:dmarc@" + domain if lookup.verdict is Verdict.NONE else ""
        return Finding("dmarc", Outcome.FAILED, f"DMARC for {domain}: {lookup.problem}{hint}")
    record = lookup.record
    where = "" if lookup.name == f"_dmarc.{lookup.domain}" else f" (inherited from {lookup.name})"
    details = (
        ("policy", lookup.applied_policy),
        ("subdomain_policy", record.subdomain_policy),
        ("pct", str(record.pct)),
        ("rua", ",".join(record.rua)),
    )
    return Finding("dmarc", Outcome.OK, f"DMARC for {domain}{where}: {record.describe()}", details)


def _versioned_txt(check: str, name: str, version: str, resolver: Resolver) -> list[str] | Finding:
    """The TXT records at ``name`` that start with ``version``; a Finding if DNS could not tell."""
    try:
        txts = [t.decode("ascii", "replace") for t in resolver.txt(name)]
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return _unavailable(check, error)
        txts = []
    return [t for t in txts if t.replace(" ", "").startswith(version)]


def check_mta_sts(domain: str, resolver: Resolver, fetcher: mta_sts.PolicyFetcher) -> Finding:
    """The ``_mta-sts`` TXT record, the HTTPS policy, and that its mx patterns cover every MX host."""
    name = f"_mta-sts.{domain}"
    found = _versioned_txt("mta_sts", name, "v=STSv1", resolver)
    if isinstance(found, Finding):
        return found
    if len(found) != 1:
        state = "no" if not found else f"{len(found)}"
        return Finding("mta_sts", Outcome.FAILED, f"{state} MTA-STS record (v=STSv1) at {name}; publish exactly one")
    try:
        record = mta_sts.parse_record(found[0])
    except ValueError as error:
        return Finding("mta_sts", Outcome.FAILED, f"MTA-STS record at {name} is invalid: {error}")
    host = f"mta-sts.{domain}"
    try:
        response = fetcher.fetch(host, mta_sts.POLICY_PATH)
    except mta_sts.FetchError as error:
        return Finding("mta_sts", Outcome.FAILED, f"MTA-STS policy of {domain} could not be fetched: {error}")
    url = f"https://{host}{mta_sts.POLICY_PATH}"
    if response.status != 200:
        return Finding("mta_sts", Outcome.FAILED, f"MTA-STS policy {url} answered HTTP {response.status}, not 200")
    try:
        policy = mta_sts.parse_policy(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        return Finding("mta_sts", Outcome.FAILED, f"MTA-STS policy {url} is invalid: {error}")
    parts: list[tuple[Outcome, str]] = []
    if response.content_type.split(";")[0].strip().lower() != "text/plain":
        parts.append((Outcome.WARNING, f"{url} is served as {response.content_type or 'no type'!r}, not text/plain"))
    if policy.mode == "none":
        parts.append((Outcome.WARNING, f"MTA-STS policy of {domain} has mode none: senders drop MTA-STS for it"))
    try:
        hosts = sorted({r.exchange for r in resolver.mx(domain) if r.exchange})
    except DnsError as error:
        if error.kind is DnsErrorKind.TEMPFAIL:
            return _unavailable("mta_sts", error)
        hosts = []
    for mx in hosts:
        if policy.mode != "none" and not any(mta_sts.mx_matches(p, mx) for p in policy.mx):
            parts.append((
                Outcome.FAILED,
                f"MTA-STS policy of {domain} does not cover MX {mx}: its mx patterns are {', '.join(policy.mx)}; "
                "senders in enforce mode will not deliver there",
            ))
    ok = f"MTA-STS for {domain}: mode {policy.mode}, max_age {policy.max_age}, covers {', '.join(hosts)}"
    details = (("mode", policy.mode), ("id", record.id), ("mx", ", ".join(policy.mx)))
    return _finding("mta_sts", parts, ok, details)


def check_tls_rpt(domain: str, resolver: Resolver) -> Finding:
    """``_smtp._tls`` publishes one v=TLSRPTv1 record with mailto: or https: report addresses."""
    name = f"_smtp._tls.{domain}"
    found = _versioned_txt("tls_rpt", name, "v=TLSRPTv1", resolver)
    if isinstance(found, Finding):
        return found
    if len(found) != 1:
        state = "no" if not found else f"{len(found)}"
        message = (
            f"{state} TLS-RPT record (v=TLSRPTv1) at {name}; "
            f"publish exactly one, e.g. v=TLSRPTv1; rua=mailto:tls@{domain}"
        )
        return Finding("tls_rpt", Outcome.FAILED, message)
    tags = dict(f.strip().partition("=")[::2] for f in found[0].split(";") if f.strip())
    rua = [uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip()]
    if not rua or not all(uri.lower().startswith(TLS_RPT_SCHEMES) for uri in rua):
        message = f"TLS-RPT record at {name} needs rua= with mailto: or https: addresses"
        return Finding("tls_rpt", Outcome.FAILED, message)
    ok = f"TLS-RPT for {domain}: reports to {', '.join(rua)}"
    return Finding("tls_rpt", Outcome.OK, ok, (("rua", ",".join(rua)),))


def check_ptr(ips: Sequence[str], resolver: Resolver) -> Finding:
    """Forward-confirmed reverse DNS: each IP's PTR name resolves back to that IP."""
    if not ips:
        return Finding("ptr", Outcome.SKIPPED, "no sending IPs to check")
    parts: list[tuple[Outcome, str]] = []
    shown = []
    for ip in ips:
        reverse = reverse_name(ip)
        try:
            names = resolver.ptr(reverse)
        except DnsError as error:
            if error.kind is DnsErrorKind.TEMPFAIL:
                parts.append((Outcome.WARNING, f"could not check PTR of {ip}: {error.describe()}"))
            else:
                parts.append((
                    Outcome.FAILED,
                    f"{ip} has no PTR record ({reverse}); many receivers refuse such senders: "
                    "ask whoever runs the address (often the hosting provider) to set one",
                ))
            continue
        confirmed, seen = _forward_confirmed(ip, names, resolver)
        if confirmed:
            shown.append(f"{ip} = {confirmed}")
            continue
        parts.append((
            Outcome.FAILED,
            f"PTR of {ip} is {', '.join(names)}, which does not resolve back to {ip} "
            f"({'; '.join(seen)}): add the address to that name or change the PTR",
        ))
    return _finding("ptr", parts, f"reverse DNS confirmed: {', '.join(shown)}")


def _forward_confirmed(ip: str, names: Sequence[str], resolver: Resolver) -> tuple[str, list[str]]:
    address = ipaddress.ip_address(ip)
    seen = []
    for name in names[:10]:  # RFC 7208 section 5.5 bounds PTR names the same way
        try:
            forward = addresses(resolver, name)
        except DnsError as error:
            seen.append(error.describe())
            continue
        if any(ipaddress.ip_address(f) == address for f in forward):
            return name, seen
        seen.append(f"{name} has {', '.join(forward)}")
    return "", seen
