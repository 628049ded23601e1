"""The flake and the NixOS module.

Parsing runs everywhere (Debian's nix-bin). Evaluating the module needs nixpkgs' lib:
set MAIL_MONITOR_NIXPKGS_LIB to a nixpkgs or nixpkgs.lib tree; without it those tests
are skipped (the one documented exception, see docs/nixos.md).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
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
#
# tests/nix/eval.nix evaluates the flake's module with nixpkgs' real lib.evalModules and
# stand-ins with nixpkgs' option shapes (tests/nix/nixos.nix, pkgs.nix, sops.nix). Like
# NixOS, it returns only the failed assertions (and warnings) when there are any.

BASE: dict[str, Any] = {
    "enable": True,
    "smtp": {"host": "mail.example.org"},
    "credentials": {"username": "monitor@example.org", "passwordFile": "/run/secrets/mail-monitor"},
}
NODE_EXPORTER: dict[str, Any] = {"services": {"prometheus": {"exporters": {"node": {"enable": True}}}}}
TEXTFILE_DIR = "/var/lib/prometheus-node-exporter-text-files"

# A configuration written for fudoniten/mail-monitor's `services.mail-monitor`: the
# example of its README, unchanged, plus its own defaults for receiveTimeout (an int of
# seconds) and stateDirectory (an absolute path) spelt out, and the password file given
# as a Nix path, which its `types.path` allows.
EXISTING_MODULE_CONFIG = """\
{
  services.mail-monitor = {
    enable = true;
    interval = "15min";  # Check every 15 minutes

    smtp.host = "mail.example.com";
    imap.host = "mail.example.com";

    credentials = {
      username = "monitor@example.com";
      passwordFile = /run/secrets/mail-monitor-password;
    };

    ntfy = {
      enable = true;
      topic = "my-mail-alerts";
      server = "https://ntfy.sh";  # or your self-hosted instance
    };

    receiveTimeout = 60;
    stateDirectory = "/var/lib/mail-monitor";
  };
}
"""

MULTI_ACCOUNT: dict[str, Any] = {
    "enable": True,
    "ntfy": {"topic": "mail-alerts", "tokenFile": "/run/keys/ntfy"},
    "settings": {
        "monitor": {"deadline": "4m"},
        "accounts": {
            "self": {"address": "monitor@example.org", "password_file": "/run/agenix/self",
                     "smtp": {"host": "mail.example.org"}, "imap": {"host": "mail.example.org"}},
            "gmail": {"address": "me@gmail.com", "password_file": "/run/agenix/gmail",
                      "smtp": {"host": "smtp.gmail.com"},
                      "imap": {"host": "imap.gmail.com", "extra_folders": ["[Gmail]/Spam"]}},
        },
        "routes": [{"name": "to-gmail", "from": "self", "to": "gmail", "receive_timeout": "2m"},
                   {"name": "from-gmail", "from": "gmail", "to": "self", "receive_timeout": "2m"}],
    },
}


HEARTBEAT_URL = "https://hc-ping.com/0a1b2c3d-0000-4000-8000-000000000000"
# check-config reads CA files: a bundle every Debian and NixOS host has.
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
TOKEN_COMMAND = ["/nix/store/00000000000000000000000000000000-oama/bin/oama", "access", "me@work.example"]

# Heartbeat, XOAUTH2 from a file (Gmail) and from a command, reports, domains, CA files and
# a resolver, all through settings; the secret files are the ones LoadCredential must take.
NEW_KEYS: dict[str, Any] = {
    "enable": True,
    "heartbeat": {"url": HEARTBEAT_URL},
    "settings": {
        "monitor": {"resolver": "127.0.0.1:5353"},
        "heartbeat": {"token_file": "/run/agenix/heartbeat"},
        "alerts": {"ntfy": {"topic": "mail-alerts", "server": "https://ntfy.example.org",
                            "token_file": "/run/agenix/ntfy", "ca_file": SYSTEM_CA,
                            "dashboard_url": "https://grafana.example.org/d/mail",
                            "runbook_url": "https://wiki.example.org/mail", "email": "me@elsewhere.example"}},
        "accounts": {
            "self": {"address": "monitor@example.org", "password_file": "/run/agenix/self",
                     "smtp": {"host": "mail.example.org", "ca_file": SYSTEM_CA},
                     "imap": {"host": "mail.example.org", "ca_file": SYSTEM_CA}},
            "gmail": {"address": "me@gmail.com",
                      "smtp": {"host": "smtp.gmail.com", "oauth2_token_file": "/run/agenix/gmail-smtp"},
                      "imap": {"host": "imap.gmail.com", "provider": "gmail",
                               "oauth2_token_file": "/run/agenix/gmail-imap"}},
            "work": {"address": "me@work.example",
                     "smtp": {"host": "smtp.work.example", "oauth2_token_command": TOKEN_COMMAND},
                     "imap": {"host": "imap.work.example", "oauth2_token_command": TOKEN_COMMAND}},
        },
        "routes": [{"name": "to-gmail", "from": "self", "to": "gmail", "mode": "async"},
                   {"name": "from-gmail", "from": "gmail", "to": "self", "mode": "async"},
                   {"name": "to-work", "from": "self", "to": "work"}],
        "reports": {"account": "self", "folder": "DMARC"},
        "domains": [{"name": "example.org", "dkim_selectors": ["mail"], "mta_sts": True,
                     "ca_file": SYSTEM_CA}],
    },
}
# Credential name -> the file it is loaded from, and where the TOML names it.
NEW_KEYS_SECRETS = {
    "password-self": ("/run/agenix/self", ("accounts", "self", "password_file")),
    "oauth2-gmail-smtp": ("/run/agenix/gmail-smtp", ("accounts", "gmail", "smtp", "oauth2_token_file")),
    "oauth2-gmail-imap": ("/run/agenix/gmail-imap", ("accounts", "gmail", "imap", "oauth2_token_file")),
    "ntfy-token": ("/run/agenix/ntfy", ("alerts", "ntfy", "token_file")),
    "heartbeat-token": ("/run/agenix/heartbeat", ("heartbeat", "token_file")),
}


def dig(table: dict[str, Any], at: tuple[str, ...]) -> Any:
    for key in at:
        table = table[key]
    return table


def _eval(tmp_args: list[str]) -> dict[str, Any]:
    done = nix_instantiate("--eval", "--strict", "--json", "--read-write-mode", str(ROOT / "tests/nix/eval.nix"),
                           "--arg", "libPath", str(LIB), *tmp_args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def evaluate(module_config: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config = merged({"services": {"mail-monitor": module_config}}, extra or {})
    return _eval(["--argstr", "configJson", json.dumps(config)])


def evaluate_nix(text: str, tmp_path: Path) -> dict[str, Any]:
    """Evaluate a host configuration written in Nix (for Nix paths and `config` references)."""
    host = tmp_path / "host.nix"
    host.write_text(text)
    return _eval(["--arg", "configModule", str(host)])


def evaluate_vm_test() -> dict[str, Any]:
    return _eval(["--arg", "vmTest", "true"])


def docs_example(marker: str = "metrics.textfile.enable = true") -> str:
    """A complete host configuration docs/nixos.md shows (the one with ``marker``), exactly as printed there."""
    blocks = re.findall(r"```nix\n(.*?)```", (ROOT / "docs/nixos.md").read_text(), re.S)
    (example,) = [block for block in blocks if marker in block and "sops.secrets" in block]
    return example


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_config(result: dict[str, Any], tmp_path: Path, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """Render the generated settings to TOML (as nixpkgs' json2toml does) and feed the program."""
    assert result["failedAssertions"] == []
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
    assert result["failedAssertions"] == [] and result["warnings"] == []
    service = result["serviceConfig"]
    assert service["Type"] == "oneshot"
    assert re.fullmatch(r"/nix/store/\w+-mail-monitor-0\.1\.0/bin/mail-monitor run --config "
                        r"/nix/store/\w+-mail-monitor\.toml", service["ExecStart"])
    assert sorted(service["LoadCredential"]) == ["ntfy-token:/run/keys/ntfy",
                                                 "password-default:/run/secrets/mail-monitor"]
    assert service["SuccessExitStatus"] == [1, 2]
    assert service["TimeoutStartSec"] > 180  # above the default 3m run deadline
    assert service["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6"]
    assert (service["StateDirectory"], service["WorkingDirectory"]) == ("mail-monitor", "/var/lib/mail-monitor")
    assert (service["User"], service["Group"]) == ("mail-monitor", "mail-monitor")
    assert result["users"] == {"mail-monitor": {"isSystemUser": True, "group": "mail-monitor"}}
    assert result["groups"] == ["mail-monitor"]
    assert result["timerWantedBy"] == ["timers.target"]
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
    assert resolved["metrics"]["textfile"] == f"{TEXTFILE_DIR}/mail_monitor.prom"


SEEDS = [
    ({"smtp": {"port": 2525}}, lambda r: r["accounts"]["default"]["smtp"]["port"], 2525),
    ({"smtp": {"tls": "implicit", "port": 465}}, lambda r: r["accounts"]["default"]["smtp"]["tls"], "implicit"),
    ({"imap": {"host": "imap.example.org"}}, lambda r: r["accounts"]["default"]["imap"]["host"], "imap.example.org"),
    ({"imap": {"port": 1993}}, lambda r: r["accounts"]["default"]["imap"]["port"], 1993),
    ({"imap": {"extraFolders": ["Spam"]}}, lambda r: r["accounts"]["default"]["imap"]["extra_folders"], ["Spam"]),
    ({"receiveTimeout": "2m"}, lambda r: r["routes"][0]["receive_timeout"], "2m"),
    ({"receiveTimeout": 120}, lambda r: parse_duration(r["routes"][0]["receive_timeout"]), 120),
    ({"testRecipient": "alias@example.org"}, lambda r: r["accounts"][r["routes"][0]["to"]]["address"],
     "alias@example.org"),
    ({"ntfy": {"enable": True, "topic": "t1", "server": "https://ntfy.example.org"}},
     lambda r: r.get("alerts", {}).get("ntfy", {}).get("server"), "https://ntfy.example.org"),
    # The existing module's ntfy.enable defaults to true: a topic alone means alerts.
    ({"ntfy": {"topic": "t2"}}, lambda r: r.get("alerts", {}).get("ntfy", {}).get("topic"), "t2"),
    ({"stateDirectory": "mm"}, lambda r: r["monitor"]["state_file"], "/var/lib/mm/state.json"),
    ({"stateDirectory": "/var/lib/mm"}, lambda r: r["monitor"]["state_file"], "/var/lib/mm/state.json"),
    ({"stateDirectory": "/var/lib/mm/"}, lambda r: r["monitor"]["state_file"], "/var/lib/mm/state.json"),
    ({"settings": {"monitor": {"deadline": "90s"}}}, lambda r: r["monitor"]["deadline"], "90s"),
    # check-config shows a ping URL's scheme and host only: the rest is the secret.
    ({"heartbeat": {"url": HEARTBEAT_URL}}, lambda r: r.get("heartbeat", {}).get("url"),
     "https://hc-ping.com/<redacted>"),
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
def test_ntfy_topic_with_ntfy_disabled_gives_no_alerts() -> None:
    settings = evaluate(merged(BASE, {"ntfy": {"enable": False, "topic": "t"}}))["settings"]
    assert "alerts" not in settings


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
    seconds = parse_duration(check_config(result, tmp_path)["monitor"]["deadline"])
    assert seconds + 60 <= result["serviceConfig"]["TimeoutStartSec"] < seconds + 61



@needs_lib
def test_every_secret_file_of_the_new_keys_goes_through_load_credential(tmp_path: Path) -> None:
    result = evaluate(NEW_KEYS)
    assert result["failedAssertions"] == [] and result["warnings"] == []
    loaded = dict(entry.split(":", 1) for entry in result["serviceConfig"]["LoadCredential"])
    assert loaded == {name: path for name, (path, _) in NEW_KEYS_SECRETS.items()}
    text = Path(result["configFile"]).read_text()
    assert "/run/agenix" not in text
    settings = json.loads(text)
    for name, (_, at) in NEW_KEYS_SECRETS.items():
        assert dig(settings, at) == f"$CREDENTIALS_DIRECTORY/{name}"
    # Each credential holds a different secret: check-config reads every one, and shows none.
    resolved = check_config(result, tmp_path, {name: f"secret-{i}-{name}" for i, name in enumerate(NEW_KEYS_SECRETS)})
    assert settings["heartbeat"]["url"] == HEARTBEAT_URL
    assert resolved["heartbeat"]["url"] == "https://hc-ping.com/<redacted>"
    assert resolved["monitor"]["resolver"] == "127.0.0.1:5353"
    assert resolved["reports"]["account"] == "self"
    assert resolved["accounts"]["gmail"]["imap"]["provider"] == "gmail"
    assert resolved["domains"][0]["ca_file"] == SYSTEM_CA


@needs_lib
def test_token_command_stays_a_list_and_is_no_credential(tmp_path: Path) -> None:
    # A command, not a file: the TOML keeps its argv exactly, and nothing is loaded for it.
    result = evaluate(NEW_KEYS)
    settings = json.loads(Path(result["configFile"]).read_text())
    for endpoint in ("smtp", "imap"):
        assert settings["accounts"]["work"][endpoint]["oauth2_token_command"] == TOKEN_COMMAND
    assert not any(entry.startswith("oauth2-work") for entry in result["serviceConfig"]["LoadCredential"])
    assert check_config(result, tmp_path)["accounts"]["work"]["imap"]["oauth2_token_command"] == TOKEN_COMMAND


@needs_lib
def test_secret_already_in_the_credentials_directory_is_left_to_the_host() -> None:
    # The host loads it itself (serviceConfig.LoadCredential); the module must not load it again.
    own = {"settings": {"heartbeat": {"url": HEARTBEAT_URL, "token_file": "$CREDENTIALS_DIRECTORY/gatus"},
                        "accounts": {"default": {"imap": {"oauth2_token_file": "$CREDENTIALS_DIRECTORY/tok"}}}}}
    result = evaluate(merged(BASE, own))
    assert result["serviceConfig"]["LoadCredential"] == ["password-default:/run/secrets/mail-monitor"]
    assert result["settings"]["heartbeat"]["token_file"] == "$CREDENTIALS_DIRECTORY/gatus"


@needs_lib
def test_oauth2_and_heartbeat_tokens_as_nix_paths_are_not_copied_to_the_store(tmp_path: Path) -> None:
    (tmp_path / "gmail-token").write_text("ya29.token-in-a-file\n")
    (tmp_path / "hb-token").write_text("hb-token-in-a-file\n")
    result = evaluate_nix("""{ services.mail-monitor = {
        enable = true; smtp.host = "mail.example.org"; credentials.username = "m@example.org";
        credentials.passwordFile = "/run/secrets/pw";
        settings.heartbeat = { url = "https://hc-ping.com/x"; token_file = ./hb-token; };
        settings.accounts.default.imap.oauth2_token_file = ./gmail-token; }; }""", tmp_path)
    loaded = dict(entry.split(":", 1) for entry in result["serviceConfig"]["LoadCredential"])
    assert loaded["oauth2-default-imap"] == f"{tmp_path}/gmail-token"
    assert loaded["heartbeat-token"] == f"{tmp_path}/hb-token"
    text = Path(result["configFile"]).read_text()
    assert "token-in-a-file" not in text and str(tmp_path) not in text


@needs_lib
@pytest.mark.parametrize(("path", "visible"), [
    ("/etc/ssl/private-ca.pem", True),       # ProtectSystem=strict: read-only, still there
    ("/var/lib/acme/ca/chain.pem", True),
    ("/run/secrets/ca.pem", True),
    ("/home/admin/ca.pem", False),           # ProtectHome= hides /home, /root, /run/user
    ("/root/ca.pem", False),
    ("/run/user/1000/ca.pem", False),
])
@pytest.mark.parametrize("where", ["smtp", "imap", "ntfy", "domain", "heartbeat"])
def test_ca_file_the_hardening_hides_is_bound_in(path: str, visible: bool, where: str) -> None:
    settings: dict[str, Any] = {
        "smtp": {"accounts": {"default": {"smtp": {"ca_file": path}}}},
        "imap": {"accounts": {"default": {"imap": {"ca_file": path}}}},
        "ntfy": {"alerts": {"ntfy": {"topic": "t", "ca_file": path}}},
        "domain": {"domains": [{"name": "example.org", "ca_file": path}]},
        "heartbeat": {"heartbeat": {"url": HEARTBEAT_URL, "ca_file": path}},
    }[where]
    result = evaluate(merged(BASE, {"settings": settings}))
    assert result["failedAssertions"] == []
    service = result["serviceConfig"]
    if visible:
        assert "BindReadOnlyPaths" not in service and service["ProtectHome"] is True
    else:
        # Bound onto itself in empty (tmpfs) home directories; "-": a missing file is the
        # program's to report, naming the key.
        assert service["BindReadOnlyPaths"] == [f"-{path}"] and service["ProtectHome"] == "tmpfs"
    # Not a secret: the TOML names the file itself, and nothing is loaded for it.
    assert json.dumps(path) in Path(result["configFile"]).read_text()
    assert all(path not in entry for entry in service["LoadCredential"])


# --------------------------------------------------------------------------- assertions


@needs_lib
@pytest.mark.parametrize(("option", "message"), [
    ({"settings": {"monitor": {"deadline": "soon"}}}, 'settings.monitor.deadline: expected a duration like "90s"'),
    ({"receiveTimeout": "a while"}, 'receiveTimeout: expected seconds or a duration like "90s"'),
    # Both reached the TOML settings as null first, which nixpkgs' TOML type refuses.
    ({"ntfy": {"enable": True}}, "ntfy.enable is set but ntfy.topic is not"),
    ({"smtp": {"host": None}, "imap": {"host": "imap.example.org"}}, "the simple setup needs smtp.host"),
    ({"stateDirectory": "/srv/mail-monitor"}, 'stateDirectory: expected a name below /var/lib ("mail-monitor")'),
    ({"stateDirectory": "/var/lib/../etc"}, 'stateDirectory: expected a name below /var/lib ("mail-monitor")'),
    ({"stateDirectory": "/var/lib"}, 'stateDirectory: expected a name below /var/lib ("mail-monitor")'),
    ({"credentials": {"passwordFile": "/nix/store/abc-password"}}, "world-readable Nix store"),
    ({"ntfy": {"topic": "t", "tokenFile": "/nix/store/x-token"}}, "world-readable Nix store"),
    ({"settings": {"heartbeat": {"url": HEARTBEAT_URL, "token_file": "/nix/store/x-hb"}}},
     "credential heartbeat-token (/nix/store/x-hb) is in the world-readable Nix store"),
    ({"settings": {"accounts": {"default": {"imap": {"oauth2_token_file": "/nix/store/x-oauth"}}}}},
     "credential oauth2-default-imap (/nix/store/x-oauth) is in the world-readable Nix store"),
    ({"settings": {"accounts": {"default": {"smtp": {"ca_file": "/tmp/ca.pem"}}}}},
     "the ca_file /tmp/ca.pem is in /tmp, which the service does not see"),
    ({"settings": {"domains": [{"name": "example.org", "ca_file": "/var/tmp/sts/ca.pem"}]}},
     "the ca_file /var/tmp/sts/ca.pem is in /var/tmp, which the service does not see"),
], ids=["deadline", "receiveTimeout", "ntfy-without-topic", "imap-without-smtp", "state-outside-var-lib",
        "state-dotdot", "state-var-lib", "password-in-store", "token-in-store", "heartbeat-token-in-store",
        "oauth2-token-in-store", "ca-in-tmp", "ca-in-var-tmp"])
def test_bad_values_fail_one_clear_assertion(option: dict[str, Any], message: str) -> None:
    result = evaluate(merged(BASE, option))
    failed = result["failedAssertions"]
    assert len(failed) == 1 and failed[0].startswith("services.mail-monitor: ") and message in failed[0], failed
    # The settings stay TOML values (no null), so they can still be read to find the mistake.
    assert "null" not in json.dumps(result["settings"])


@needs_lib
def test_missing_route_is_a_clear_assertion() -> None:
    failed = evaluate({"enable": True})["failedAssertions"]
    assert any("no route to check" in message for message in failed)


# --------------------------------------------------------------------------- the existing module


@needs_lib
def test_config_for_the_existing_module_carries_over_unchanged(tmp_path: Path) -> None:
    result = evaluate_nix(EXISTING_MODULE_CONFIG, tmp_path)
    assert result["failedAssertions"] == [] and result["warnings"] == []
    service = result["serviceConfig"]
    assert (service["StateDirectory"], service["WorkingDirectory"]) == ("mail-monitor", "/var/lib/mail-monitor")
    assert service["LoadCredential"] == ["password-default:/run/secrets/mail-monitor-password"]
    assert result["timerConfig"]["OnCalendar"] == "*:0/15"
    resolved = check_config(result, tmp_path, {"password-default": "pw-789"})
    assert resolved["monitor"]["state_file"] == "/var/lib/mail-monitor/state.json"
    assert parse_duration(resolved["routes"][0]["receive_timeout"]) == 60
    assert resolved["alerts"]["ntfy"]["topic"] == "my-mail-alerts"
    assert resolved["accounts"]["default"]["imap"]["host"] == "mail.example.com"


# Every option of fudoniten/mail-monitor's module (module.nix at b2604c8).
EXISTING_MODULE_OPTIONS = [
    "enable", "interval", "smtp.host", "smtp.port", "imap.host", "imap.port", "credentials.username",
    "credentials.passwordFile", "testRecipient", "receiveTimeout", "ntfy.enable", "ntfy.topic", "ntfy.server",
    "stateDirectory",
]


@needs_lib
def test_options_of_the_existing_module_exist_and_are_documented() -> None:
    docs = {o["name"].removeprefix("services.mail-monitor."): o for o in evaluate(BASE)["optionDocs"]}
    assert set(EXISTING_MODULE_OPTIONS) <= set(docs)
    assert {"user", "group", "configFile", "settings", "metrics.textfile.enable"} <= set(docs)
    for name, option in docs.items():
        assert option["description"], name
        assert option["default"] is not None, name


@needs_lib
def test_password_file_as_a_nix_path_is_not_copied_to_the_store(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("pw-in-a-file\n")
    result = evaluate_nix("""{ services.mail-monitor = {
        enable = true; smtp.host = "mail.example.org"; credentials.username = "m@example.org";
        credentials.passwordFile = ./password; }; }""", tmp_path)
    # "${./password}" would have been /nix/store/…-password, readable by every user.
    assert result["serviceConfig"]["LoadCredential"] == [f"password-default:{tmp_path}/password"]
    assert "pw-in-a-file" not in Path(result["configFile"]).read_text()


@needs_lib
def test_password_file_as_a_store_path_is_refused(tmp_path: Path) -> None:
    result = evaluate_nix("""{ services.mail-monitor = {
        enable = true; smtp.host = "mail.example.org"; credentials.username = "m@example.org";
        credentials.passwordFile = /nix/store/00000000000000000000000000000000-password; }; }""", tmp_path)
    (message,) = result["failedAssertions"]
    assert "world-readable Nix store" in message


# --------------------------------------------------------------------------- timer


def calendar_steps(expression: str) -> set[int]:
    """Seconds between consecutive elapses of a calendar expression, as systemd computes them."""
    done = subprocess.run(["systemd-analyze", "calendar", "--iterations=5", "--base-time=2026-01-05 00:00:07 UTC",
                           expression], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    times = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
             for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout)]
    assert len(times) == 5, done.stdout
    return {int(b - a) for a, b in itertools.pairwise(times)}


@needs_lib
@pytest.mark.parametrize(("interval", "seconds"), [
    ("30s", 30), ("1min", 60), ("5min", 300), ("15min", 900), ("20 minutes", 1200), ("1h", 3600), ("2h", 7200),
    ("6h", 21600), ("1d", 86400), ("1w", 604800),
])
def test_even_interval_becomes_an_exact_persistent_calendar(interval: str, seconds: int) -> None:
    timer = evaluate(merged(BASE, {"interval": interval}))["timerConfig"]
    assert timer["Persistent"] is True and "OnUnitActiveSec" not in timer and "OnBootSec" not in timer
    assert calendar_steps(timer["OnCalendar"]) == {seconds}


@needs_lib
@pytest.mark.parametrize("interval", ["7min", "90min", "1h 30min", "2d", "45s", "1.5h"])
def test_uneven_interval_runs_after_each_run_without_persistent(interval: str) -> None:
    timer = evaluate(merged(BASE, {"interval": interval}))["timerConfig"]
    # systemd.timer(5): Persistent= only applies to OnCalendar; set elsewhere it does nothing.
    assert timer["OnBootSec"] == timer["OnUnitActiveSec"] == interval
    assert "Persistent" not in timer and "OnCalendar" not in timer


@needs_lib
@pytest.mark.parametrize("interval", ["*:0/10", "hourly", "Mon..Fri *-*-* 08..18:00"])
def test_calendar_interval_is_used_as_given(interval: str) -> None:
    timer = evaluate(merged(BASE, {"interval": interval}))["timerConfig"]
    assert timer["OnCalendar"] == interval and timer["Persistent"] is True
    assert "OnUnitActiveSec" not in timer


@needs_lib
def test_timer_spreads_hosts_with_a_fixed_random_delay() -> None:
    timer = evaluate(merged(BASE, {"randomizedDelay": "2min"}))["timerConfig"]
    assert (timer["RandomizedDelaySec"], timer["FixedRandomDelay"]) == ("2min", True)


# --------------------------------------------------------------------------- metrics wiring


@needs_lib
def test_docs_example_with_metrics_evaluates(tmp_path: Path) -> None:
    # On nixpkgs, `node = mkIf node.enable …` recursed forever here.
    result = evaluate_nix(docs_example(), tmp_path)
    assert result["failedAssertions"] == [] and result["warnings"] == []
    assert result["nodeExporterExecStart"].count(f"--collector.textfile.directory={TEXTFILE_DIR} ") == 1
    assert result["serviceConfig"]["ReadWritePaths"] == [TEXTFILE_DIR]
    resolved = check_config(result, tmp_path)
    assert resolved["metrics"]["textfile"] == f"{TEXTFILE_DIR}/mail_monitor.prom"
    assert {route["name"] for route in resolved["routes"]} == {"default", "self-to-gmail", "gmail-to-self"}



@needs_lib
def test_docs_example_with_heartbeat_gmail_reports_and_domains(tmp_path: Path) -> None:
    result = evaluate_nix(docs_example("heartbeat.url"), tmp_path)
    assert result["failedAssertions"] == [] and result["warnings"] == []
    loaded = dict(entry.split(":", 1) for entry in result["serviceConfig"]["LoadCredential"])
    assert loaded == {"password-self": "/run/secrets/mail-monitor-password", "ntfy-token": "/run/secrets/ntfy-token",
                      "oauth2-gmail-smtp": "/run/gmail-oauth2/access-token",
                      "oauth2-gmail-imap": "/run/gmail-oauth2/access-token"}
    text = Path(result["configFile"]).read_text()
    assert "/run/secrets" not in text and "/run/gmail-oauth2" not in text
    resolved = check_config(result, tmp_path, {"oauth2-gmail-imap": "ya29.imap-token", "ntfy-token": "tk-1"})
    assert resolved["heartbeat"]["url"].startswith("https://hc-ping.com/")
    assert resolved["accounts"]["gmail"]["imap"]["oauth2_token_file"] == "$CREDENTIALS_DIRECTORY/oauth2-gmail-imap"
    assert {route["name"]: route["mode"] for route in resolved["routes"]} == {
        "self": "sync", "self-to-gmail": "async", "gmail-to-self": "async"}
    assert resolved["reports"]["account"] == "self"
    assert [domain["name"] for domain in resolved["domains"]] == ["example.org"]

@needs_lib
def test_metrics_without_node_exporter_evaluates() -> None:
    result = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True}}}))
    assert result["nodeExporterExecStart"] is None
    assert result["settings"]["metrics"]["textfile"] == f"{TEXTFILE_DIR}/mail_monitor.prom"
    assert f"d {TEXTFILE_DIR} 0755 mail-monitor mail-monitor - -" in result["tmpfiles"]
    assert result["serviceConfig"]["ReadWritePaths"] == [TEXTFILE_DIR]


