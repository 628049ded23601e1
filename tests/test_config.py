"""Configuration: every mistake is one clear line with file, key and expectation; exit 3."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import run_cli

from mail_monitor.config import ConfigError, Secret, load_config, parse_duration, read_secret_file
from mail_monitor.example import example_config

SECRET = "s3cr3t-do-not-leak"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    return path


def base_config(password_file: Path) -> str:
    return f"""
[monitor]
state_file = "/tmp/state.json"
deadline = "2m"

[accounts.self]
address = "monitor@example.com"
password_file = "{password_file}"
smtp = {{ host = "mail.example.com" }}
imap = {{ host = "mail.example.com", extra_folders = ["Junk"] }}

[[routes]]
name = "self"
from = "self"
to = "self"
receive_timeout = "90s"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800),
                                                ("250ms", 0.25), (42, 42), (1.5, 1.5), ("0", 0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1w", True, -3, [1], float("nan"), float("inf"),
                                  -float("inf"), 10**400, 10**15, "1e3", "inf", "nan", "1" * 5000 + "s"],
                         ids=lambda v: str(v)[:20])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_and_resolution(tmp_path: Path, password_file: Path) -> None:
    config = load(tmp_path, base_config(password_file))
    account = config.accounts["self"]  # type: ignore[attr-defined]
    assert account.username == "monitor@example.com"
    assert (account.smtp.port, account.smtp.tls) == (587, "starttls")
    assert (account.imap.port, account.imap.tls, account.imap.extra_folders) == (993, "implicit", ("Junk",))
    assert account.password.reveal() == SECRET  # one trailing newline stripped
    assert SECRET not in repr(config) and SECRET not in str(account.password)
    route = config.routes[0]  # type: ignore[attr-defined]
    assert (route.receive_timeout, route.slow_after) == (90, 30)
    assert config.monitor.deadline == 120  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('deadline = "2m"', 'deadlin = "2m"', 'monitor.deadlin: unknown key (did you mean "deadline"?)'),
        ('deadline = "2m"', 'deadline = "soon"', "monitor.deadline: expected a duration"),
        ('receive_timeout = "90s"', "receive_timeout = true", "routes[0].receive_timeout: expected a duration"),
        ('to = "self"', 'to = "slef"',
         'routes[0].to: expected the name of an [accounts.NAME] table (did you mean "self"?)'),
        ('smtp = { host = "mail.example.com" }', 'smtp = { host = "mail.example.com", port = "587" }',
         "accounts.self.smtp.port: expected an integer from 1 to 65535, got \"587\""),
        ('smtp = { host = "mail.example.com" }', 'smtp = { host = "mail.example.com", tls = "ssl" }',
         'accounts.self.smtp.tls: expected one of "starttls", "implicit", "none"'),
        ('address = "monitor@example.com"', 'address = "monitor"', "accounts.self.address: expected an e-mail address"),
        ('name = "self"', 'name = "my route"', "routes[0].name: expected 1-64 letters, digits"),
    ],
)
def test_mistakes_name_file_key_and_expectation(tmp_path: Path, password_file: Path, old: str, new: str,
                                                expected: str) -> None:
    text = base_config(password_file)
    assert old in text
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text.replace(old, new, 1))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "config.toml") + ": ")
    assert expected in message
    assert "\n" not in message


def test_route_needs_an_account_that_can_receive(tmp_path: Path, password_file: Path) -> None:
    text = base_config(password_file).replace('imap = { host = "mail.example.com", extra_folders = ["Junk"] }', "")
    with pytest.raises(ConfigError, match=r"routes\[0\]\.to: expected an account with an imap table"):
        load(tmp_path, text)


