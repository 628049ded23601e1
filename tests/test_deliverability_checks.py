"""The deliverability family on the engine, over a static zone and fake mail sessions: milliseconds."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest
from deliverability_helpers import message, new_key, sign
from test_route_steps import FakeImap, FakeSmtp, World, config

from mail_monitor.checks.deliverability import RunDns, deliverability_steps
from mail_monitor.checks.routes import MAX_PROBE_BYTES, Sessions, route_steps
from mail_monitor.config import BlocklistSettings, Config, DomainSettings
from mail_monitor.deadline import Deadline
from mail_monitor.deliverability.dns import StaticResolver
from mail_monitor.deliverability.mta_sts import FetchResponse
from mail_monitor.engine import Engine, StepId
from mail_monitor.output import to_dict
from mail_monitor.probes.tls import describe_error
from mail_monitor.results import (
    AuthVerdicts,
    BlocklistLookups,
    CheckResult,
    DnsFacts,
    History,
    Outcome,
    RunResult,
    Subject,
    detail_from_json,
    detail_to_json,
)

KEY = new_key()
SENDING_IP = "203.0.113.7"


def zone(spf: str = f"v=spf1 ip4:{SENDING_IP} -all", key: bytes = KEY.record) -> dict[tuple[str, str], list[object]]:
    return {
        ("example.org", "MX"): [(10, "mx.example.org")],
        ("example.org", "TXT"): [spf],
        ("mx.example.org", "A"): [SENDING_IP],
        ("mail._domainkey.example.org", "TXT"): [key],
        ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@example.org"],
        ("_mta-sts.example.org", "TXT"): ["v=STSv1; id=1"],
        ("_smtp._tls.example.org", "TXT"): ["v=TLSRPTv1; rua=mailto:tls@example.org"],
        ("7.113.0.203.in-addr.arpa", "PTR"): ["mx.example.org"],
        ("2.0.0.127.bl.test", "A"): ["127.0.0.2"],  # RFC 5782's test entry, not our IP
    }


class Policy:
    def __init__(self, mx: str = "mx.example.org") -> None:
        self.mx = mx
        self.fetched: list[str] = []

    def fetch(self, host: str, path: str) -> FetchResponse:
        self.fetched.append(host)
        policy = f"version: STSv1\nmode: enforce\nmx: {self.mx}\nmax_age: 86400\n"
        return FetchResponse(200, "text/plain", policy.encode())


def full_config(*, require: tuple[str, ...] = ("spf", "dkim", "dmarc"), mta_sts: bool = True,
                domain: DomainSettings | None = None) -> Config:
    base = config(routes=2)
    judged = replace(base.routes[0], require=require, sending_ips=(ip_address(SENDING_IP),))
    domain = domain or DomainSettings("example.org", ("mail",), (ip_address(SENDING_IP),), mta_sts=mta_sts)
    return replace(base, routes=(judged, base.routes[1]), domains=(domain,),
                   blocklists=BlocklistSettings(zones=("bl.test",), fail_on=()))


def run(cfg: Config, world: World, resolver: StaticResolver, policy: Policy | None = None,
        carried: dict[str, CheckResult] | None = None) -> RunResult:
    sessions = Sessions(imap=lambda e, d: FakeImap(world, e, d),  # type: ignore[arg-type,return-value]
                        smtp=lambda e, d, n: FakeSmtp(world, e, d, n))  # type: ignore[arg-type,return-value]
    policy = policy or Policy()
    dns = RunDns(None, 5.0, resolver=resolver, fetcher=lambda domain: policy)
    steps = [*route_steps(cfg, History(), sessions), *deliverability_steps(cfg, History(), dns)]
    results = Engine(describe=describe_error).run(steps, Deadline(30.0), carried)
    return RunResult(time.time(), 0.1, tuple(results), "mx")


def outcome(result: RunResult, key: str) -> Outcome:
    return next(c.outcome for c in result.checks if c.key == key)


def check(result: RunResult, key: str) -> CheckResult:
    return next(c for c in result.checks if c.key == key)


def signed_probe() -> bytes:
    return sign(b"Return-Path: <monitor@example.org>\r\n" + message(), KEY)


def test_only_judged_routes_get_verdicts_and_mta_sts_only_when_enabled() -> None:
    cfg = full_config(mta_sts=False)
    steps = {str(s.id): s for s in deliverability_steps(cfg, History())}
    assert {k for k in steps if k.startswith("route:")} == {"route:r0/spf", "route:r0/dkim", "route:r0/dmarc"}
    assert {k for k in steps if k.startswith("domain:")} == {
        f"domain:example.org/{c}" for c in ("mx", "spf", "dkim", "dmarc", "ptr")}
    dkim = steps["domain:example.org/dkim"]
    sends = {StepId(Subject.route(r), "send") for r in ("r0", "r1")}
    # After both probes left, and after the verdicts of the route that sends from the domain.
    assert set(dkim.after) == sends | {StepId(Subject.route("r0"), m) for m in ("spf", "dkim", "dmarc")}
    assert set(steps["domain:example.org/mx"].after) == sends
    assert steps["domain:example.org/mx"].interval == 3600.0
    assert steps["host/blocklists"].interval == 3600.0
    assert all(s.needs == (StepId(Subject.route("r0"), "receive"),) for k, s in steps.items() if k.startswith("route"))
    mta = {str(s.id) for s in deliverability_steps(full_config(), History())}
    assert {"domain:example.org/mta_sts", "domain:example.org/tls_rpt"} <= mta


def test_an_unjudged_route_reads_no_probe_and_declaring_steps_imports_nothing(tmp_path: Path) -> None:
    world = World(raw=signed_probe())
    run(config(), world, StaticResolver(zone()))
    assert world.fetched == []  # the default route does not read the probe
    code = (
        "import sys\n"
        "from test_deliverability_checks import full_config\n"
        "from mail_monitor.checks import all_steps\n"
        "assert len(all_steps(full_config())) > 20\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dns', 'dkim', 'spf', 'authres')))\n"
    )
    tests = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests.parent,
                          env={"PYTHONPATH": f"{tests.parent}:{tests}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_healthy_probe_and_domain_are_all_ok_and_evaluated_once() -> None:
    world = World(raw=signed_probe())
    resolver = StaticResolver(zone())
    result = run(full_config(), world, resolver)
    bad = {c.key: c.message for c in result.checks if c.outcome is not Outcome.OK}
    assert bad == {}
    assert world.fetched == [MAX_PROBE_BYTES]
    # Three verdict steps, one evaluation: the key was asked for once (and the cache is per run).
    assert resolver.queries.count(("mail._domainkey.example.org", "TXT")) == 1
    dkim = check(result, "route:r0/dkim")
    assert isinstance(dkim.detail, AuthVerdicts)
    assert [(v.method, v.source, v.verdict) for v in dkim.detail.verdicts] == [("dkim", "monitor", "pass")]
    assert to_dict(result)["routes"][0]["auth"] == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    dmarc = check(result, "domain:example.org/dmarc")
    assert isinstance(dmarc.detail, DnsFacts) and ("policy", "reject") in dmarc.detail.facts
    listed = check(result, "host/blocklists")
    assert isinstance(listed.detail, BlocklistLookups)
    assert [(e.ip, e.zone, e.listed) for e in listed.detail.entries] == [(SENDING_IP, "bl.test", False)]


def test_a_key_that_does_not_verify_fails_the_route_and_the_domain_dkim() -> None:
    world = World(raw=signed_probe())
    result = run(full_config(), world, StaticResolver(zone(key=new_key().record)))
    assert outcome(result, "route:r0/dkim") is Outcome.FAILED
    assert "DKIM of the probe is required but did not pass" in check(result, "route:r0/dkim").message
    domain_dkim = check(result, "domain:example.org/dkim")
    assert domain_dkim.outcome is Outcome.FAILED
    assert "mail._domainkey.example.org does not verify the probe's signature" in domain_dkim.message


def test_not_required_methods_report_without_failing() -> None:
    world = World(raw=message().replace(b"From:", b"Return-Path: <monitor@example.org>\r\nFrom:", 1))  # unsigned
    cfg = full_config(require=("spf",))
    result = run(cfg, world, StaticResolver(zone()))
    assert outcome(result, "route:r0/spf") is Outcome.OK
    assert outcome(result, "route:r0/dkim") is Outcome.OK  # none, reported
    assert "dkim=none" in check(result, "route:r0/dkim").message
    # The same unsigned probe with dkim required: FAILED.
    result = run(full_config(require=("dkim",)), World(raw=world.raw), StaticResolver(zone()))
    assert outcome(result, "route:r0/dkim") is Outcome.FAILED


def test_a_probe_that_could_not_be_read_fails_only_required_methods() -> None:
    result = run(full_config(require=("dkim",)), World(raw=b""), StaticResolver(zone()))
    assert outcome(result, "route:r0/dkim") is Outcome.FAILED
    assert outcome(result, "route:r0/spf") is Outcome.WARNING
    assert "could not be read" in check(result, "route:r0/spf").message


def test_sending_ips_default_to_the_smtp_hosts_of_the_domains_accounts() -> None:
    domain = DomainSettings("example.org", ("mail",), (), mta_sts=False)
    resolver = StaticResolver(zone())
    result = run(full_config(domain=domain), World(raw=signed_probe()), resolver)
    assert ("mx.example.org", "A") in resolver.queries  # the accounts' SMTP host
    assert f"authorises {SENDING_IP}" in check(result, "domain:example.org/spf").message
    assert outcome(result, "domain:example.org/ptr") is Outcome.OK
    assert outcome(result, "host/blocklists") is Outcome.OK
    # A host that does not resolve is said, not silently skipped.
    lost = dict(zone())
    del lost[("mx.example.org", "A")]
    result = run(full_config(domain=domain), World(raw=signed_probe()), StaticResolver(lost))
    assert "sending IPs incomplete" in check(result, "domain:example.org/spf").message
    assert outcome(result, "domain:example.org/spf") is not Outcome.OK


@pytest.mark.parametrize("fail_on", [(), ("bl.test",)])
def test_a_listed_ip_warns_or_fails_and_shows_in_the_detail(fail_on: tuple[str, ...]) -> None:
    records = zone()
    records[("7.113.0.203.bl.test", "A")] = ["127.0.0.2"]
    records[("7.113.0.203.bl.test", "TXT")] = ["listed for spam"]
    cfg = replace(full_config(), blocklists=BlocklistSettings(zones=("bl.test",), fail_on=fail_on))
    result = run(cfg, World(raw=signed_probe()), StaticResolver(records))
    listed = check(result, "host/blocklists")
    assert listed.outcome is (Outcome.FAILED if fail_on else Outcome.WARNING)
    assert f"{SENDING_IP} is listed on bl.test: listed for spam" in listed.message
    assert isinstance(listed.detail, BlocklistLookups) and listed.detail.entries[0].listed is True


def test_an_mta_sts_policy_missing_the_mx_fails() -> None:
    policy = Policy(mx="mx.elsewhere.org")
    result = run(full_config(), World(raw=signed_probe()), StaticResolver(zone()), policy)
    assert policy.fetched == ["mta-sts.example.org"]
    assert "does not cover MX mx.example.org" in check(result, "domain:example.org/mta_sts").message


def test_posture_not_due_is_carried_with_its_detail_and_asks_no_dns() -> None:
    first = run(full_config(), World(raw=signed_probe()), StaticResolver(zone()))
    carried = {c.key: CheckResult(c.subject, c.name, c.outcome, c.duration, c.message,
                                  detail_from_json(detail_to_json(c.detail)) if c.detail else None, c.checked_at)
               for c in first.checks if c.subject.kind.value != "route"}
    resolver = StaticResolver(zone(spf="v=spf1 -all"))
    second = run(full_config(), World(raw=signed_probe()), resolver, carried=carried)
    spf = check(second, "domain:example.org/spf")
    assert spf.carried and spf.outcome is Outcome.OK
    listed = check(second, "host/blocklists")
    assert listed.carried and isinstance(listed.detail, BlocklistLookups)  # the metric keeps its samples
    assert not any(name == "example.org" for name, _ in resolver.queries if _ == "MX")
    assert outcome(second, "route:r0/spf") is Outcome.FAILED  # the probe is judged every run