@needs_lib
def test_node_exporter_keeps_its_own_textfile_directory() -> None:
    own = {"services": {"prometheus": {"exporters": {"node": {
        "extraFlags": ["--collector.textfile.directory=/var/lib/node-textfiles", "--log.level=warn"]}}}}}
    result = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True}}}), merged(NODE_EXPORTER, own))
    assert result["failedAssertions"] == [] and result["warnings"] == []
    # node_exporter refuses to start when the flag is given twice.
    assert result["nodeExporterExecStart"].count("--collector.textfile.directory") == 1
    assert result["settings"]["metrics"]["textfile"] == "/var/lib/node-textfiles/mail_monitor.prom"
    assert result["serviceConfig"]["ReadWritePaths"] == ["/var/lib/node-textfiles"]


@needs_lib
def test_textfile_directory_twice_in_node_exporter_is_a_clear_assertion() -> None:
    own = {"services": {"prometheus": {"exporters": {"node": {
        "enabledCollectors": ["textfile", "textfile.directory=/var/lib/node-textfiles"]}}}}}
    failed = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True}}}),
                      merged(NODE_EXPORTER, own))["failedAssertions"]
    assert len(failed) == 1 and "--collector.textfile.directory more than once" in failed[0]


@needs_lib
def test_node_exporter_reading_another_directory_is_a_warning() -> None:
    own = {"services": {"prometheus": {"exporters": {"node": {
        "extraFlags": ["--collector.textfile.directory=/var/lib/node-textfiles"]}}}}}
    result = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True, "directory": "/var/lib/mm-metrics"}}}),
                      merged(NODE_EXPORTER, own))
    (warning,) = result["warnings"]
    assert "/var/lib/mm-metrics" in warning and "/var/lib/node-textfiles" in warning


