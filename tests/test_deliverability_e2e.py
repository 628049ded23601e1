"""Deliverability end to end: the real CLI against Postfix, OpenDKIM, OpenDMARC/policyd-spf, Knot, nginx.

The healthy world is all OK; each break (a rotated DKIM key, SPF without the IP, no DMARC,
an MTA-STS policy that misses the MX, a listed IP, a forged Authentication-Results) makes the
check that watches it say so, and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import account_toml, monitor_toml, route_toml, run_cli
from dnsstack import AUTHSERV_ID, BLOCKLIST_ZONE, DOMAIN, MAIL_HOST, DnsWorld

from mail_monitor.checks.deliverability import MTA_STS_PORT_VARIABLE

pytestmark = pytest.mark.dnsworld

SENDING_IP = "127.0.0.1"  # the stack submits and relays over loopback


def world_config(world: DnsWorld, secrets: Path, *, state_file: Path | None = None, fail_on: str = "",
                 require: tuple[str, ...] = ("spf", "dkim", "dmarc")) -> str:
    assert world.stack is not None
    return (
        monitor_toml(state_file, resolver=world.resolver)
        + account_toml(world.stack, "self", "monitor", secrets)
        + route_toml("self", "self", "self", require=list(require), trusted_authserv_ids=[AUTHSERV_ID],
                     sending_ips=[SENDING_IP])
        + "[[domains]]\n"
        f'name = "{DOMAIN}"\n'
        f'dkim_selectors = ["{world.selector}"]\n'
        f'sending_ips = ["{SENDING_IP}"]\n'
        "mta_sts = true\n"
        f'ca_file = "{world.stack.ca.ca_file}"\n\n'
        "[blocklists]\n"
        f'zones = ["{BLOCKLIST_ZONE}"]\n'
        + (f'fail_on = ["{fail_on}"]\n' if fail_on else "")
    )


def run(world: DnsWorld, config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("run", "-c", str(config), "--format", "json", *extra,
                   env={MTA_STS_PORT_VARIABLE: str(world.https_port)})
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def checks(report: dict[str, Any], subject: str) -> dict[str, dict[str, Any]]:
    if subject.startswith("route:"):
        route = next(r for r in report["routes"] if r["route"] == subject.removeprefix("route:"))
        return route["checks"]  # type: ignore[no-any-return]
    return next(s for s in report["subjects"] if s["subject"] == subject)["checks"]  # type: ignore[no-any-return]


def outcomes(report: dict[str, Any]) -> dict[str, str]:
    found = {f"route:self/{name}": c["outcome"] for name, c in checks(report, "route:self").items()}
    for subject in report["subjects"]:
        found.update({f"{subject['subject']}/{name}": c["outcome"] for name, c in subject["checks"].items()})
    return found


def not_ok(report: dict[str, Any]) -> dict[str, str]:
    return {key: outcome for key, outcome in outcomes(report).items() if outcome != "ok"}


@pytest.fixture
def config_file(world: DnsWorld, world_secrets_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(world_config(world, world_secrets_dir))
    return path


def test_the_healthy_world_is_all_ok(world: DnsWorld, config_file: Path) -> None:
    code, report = run(world, config_file, "--no-state")
    assert not_ok(report) == {}, json.dumps(report, indent=1)
    assert code == 0
    expected = {f"route:self/{m}" for m in ("spf", "dkim", "dmarc")} | {
        f"domain:{DOMAIN}/{c}" for c in ("mx", "spf", "dkim", "dmarc", "mta_sts", "tls_rpt", "ptr")} | {
        "host/blocklists"}
    assert expected <= set(outcomes(report))
    route = next(r for r in report["routes"] if r["route"] == "self")
    assert route["auth"]["dkim"] == "pass" and route["auth"]["receiver_dkim"] == "pass"
    assert route["auth"]["spf"] == "pass" and route["auth"]["dmarc"] == "pass"
    domain = checks(report, f"domain:{DOMAIN}")
    assert f"covers {MAIL_HOST}" in domain["mta_sts"]["message"]
    assert "p=" in domain["dmarc"]["message"] or "policy" in domain["dmarc"]["message"]


def test_a_rotated_dkim_key_not_in_dns_fails_both_dkim_checks(world: DnsWorld, config_file: Path) -> None:
    world.rotate_dkim_key()
    code, report = run(world, config_file, "--no-state")
    assert code == 2
    route_dkim = checks(report, "route:self")["dkim"]
    assert route_dkim["outcome"] == "failed"
    assert "DKIM of the probe is required but did not pass" in route_dkim["message"]
    assert "dkim=fail" in route_dkim["message"]
    domain_dkim = checks(report, f"domain:{DOMAIN}")["dkim"]
    assert domain_dkim["outcome"] == "failed"
    assert f"{world.selector}._domainkey.{DOMAIN} does not verify the probe's signature" in domain_dkim["message"]
    broken = not_ok(report)
    assert set(broken) <= {"route:self/dkim", f"domain:{DOMAIN}/dkim", "route:self/dmarc"}, broken


def test_spf_without_the_ip_fails_the_spf_checks(world: DnsWorld, config_file: Path) -> None:
    world.set_spf("v=spf1 ip4:198.51.100.0/24 -all")
    code, report = run(world, config_file, "--no-state")
    assert code == 2
    domain_spf = checks(report, f"domain:{DOMAIN}")["spf"]
    assert domain_spf["outcome"] == "failed"
    assert f"SPF for {DOMAIN} does not authorise {SENDING_IP} (fail)" in domain_spf["message"]
    assert "ip4:198.51.100.0/24" in domain_spf["message"]
    route_spf = checks(report, "route:self")["spf"]
    assert route_spf["outcome"] == "failed" and "spf=fail" in route_spf["message"]
    assert checks(report, "route:self")["dkim"]["outcome"] == "ok"


def test_no_dmarc_fails_the_dmarc_checks(world: DnsWorld, config_file: Path) -> None:
    world.remove_dmarc()
    code, report = run(world, config_file, "--no-state")
    assert code == 2
    domain_dmarc = checks(report, f"domain:{DOMAIN}")["dmarc"]
    assert domain_dmarc["outcome"] == "failed"
    assert f"_dmarc.{DOMAIN}" in domain_dmarc["message"]
    assert checks(report, "route:self")["dmarc"]["outcome"] == "failed"
    assert set(not_ok(report)) == {"route:self/dmarc", f"domain:{DOMAIN}/dmarc"}


def test_an_mta_sts_policy_that_misses_the_mx_fails_mta_sts(world: DnsWorld, config_file: Path) -> None:
    world.set_mta_sts_policy(mx=("mx.elsewhere.test",))
    code, report = run(world, config_file, "--no-state")
    assert code == 2
    message = checks(report, f"domain:{DOMAIN}")["mta_sts"]["message"]
    assert f"does not cover MX {MAIL_HOST}" in message and "mx.elsewhere.test" in message
    assert set(not_ok(report)) == {f"domain:{DOMAIN}/mta_sts"}


def test_a_listed_ip_warns_and_fails_on_a_fail_on_zone(world: DnsWorld, world_secrets_dir: Path,
                                                       config_file: Path, tmp_path: Path) -> None:
    world.list_ip(SENDING_IP, reason="spam trap hit, see https://bl.test/127.0.0.1")
    code, report = run(world, config_file, "--no-state")
    blocklists = checks(report, "host")["blocklists"]
    assert (code, blocklists["outcome"]) == (1, "warning")
    assert f"{SENDING_IP} is listed on {BLOCKLIST_ZONE}: spam trap hit" in blocklists["message"]
    strict = tmp_path / "strict.toml"
    strict.write_text(world_config(world, world_secrets_dir, fail_on=BLOCKLIST_ZONE))
    code, report = run(world, strict, "--no-state")
    assert (code, checks(report, "host")["blocklists"]["outcome"]) == (2, "failed")


def test_a_forged_authentication_results_from_an_untrusted_id_is_ignored(world: DnsWorld,
                                                                        config_file: Path) -> None:
    # The forgery claims a pass the real verdicts contradict: only trusted ids count.
    world.rotate_dkim_key()
    world.forge_header("Authentication-Results: evil.test; dkim=pass header.d=example.test")
    code, report = run(world, config_file, "--no-state")
    assert code == 2
    route = next(r for r in report["routes"] if r["route"] == "self")
    assert route["auth"]["receiver_dkim"] == "fail"
    assert "evil.test" not in json.dumps(route)
    assert checks(report, "route:self")["dkim"]["outcome"] == "failed"


def test_domain_checks_not_due_are_carried_with_their_age(world: DnsWorld, world_secrets_dir: Path,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(world_config(world, world_secrets_dir, state_file=tmp_path / "state.json"))
    code, first = run(world, config)
    assert code == 0, not_ok(first)
    assert "age_seconds" not in checks(first, f"domain:{DOMAIN}")["spf"]
    world.set_spf("v=spf1 ip4:198.51.100.0/24 -all")  # would fail if it were asked again
    world.list_ip(SENDING_IP)
    code, second = run(world, config)
    domain = checks(second, f"domain:{DOMAIN}")
    assert domain["spf"]["outcome"] == "ok" and domain["spf"]["age_seconds"] >= 0
    assert domain["spf"]["message"] == checks(first, f"domain:{DOMAIN}")["spf"]["message"]
    assert checks(second, "host")["blocklists"]["outcome"] == "ok"
    assert "age_seconds" in checks(second, "host")["blocklists"]
    # The probe is judged every run: its SPF sees the broken record at once.
    assert checks(second, "route:self")["spf"]["outcome"] == "failed"
    assert "age_seconds" not in checks(second, "route:self")["spf"]
