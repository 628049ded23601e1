"""The flake and the NixOS module.

Parsing runs everywhere (Debian's nix-bin). Evaluating the module needs nixpkgs' lib:
set MAIL_MONITOR_NIXPKGS_LIB to a nixpkgs or nixpkgs.lib tree; without it those tests
are skipped (the one documented exception, see docs/nixos.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import run_cli

from mail_monitor.config import parse_duration

ROOT = Path(__file__).resolve().parent.parent
NIX_FILES = sorted(p for p in ROOT.rglob("*.nix") if ".git" not in p.parts)
LIB = os.environ.get("MAIL_MONITOR_NIXPKGS_LIB")
needs_lib = pytest.mark.skipif(not LIB, reason="MAIL_MONITOR_NIXPKGS_LIB is not set (see docs/nixos.md)")


def nix_instantiate(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("nix-instantiate") is None:
        pytest.fail("nix-instantiate is not installed (Debian package nix-bin; run .ci/run)")
    return subprocess.run(["nix-instantiate", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NIX_CONFIG": "build-users-group ="})


def test_there_are_nix_files() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in NIX_FILES}
    assert {"flake.nix", "nix/package.nix", "nix/module.nix", "nix/tests/vm.nix"} <= names


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nix_file_parses(path: Path) -> None:
    done = nix_instantiate("--parse", str(path))
    assert done.returncode == 0, done.stderr


def test_flake_lock_pins_a_release_branch() -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"]["nixpkgs"]
    assert re.fullmatch(r"nixos-\d\d\.\d\d", node["original"]["ref"])
    assert re.fullmatch(r"[0-9a-f]{40}", node["locked"]["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", node["locked"]["narHash"])
    assert node["original"]["ref"] in (ROOT / "flake.nix").read_text()


# --------------------------------------------------------------------------- evaluation

BASE: dict[str, Any] = {
    "enable": True,
    "smtp": {"host": "mail.example.org"},
    "credentials": {"username": "monitor@example.org", "passwordFile": "/run/secrets/mail-monitor"},
}


def evaluate(module_config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = merged({"services": {"mail-monitor": module_config}}, extra or {})
    done = nix_instantiate("--eval", "--strict", "--json", "--read-write-mode", str(ROOT / "tests/nix/eval.nix"),
                           "--arg", "libPath", str(LIB), "--argstr", "configJson", json.dumps(config))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_config(result: dict[str, Any], tmp_path: Path, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """Render the generated settings to TOML (as nixpkgs' json2toml does) and feed the program."""
    settings = json.loads(Path(result["configFile"]).read_text())
    config = tmp_path / "mail-monitor.toml"
    config.write_text(tomli_w.dumps(settings))
    credentials = tmp_path / "credentials"
    credentials.mkdir(exist_ok=True)
    for entry in result["serviceConfig"].get("LoadCredential", []):
        name = entry.split(":", 1)[0]
        (credentials / name).write_text((secrets or {}).get(name, f"secret-of-{name}") + "\n")
    done = run_cli("check-config", "-c", str(config), env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert done.returncode == 0, done.stderr
    for name in (secrets or {}).values():
        assert name not in done.stdout
    return tomllib.loads(done.stdout)


@needs_lib
def test_service_timer_and_credentials() -> None:
    result = evaluate(merged(BASE, {"ntfy": {"enable": True, "topic": "alerts", "tokenFile": "/run/keys/ntfy"}}))
    assert result["failedAssertions"] == []
    service = result["serviceConfig"]
    assert service["Type"] == "oneshot"
    assert re.fullmatch(r"/nix/store/\w+-mail-monitor-0\.1\.0/bin/mail-monitor run --config "
                        r"/nix/store/\w+-mail-monitor\.toml", service["ExecStart"])
    assert sorted(service["LoadCredential"]) == ["ntfy-token:/run/keys/ntfy",
                                                 "password-default:/run/secrets/mail-monitor"]
    assert service["SuccessExitStatus"] == [1, 2]
    assert service["TimeoutStartSec"] > 180  # above the default 3m run deadline
    assert service["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6"]
    assert service["StateDirectory"] == "mail-monitor"
    assert result["timerConfig"] == {"OnBootSec": "5min", "OnUnitActiveSec": "5min", "Persistent": True,
                                     "RandomizedDelaySec": "30s", "AccuracySec": "1s"}
    text = Path(result["configFile"]).read_text()
    assert "/run/secrets" not in text and "/run/keys" not in text
    settings = json.loads(text)
    assert settings["accounts"]["default"]["password_file"] == "$CREDENTIALS_DIRECTORY/password-default"
    assert settings["alerts"]["ntfy"]["token_file"] == "$CREDENTIALS_DIRECTORY/ntfy-token"
    assert settings["monitor"]["state_file"] == "/var/lib/mail-monitor/state.json"


@needs_lib
def test_generated_config_is_accepted_by_the_program(tmp_path: Path) -> None:
    result = evaluate(merged(BASE, {"ntfy": {"enable": True, "topic": "alerts", "tokenFile": "/run/keys/ntfy"},
                                    "metrics": {"textfile": {"enable": True}}}))
    resolved = check_config(result, tmp_path, {"password-default": "pw-123", "ntfy-token": "tk-456"})
    account = resolved["accounts"]["default"]
    assert account["smtp"] | {"host": "mail.example.org", "port": 587, "tls": "starttls"} == account["smtp"]
    assert account["imap"] | {"host": "mail.example.org", "port": 993, "tls": "implicit",
                              "extra_folders": ["Junk"]} == account["imap"]
    assert resolved["alerts"]["ntfy"]["topic"] == "alerts"
    assert resolved["metrics"]["textfile"] == "/var/lib/prometheus-node-exporter-text-files/mail_monitor.prom"


SEEDS = [
    ({"smtp": {"port": 2525}}, lambda r: r["accounts"]["default"]["smtp"]["port"], 2525),
    ({"smtp": {"tls": "implicit", "port": 465}}, lambda r: r["accounts"]["default"]["smtp"]["tls"], "implicit"),
    ({"imap": {"host": "imap.example.org"}}, lambda r: r["accounts"]["default"]["imap"]["host"], "imap.example.org"),
    ({"imap": {"port": 1993}}, lambda r: r["accounts"]["default"]["imap"]["port"], 1993),
    ({"imap": {"extraFolders": ["Spam"]}}, lambda r: r["accounts"]["default"]["imap"]["extra_folders"], ["Spam"]),
    ({"receiveTimeout": "2m"}, lambda r: r["routes"][0]["receive_timeout"], "2m"),
    ({"testRecipient": "alias@example.org"}, lambda r: r["accounts"][r["routes"][0]["to"]]["address"],
     "alias@example.org"),
    ({"ntfy": {"enable": True, "topic": "t1", "server": "https://ntfy.example.org"}},
     lambda r: r.get("alerts", {}).get("ntfy", {}).get("server"), "https://ntfy.example.org"),
    ({"stateDirectory": "mm"}, lambda r: r["monitor"]["state_file"], "/var/lib/mm/state.json"),
    ({"settings": {"monitor": {"deadline": "90s"}}}, lambda r: r["monitor"]["deadline"], "90s"),
]


@needs_lib
@pytest.mark.parametrize(("option", "read", "expected"), SEEDS, ids=[json.dumps(s[0]) for s in SEEDS])
def test_each_option_reaches_the_program(tmp_path: Path, option: dict[str, Any], read: Any, expected: Any) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    assert read(check_config(evaluate(BASE), before)) != expected
    assert read(check_config(evaluate(merged(BASE, option)), after)) == expected


@needs_lib
def test_settings_add_accounts_and_routes_with_their_secrets(tmp_path: Path) -> None:
    settings = {
        "accounts": {"gmail": {"address": "me@gmail.com", "password_file": "/run/agenix/gmail",
                               "smtp": {"host": "smtp.gmail.com"},
                               "imap": {"host": "imap.gmail.com", "extra_folders": ["[Gmail]/Spam"]}}},
        "routes": [{"name": "to-gmail", "from": "default", "to": "gmail"},
                   {"name": "from-gmail", "from": "gmail", "to": "default"}],
    }
    result = evaluate(merged(BASE, {"settings": settings}))
    assert "password-gmail:/run/agenix/gmail" in result["serviceConfig"]["LoadCredential"]
    assert "/run/agenix" not in Path(result["configFile"]).read_text()
    resolved = check_config(result, tmp_path)
    assert sorted(r["name"] for r in resolved["routes"]) == ["default", "from-gmail", "to-gmail"]
    assert resolved["accounts"]["gmail"]["password_file"] == "$CREDENTIALS_DIRECTORY/password-gmail"


@needs_lib
@pytest.mark.parametrize("deadline", ["4.5m", 300, 450.5, "1d", "1500ms", " 05s "])
def test_start_timeout_stays_above_the_deadline_the_program_reads(tmp_path: Path, deadline: object) -> None:
    # systemd must never kill a run that is still within its own deadline.
    result = evaluate(merged(BASE, {"settings": {"monitor": {"deadline": deadline}}}))
    assert result["failedAssertions"] == []
    seconds = parse_duration(check_config(result, tmp_path)["monitor"]["deadline"])
    assert seconds + 60 <= result["serviceConfig"]["TimeoutStartSec"] < seconds + 61


@needs_lib
def test_unreadable_deadline_is_a_clear_assertion() -> None:
    failed = evaluate(merged(BASE, {"settings": {"monitor": {"deadline": "soon"}}}))["failedAssertions"]
    assert len(failed) == 1 and 'settings.monitor.deadline: expected a duration like "90s"' in failed[0]


@needs_lib
def test_calendar_interval_uses_on_calendar() -> None:
    timer = evaluate(merged(BASE, {"interval": "*:0/10"}))["timerConfig"]
    assert timer["OnCalendar"] == "*:0/10" and timer["Persistent"] is True
    assert "OnUnitActiveSec" not in timer


@needs_lib
@pytest.mark.parametrize("secret", [{"credentials": {"passwordFile": "/nix/store/abc-password"}},
                                    {"ntfy": {"enable": True, "topic": "t", "tokenFile": "/nix/store/x-token"}}])
def test_secrets_in_the_store_are_refused(secret: dict[str, Any]) -> None:
    failed = evaluate(merged(BASE, secret))["failedAssertions"]
    assert len(failed) == 1 and "world-readable Nix store" in failed[0]


@needs_lib
def test_missing_route_is_a_clear_assertion() -> None:
    failed = evaluate({"enable": True})["failedAssertions"]
    assert any("no route to check" in message for message in failed)


@needs_lib
def test_node_exporter_textfile_collector_is_wired() -> None:
    result = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True}}}),
                      {"services": {"prometheus": {"exporters": {"node": {"enable": True}}}}})
    node = result["nodeExporter"]
    assert node["enabledCollectors"] == ["textfile"]
    assert node["extraFlags"] == ["--collector.textfile.directory=/var/lib/prometheus-node-exporter-text-files"]
    assert "d /var/lib/prometheus-node-exporter-text-files 0755 mail-monitor mail-monitor - -" in result["tmpfiles"]
    assert result["serviceConfig"]["ReadWritePaths"] == ["/var/lib/prometheus-node-exporter-text-files"]


def write_units(result: dict[str, Any], root: Path) -> tuple[Path, Path]:
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    service, timer = units / "mail-monitor.service", units / "mail-monitor.timer"
    service.write_text(result["serviceUnit"])
    timer.write_text(result["timerUnit"])
    return service, timer


@needs_lib
def test_hardening_exposure_is_at_most_1_1(tmp_path: Path) -> None:
    service, _ = write_units(evaluate(BASE), tmp_path)
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(service)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for mail-monitor\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 1.1


@needs_lib
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    result = evaluate(BASE)
    service, timer = write_units(result, tmp_path)
    shutil.copytree("/lib/systemd/system", tmp_path / "usr" / "lib" / "systemd" / "system", symlinks=True)
    executable = Path(result["serviceConfig"]["ExecStart"].split(" ")[0])
    stub = tmp_path / executable.relative_to("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={tmp_path}", str(service), str(timer)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    # verify exits 0 on unknown keys: any output at all is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