@needs_lib
def test_metrics_path_from_settings_is_writable_and_wired() -> None:
    path = "/var/lib/mm-metrics/mail_monitor.prom"
    result = evaluate(merged(BASE, {"metrics": {"textfile": {"enable": True}},
                                    "settings": {"metrics": {"textfile": path}}}), NODE_EXPORTER)
    assert result["serviceConfig"]["ReadWritePaths"] == ["/var/lib/mm-metrics"]
    assert "d /var/lib/mm-metrics 0755 mail-monitor mail-monitor - -" in result["tmpfiles"]
    assert result["nodeExporterExecStart"].count("--collector.textfile.directory=/var/lib/mm-metrics ") == 1


@needs_lib
def test_metrics_path_only_in_settings_is_writable() -> None:
    # Without metrics.textfile.enable the program still writes there, so it must be writable.
    result = evaluate(merged(BASE, {"settings": {"metrics": {"textfile": "/var/lib/mm-metrics/mail_monitor.prom"}}}))
    assert result["serviceConfig"]["ReadWritePaths"] == ["/var/lib/mm-metrics"]
    assert "d /var/lib/mm-metrics 0755 mail-monitor mail-monitor - -" in result["tmpfiles"]


# --------------------------------------------------------------------------- service knobs


@needs_lib
def test_hardening_can_be_relaxed_without_mkforce() -> None:
    relaxed = {"systemd": {"services": {"mail-monitor": {"serviceConfig": {
        "ProtectHome": "read-only", "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
        "TimeoutStartSec": 900}}}}}
    service = evaluate(BASE, relaxed)["serviceConfig"]
    assert (service["ProtectHome"], service["TimeoutStartSec"]) == ("read-only", 900)
    assert service["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6", "AF_UNIX"]