def test_unreadable_and_empty_secrets(tmp_path: Path, password_file: Path) -> None:
    text = base_config(password_file)
    with pytest.raises(ConfigError, match=r"accounts\.self\.password_file: cannot read secret: .*no such file"):
        load(tmp_path, text.replace(str(password_file), str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="file is empty"):
        load(tmp_path, text.replace(str(password_file), str(empty)))


def test_credentials_directory_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mail-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret_file("$CREDENTIALS_DIRECTORY/mail-password") == Secret("from-systemd")
    assert read_secret_file("${CREDENTIALS_DIRECTORY}/mail-password").reveal() == "from-systemd"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ValueError, match="CREDENTIALS_DIRECTORY is not set"):
        read_secret_file("$CREDENTIALS_DIRECTORY/mail-password")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(tmp_path, "[monitor\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_cli_config_error_is_one_line_exit_3(tmp_path: Path, password_file: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(base_config(password_file).replace("receive_timeout", "recieve_timeout"))
    for command in ("run", "check-config"):
        done = run_cli(command, "-c", str(path))
        assert done.returncode == 3
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert f"{path}: routes[0].recieve_timeout: unknown key (did you mean \"receive_timeout\"?)" in lines[0]


def test_cli_usage_error_is_exit_3() -> None:
    done = run_cli("run", "--format", "xml")
    assert done.returncode == 3
    assert "invalid choice" in done.stderr


def test_check_config_prints_resolved_config_without_secrets(tmp_path: Path, password_file: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(base_config(password_file))
    done = run_cli("check-config", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    resolved = tomllib.loads(done.stdout)
    assert resolved["accounts"]["self"]["password_file"] == str(password_file)
    assert resolved["accounts"]["self"]["smtp"] == {"host": "mail.example.com", "port": 587, "tls": "starttls",
                                                      "allow_plaintext": False}
    assert resolved["routes"][0]["receive_timeout"] == "90s"


def test_check_config_takes_heartbeat_ca_file_and_timeout_and_hides_the_ping_url(
        tmp_path: Path, password_file: Path) -> None:
    ca = tmp_path / "hc-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    uuid = "0b7c1f55-heartbeat-secret-uuid"
    path = tmp_path / "config.toml"
    heartbeat = f'[heartbeat]\nurl = "https://hc.example.org/ping/{uuid}"\nca_file = "{ca}"\ntimeout = "4s"\n'
    path.write_text(base_config(password_file) + heartbeat)
    done = run_cli("check-config", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert uuid not in done.stdout + done.stderr
    assert tomllib.loads(done.stdout)["heartbeat"] == {
        "url": "https://hc.example.org/<redacted>", "method": "GET", "ca_file": str(ca), "timeout": "4s"}
    ca.unlink()
    done = run_cli("check-config", "-c", str(path))
    assert done.returncode == 3
    assert "heartbeat.ca_file: expected a readable CA file (PEM), got " in done.stderr
    path.write_text(base_config(password_file) + heartbeat.replace('"4s"', '"1h"'))
    done = run_cli("check-config", "-c", str(path))
    assert done.returncode == 3 and "heartbeat.timeout: expected" in done.stderr


def test_init_writes_an_example_that_loads(tmp_path: Path, password_file: Path) -> None:
    target = tmp_path / "etc" / "config.toml"
    done = run_cli("init", str(target))
    assert done.returncode == 0, done.stderr
    text = target.read_text()
    assert text == example_config()
    assert text.count("\n# ") > 10  # annotated
    assert run_cli("init", str(target)).returncode == 3  # never overwrites silently
    # With the secret paths pointed at real files, the example is a valid configuration.
    data = tomllib.loads(text)
    assert data["routes"][0]["name"] == "self"
    for old in ("/run/secrets/mail-monitor", "/run/secrets/ntfy-token"):
        text = text.replace(old, str(password_file))
    target.write_text(text)
    assert run_cli("check-config", "-c", str(target)).returncode == 0


def test_adhoc_flags_are_validated_like_a_file(tmp_path: Path) -> None:
    done = run_cli("run", "--smtp-host", "x", "--imap-host", "y", "--username", "me@example.com",
                   "--password-file", str(tmp_path / "missing"))
    assert done.returncode == 3
    assert "<command line>: accounts.self.password_file: cannot read secret" in done.stderr
    done = run_cli("run", "--smtp-host", "x")
    assert done.returncode == 3
    assert "missing --imap-host, --username, --password-file" in done.stderr
