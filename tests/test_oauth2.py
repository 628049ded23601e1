"""XOAUTH2 without a network: the SASL exchange, token commands, and the route steps' logins."""

from __future__ import annotations

import base64
import sys
from dataclasses import replace
from pathlib import Path

from mail_monitor.config import Account, Config, Endpoint, ImapEndpoint, Secret, resolve_token_commands
from mail_monitor.probes.imap import ImapLoginError
from mail_monitor.probes.sasl import XOAuth2
from mail_monitor.results import Outcome
from tests.test_route_steps import World, config, outcomes, run

USER = "monitor@example.org"


def token_script(tmp_path: Path, body: str, name: str = "token.py") -> tuple[str, ...]:
    path = tmp_path / name
    path.write_text(body)
    return (sys.executable, str(path))


def counting_script(tmp_path: Path, token: str) -> tuple[tuple[str, ...], Path]:
    """A token command that prints ``token`` and leaves a mark for each time it ran."""
    runs = tmp_path / "runs"
    return token_script(tmp_path, f"open({str(runs)!r}, 'a').write('x'); print({token!r})"), runs


def with_endpoints(cfg: Config, **oauth2: object) -> Config:
    """``cfg`` with both endpoints of its one account given ``oauth2`` settings, and no password."""
    account = cfg.accounts["self"]
    assert account.smtp is not None and account.imap is not None
    new = Account(account.name, account.address, account.username, None, None,
                  replace(account.smtp, **oauth2),  # type: ignore[arg-type]
                  replace(account.imap, **oauth2))  # type: ignore[arg-type]
    return replace(cfg, accounts={"self": new}, routes=tuple(replace(r, sender=new, recipient=new) for r in cfg.routes))


# -- the SASL exchange ---------------------------------------------------------------

def test_xoauth2_sends_the_bearer_token_once_then_answers_challenges_empty() -> None:
    mechanism = XOAuth2(USER, Secret("ya29.token"))
    assert mechanism() == f"user={USER}\x01auth=Bearer ya29.token\x01\x01"
    # A refusal: the JSON error (smtplib hands it over decoded, imaplib as sent), answered empty.
    assert mechanism(b'{"status":"invalid_token","schemes":"bearer"}') == ""
    assert mechanism.explain() == " (OAuth2 status: invalid_token)"
    imap = XOAuth2(USER, Secret("t"))
    imap(b"")
    assert imap(base64.b64encode(b'{"status":"401","schemes":"bearer","scope":"mail"}')) == ""
    assert imap.explain() == " (OAuth2 status: 401)"
    garbage = XOAuth2(USER, Secret("t"))
    garbage()
    assert garbage(b"\xff not json") == "" and garbage.explain() == ""


# -- token commands, resolved once at the start of a run -------------------------------

def test_a_token_command_runs_once_per_run_for_both_endpoints(tmp_path: Path) -> None:
    command, runs = counting_script(tmp_path, "ya29.from-command")
    cfg, learned = resolve_token_commands(with_endpoints(config(), oauth2_token_command=command), 10.0)
    assert runs.read_text() == "x"  # one command shared by SMTP and IMAP: run once
    account = cfg.accounts["self"]
    assert account.smtp is not None and account.imap is not None
    assert account.smtp.oauth2_token == account.imap.oauth2_token == Secret("ya29.from-command")
    assert cfg.routes[0].sender is account and cfg.routes[0].recipient is account
    assert learned == [(USER, Secret("ya29.from-command"))] * 2
    # Known to the run's scrubber, wire forms included.
    wire = base64.b64encode(f"user={USER}\x01auth=Bearer ya29.from-command\x01\x01".encode()).decode()
    assert cfg.scrubber()(f"NO echo ya29.from-command {wire}") == "NO echo <redacted> <redacted>"


def test_a_failed_token_command_is_recorded_for_the_logins_and_not_run_again(tmp_path: Path) -> None:
    command = token_script(tmp_path, "import sys; open(sys.argv[0] + '.ran', 'a').write('x'); sys.exit(3)")
    cfg, learned = resolve_token_commands(with_endpoints(config(), oauth2_token_command=command), 10.0)
    assert learned == []
    world = World()
    result = run(world, cfg)
    got = outcomes(result)
    assert got["imap_auth"] is Outcome.FAILED and got["smtp_auth"] is Outcome.FAILED
    message = (result.routes[0].check("imap_auth") or _never()).message
    assert message == f"oauth2_token_command {Path(sys.executable).name}: exited with status 3"
    assert world.logins == []  # nothing was sent to a server
    assert Path(command[1] + ".ran").read_text() == "x"  # once, by resolve_token_commands


def test_no_time_left_means_the_command_is_not_run(tmp_path: Path) -> None:
    command, runs = counting_script(tmp_path, "t")
    cfg, _ = resolve_token_commands(with_endpoints(config(), oauth2_token_command=command), 0.0)
    assert not runs.exists()
    imap = cfg.accounts["self"].imap
    assert imap is not None and "no time left in the run's deadline" in (imap.oauth2_token_error or "")


# -- the route steps ----------------------------------------------------------------------

def test_oauth2_endpoints_log_in_with_xoauth2_and_the_route_passes() -> None:
    cfg = with_endpoints(config(), oauth2_token_file="/run/token", oauth2_token=Secret("ya29.file-token"))
    world = World()
    result = run(world, cfg)
    assert set(outcomes(result).values()) == {Outcome.OK}
    assert sorted(world.logins) == [("imap", "xoauth2", USER, "ya29.file-token"),
                                    ("smtp", "xoauth2", USER, "ya29.file-token")]


def test_a_command_not_resolved_before_runs_when_the_login_needs_it(tmp_path: Path) -> None:
    command, runs = counting_script(tmp_path, "ya29.late")
    world = World()
    result = run(world, with_endpoints(config(), oauth2_token_command=command))
    assert set(outcomes(result).values()) == {Outcome.OK}
    assert {(p, how, secret) for p, how, _, secret in world.logins} == {("imap", "xoauth2", "ya29.late"),
                                                                        ("smtp", "xoauth2", "ya29.late")}
    assert runs.read_text() == "xx"


def test_password_endpoints_still_use_the_password() -> None:
    world = World()
    run(world, config())
    assert {how for _, how, _, _ in world.logins} == {"password"}


def test_a_refused_token_fails_both_logins_with_the_servers_words() -> None:
    cfg = with_endpoints(config(), oauth2_token_file="/run/token", oauth2_token=Secret("expired"))
    world = World(oauth2_error=ImapLoginError("XOAUTH2 login refused: [AUTHENTICATIONFAILED] (OAuth2 status: 401)"))
    result = run(world, cfg)
    got = outcomes(result)
    assert got["imap_auth"] is Outcome.FAILED and got["smtp_auth"] is Outcome.FAILED
    assert (got["send"], got["receive"]) == (Outcome.SKIPPED, Outcome.SKIPPED)
    imap = (result.routes[0].check("imap_auth") or _never()).message
    assert imap == "XOAUTH2 login refused: [AUTHENTICATIONFAILED] (OAuth2 status: 401)"


def test_imap_endpoint_default_provider_is_standard() -> None:
    assert ImapEndpoint("h", 993, "implicit").provider == "default"
    assert not Endpoint("h", 587, "starttls").uses_oauth2


def _never() -> object:
    raise AssertionError("missing check")