@needs_lib
def test_own_user_and_group() -> None:
    own = {"users": {"users": {"monitor": {"isSystemUser": True, "group": "monitor"}}, "groups": {"monitor": {}}}}
    result = evaluate(merged(BASE, {"user": "monitor", "group": "monitor", "metrics": {"textfile": {"enable": True}}}),
                      own)
    assert result["failedAssertions"] == []
    assert (result["serviceConfig"]["User"], result["serviceConfig"]["Group"]) == ("monitor", "monitor")
    assert "mail-monitor" not in result["users"] and result["groups"] == ["monitor"]
    assert f"d {TEXTFILE_DIR} 0755 monitor monitor - -" in result["tmpfiles"]


@needs_lib
def test_config_file_escape_hatch() -> None:
    result = evaluate({"enable": True, "configFile": "/run/secrets-rendered/mail-monitor.toml"})
    assert result["failedAssertions"] == [] and result["warnings"] == []
    service = result["serviceConfig"]
    # Passed as a credential, so a 0400 root file (a sops-nix template) works.
    assert service["ExecStart"].endswith(" run --config %d/config.toml")
    assert service["LoadCredential"] == ["config.toml:/run/secrets-rendered/mail-monitor.toml"]
    assert result["configFile"] is None
    ignored = evaluate(merged(BASE, {"configFile": "/etc/mail-monitor.toml"}))
    (warning,) = ignored["warnings"]
    assert "configFile is set, so smtp, imap, credentials and ntfy are ignored" in warning


# --------------------------------------------------------------------------- units as systemd sees them


def write_units(result: dict[str, Any], root: Path) -> tuple[Path, Path]:
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    service, timer = units / "mail-monitor.service", units / "mail-monitor.timer"
    service.write_text(result["serviceUnit"])
    timer.write_text(result["timerUnit"])
    return service, timer


SETUPS = ["simple", "multi-account", "docs-example", "existing-module", "config-file", "vm-test", "uneven-interval",
          "new-keys", "docs-example-new-keys"]
# The queue check relaxes three hardening settings on purpose (docs/queue.md), so only
# systemd-analyze verify runs on it, not the exposure bound.
QUEUE_CHECK: dict[str, Any] = merged(BASE, {"settings": {"postfix_queue": {"enable": True}}})


def setup_result(name: str, tmp_path: Path) -> dict[str, Any]:
    if name == "simple":
        return evaluate(BASE)
    if name == "multi-account":
        return evaluate(MULTI_ACCOUNT)
    if name == "docs-example":
        return evaluate_nix(docs_example(), tmp_path)
    if name == "existing-module":
        return evaluate_nix(EXISTING_MODULE_CONFIG, tmp_path)
    if name == "new-keys":
        # With a CA file the hardening hides (ProtectHome=), so the bind mount is rendered too.
        home_ca = {"settings": {"domains": [{"name": "example.org", "ca_file": "/home/admin/mta-sts-ca.pem"}]}}
        result = evaluate(merged(NEW_KEYS, home_ca))
        assert result["serviceConfig"]["ProtectHome"] == "tmpfs"
        return result
    if name == "docs-example-new-keys":
        return evaluate_nix(docs_example("heartbeat.url"), tmp_path)
    if name == "uneven-interval":
        return evaluate(merged(BASE, {"interval": "1h 30min"}))
    if name == "postfix-queue":
        return evaluate(QUEUE_CHECK, {"services": {"postfix": {"enable": True}}})
    if name == "config-file":
        return evaluate({"enable": True, "configFile": "/etc/mail-monitor.toml",
                         "metrics": {"textfile": {"enable": True}}}, NODE_EXPORTER)
    return evaluate_vm_test()


@needs_lib
@pytest.mark.parametrize("setup", SETUPS)
def test_hardening_exposure_is_at_most_1_1(tmp_path: Path, setup: str) -> None:
    result = setup_result(setup, tmp_path)
    assert result["failedAssertions"] == []
    service, _ = write_units(result, tmp_path / "root")
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(service)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for mail-monitor\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 1.1


@needs_lib
@pytest.mark.parametrize("setup", [*SETUPS, "postfix-queue"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, setup: str) -> None:
    result = setup_result(setup, tmp_path)
    root = tmp_path / "root"
    service, timer = write_units(result, root)
    shutil.copytree("/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    executable = Path(result["serviceConfig"]["ExecStart"].split(" ")[0])
    stub = root / executable.relative_to("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(service), str(timer)],
                          capture_output=True, text=True, timeout=60, cwd=root)
    # verify exits 0 on unknown keys: any output at all is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@needs_lib
@pytest.mark.parametrize("postfix", [{"enable": True}, {"enable": True, "setgidGroup": "maildrop"}, {}])
def test_queue_check_gets_exactly_what_postqueue_needs(tmp_path: Path, postfix: dict[str, Any]) -> None:
    result = evaluate(QUEUE_CHECK, {"services": {"postfix": postfix}})
    assert result["failedAssertions"] == []
    service = result["serviceConfig"]
    assert service["SupplementaryGroups"] == [postfix.get("setgidGroup", "postdrop")]
    assert service["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service["PrivateUsers"] is False
    # Postfix's own postqueue on PATH; never the set-gid wrapper, which NoNewPrivileges defeats.
    (path,) = result["servicePath"]
    assert re.fullmatch(r"/nix/store/\w+-postfix-0", path)
    assert service["NoNewPrivileges"] is True and service["ProtectSystem"] == "strict"
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged", "~@resources"]
    assert check_config(result, tmp_path)["postfix_queue"]["enable"] is True


@needs_lib
def test_without_the_queue_check_nothing_is_relaxed() -> None:
    for config in (BASE, merged(BASE, {"settings": {"postfix_queue": {"enable": False}}})):
        result = evaluate(config, {"services": {"postfix": {"enable": True}}})
        service = result["serviceConfig"]
        assert service["RestrictAddressFamilies"] == ["AF_INET", "AF_INET6"]
        assert service["PrivateUsers"] is True
        assert service.get("SupplementaryGroups", []) == [] and result["servicePath"] == []


# --------------------------------------------------------------------------- VM test and package


@needs_lib
def test_vm_test_machine_evaluates_and_matches_its_script() -> None:
    result = evaluate_vm_test()
    assert result["failedAssertions"] == [] and result["warnings"] == []
    script = (ROOT / "nix/tests/vm.nix").read_text()
    settings = result["settings"]
    # The paths the test script reads are the ones the module configures.
    assert f"test -f {settings['monitor']['state_file']}" in script
    assert f"{TEXTFILE_DIR}/mail_monitor.prom" in script
    assert settings["metrics"]["textfile"] == f"{TEXTFILE_DIR}/mail_monitor.prom"
    assert result["nodeExporterExecStart"].count(f"--collector.textfile.directory={TEXTFILE_DIR} ") == 1
    assert {entry.split(":", 1)[1] for entry in result["serviceConfig"]["LoadCredential"]} == {
        "/run/secrets/mail-monitor"}
    assert result["timerConfig"]["OnCalendar"] == "*:0/1"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> list[str]:
    """PyPI requirement names as nixpkgs names their Python packages (PEP 503, lower-case, dashes)."""
    return sorted(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower()  # type: ignore[union-attr]
                  for r in requirements)


@needs_lib
def test_flake_outputs_and_package_against_nixpkgs_names() -> None:
    done = nix_instantiate("--eval", "--strict", "--json", "--read-write-mode", str(ROOT / "tests/nix/outputs.nix"),
                           "--arg", "libPath", str(LIB))
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    project = pyproject()
    assert sorted(outputs) == ["aarch64-linux", "x86_64-linux"]
    for system, out in outputs.items():
        assert (out["pname"], out["version"]) == (project["project"]["name"], project["project"]["version"])
        assert sorted(out["dependencies"]) == requirement_names(project["project"]["dependencies"])
        assert out["buildSystem"] == requirement_names(project["build-system"]["requires"])
        assert out["mainProgram"] in project["project"]["scripts"]
        assert out["app"]["type"] == "app"
        assert re.fullmatch(rf"/nix/store/\w+-mail-monitor-{re.escape(out['version'])}/bin/{out['mainProgram']}",
                            out["app"]["program"])
        assert out["overlayPackage"] == f"mail-monitor-{out['version']}"
        assert out["nixosModules"] == ["default"]
        assert out["checks"] == (["package", "vm"] if system == "x86_64-linux" else ["package"])
        assert "cryptography" in out["nativeCheckInputs"]


def test_package_source_lists_existing_files() -> None:
    text = (ROOT / "nix/package.nix").read_text()
    (unions,) = re.findall(r"fileset\.unions \[(.*?)\];", text, re.S)
    listed = re.findall(r"\.\./([\w./-]+)", unions)
    assert "mail_monitor" in listed and "pyproject.toml" in listed
    for name in listed:
        assert (ROOT / name).exists(), name
