"""Secret files are regular, bounded and read without blocking; the token command is bounded too."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from mail_monitor.config import (
    MAX_SECRET_BYTES,
    ConfigError,
    Secret,
    SecretError,
    load_config,
    read_secret_file,
    run_token_command,
)


def finishes(call: Callable[[], Any], seconds: float = 10) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def secret_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo: not a regular file \(a FIFO\)"):
        finishes(lambda: read_secret_file(str(fifo)))


@pytest.mark.parametrize(("path", "what"), [("/dev/zero", "a character device"), ("/dev/null", "a character device"),
                                            ("/", "a directory")])
def test_devices_and_directories_are_refused(path: str, what: str) -> None:
    with pytest.raises(ValueError, match=f"not a regular file \\({what}\\)"):
        finishes(lambda: read_secret_file(path))


def test_size_is_bounded(tmp_path: Path) -> None:
    assert read_secret_file(str(secret_file(tmp_path, b"x" * MAX_SECRET_BYTES))).reveal() == "x" * MAX_SECRET_BYTES
    with pytest.raises(ValueError, match="larger than 64 KiB"):
        read_secret_file(str(secret_file(tmp_path, b"x" * (MAX_SECRET_BYTES + 1))))


@pytest.mark.parametrize(("content", "expected"), [(b"pw\n", "pw"), (b"pw\r\n", "pw"), (b"pw", "pw"),
                                                   (b" pw \n", " pw "), ("pässwörd\n".encode(), "pässwörd")])
def test_one_trailing_newline_is_not_part_of_the_secret(tmp_path: Path, content: bytes, expected: str) -> None:
    assert read_secret_file(str(secret_file(tmp_path, content))) == Secret(expected)


@pytest.mark.parametrize(("content", "error"), [(b"", "file is empty"), (b"\n", "file is empty"),
                                                (b"one\ntwo\n", "more than one line"), (b"a\0b", "more than one"),
                                                (b"\xff\xfe", "not UTF-8")])
def test_bad_contents(tmp_path: Path, content: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_secret_file(str(secret_file(tmp_path, content)))


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o604, True),
                                              (0o644, True), (0o700, False)])
def test_readable_by_others_is_a_warning_naming_the_mode(tmp_path: Path, mode: int, warned: bool) -> None:
    warnings: list[str] = []
    path = secret_file(tmp_path, b"pw\n", mode)
    assert read_secret_file(str(path), warnings).reveal() == "pw"
    if warned:
        assert warnings == [f"{path} is readable by group/others (mode {mode:04o}); chmod 600 it"]
    else:
        assert warnings == []


def config_text(secret: Path, smtp: str = '{ host = "mail.example.org" }') -> str:
    return (f'[accounts.a]\naddress = "a@example.org"\npassword_file = "{secret}"\nsmtp = {smtp}\n'
            'imap = { host = "mail.example.org" }\n[[routes]]\nname = "r"\nfrom = "a"\nto = "a"\n')


def test_load_config_returns_the_mode_warning_with_the_key(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, b"pw\n", 0o644)
    path = tmp_path / "c.toml"
    path.write_text(config_text(secret))
    config = load_config(path)
    assert config.warnings == (f"{path}: accounts.a.password_file: {secret} is readable by group/others "
                               "(mode 0644); chmod 600 it",)
    assert config.accounts["a"].password == Secret("pw")
    assert config.routes[0].sender.password == Secret("pw")  # routes see the accounts with their secrets


def test_schema_errors_come_before_secret_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config_text(tmp_path / "missing").replace('name = "r"', 'name = "r r"'))
    with pytest.raises(ConfigError, match=r"routes\[0\]\.name: expected"):
        load_config(path)
    path.write_text(config_text(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"accounts\.a\.password_file: cannot read secret: .*missing: no such file"):
        load_config(path)


def test_config_file_itself_must_be_a_regular_bounded_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        finishes(lambda: load_config(fifo))
    with pytest.raises(ConfigError, match="not a regular file"):
        finishes(lambda: load_config(Path("/dev/zero")))
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 1024 * 1024)
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(big)
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(deep)


def test_cli_warns_on_stderr_and_still_exits_0(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, b"pw\n", 0o640)
    path = tmp_path / "c.toml"
    path.write_text(config_text(secret, '{ host = "127.0.0.1", tls = "none" }'))
    done = run_cli("check-config", "-c", str(path))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, done.stderr
    assert "accounts.a.password_file" in warnings[1] and "(mode 0640)" in warnings[1]
    assert 'accounts.a.smtp: tls = "none"' in warnings[0]
    assert "pw" not in done.stdout.replace("password_file", "")


def test_cli_fifo_secret_is_exit_3_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = tmp_path / "c.toml"
    path.write_text(config_text(fifo))
    for command in ("check-config", "run"):
        done = run_cli(command, "-c", str(path), timeout=60)
        assert done.returncode == 3
        assert done.stderr.strip().count("\n") == 0 and "not a regular file (a FIFO)" in done.stderr


# --------------------------------------------------------------------------- token command


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "token.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_token_command_first_line(tmp_path: Path) -> None:
    argv = script(tmp_path, "import sys; print('ya29.token'); print('second line'); sys.stderr.write('noise')")
    assert run_token_command(argv) == Secret("ya29.token")


@pytest.mark.parametrize(("body", "error"), [
    ("import sys; sys.stderr.write('secret-in-stderr'); sys.exit(4)", "exited with status 4"),
    ("print('')", "file is empty"),
    ("import sys; sys.stdout.write('x' * 200000); sys.stdout.flush()", "printed more than 64 KiB"),
])
def test_token_command_failures(tmp_path: Path, body: str, error: str) -> None:
    with pytest.raises(SecretError, match=error) as info:
        run_token_command(script(tmp_path, body))
    assert "secret-in-stderr" not in str(info.value)


def test_token_command_timeout_kills_it(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    argv = script(tmp_path, f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(SecretError, match=r"no answer within 0.5s"):
        run_token_command(argv, timeout=0.5)
    assert time.monotonic() - started < 30
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


def test_token_command_that_closes_stdout_but_lingers(tmp_path: Path) -> None:
    argv = script(tmp_path, "import os, sys, time; print('tok'); sys.stdout.flush(); os.close(1); time.sleep(60)")
    with pytest.raises(SecretError, match=r"did not exit within 0\.5s"):
        run_token_command(argv, timeout=0.5)


def test_token_command_missing_program() -> None:
    with pytest.raises(SecretError, match="oauth2_token_command no-such-program: cannot start"):
        run_token_command(["/nonexistent/no-such-program"])


def test_adhoc_plaintext_warns_unless_allowed(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, b"pw\n")
    flags = ["check-config", "--smtp-host", "127.0.0.1", "--smtp-tls", "none", "--imap-host", "127.0.0.1",
             "--username", "me@example.org", "--password-file", str(secret)]
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    assert '<command line>: accounts.self.smtp: tls = "none": the login crosses the network' in done.stderr
    done = run_cli(*flags, "--allow-plaintext")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_oauth2_token_of_an_endpoint(tmp_path: Path) -> None:
    from mail_monitor.config import Endpoint, oauth2_token

    assert oauth2_token(Endpoint("h", 587, "starttls")) is None
    from_file = Endpoint("h", 587, "starttls", oauth2_token_file="/t", oauth2_token=Secret("file-token"))
    assert oauth2_token(from_file) == Secret("file-token")
    command = Endpoint("h", 587, "starttls", oauth2_token_command=tuple(script(tmp_path, "print('cmd-token')")))
    assert oauth2_token(command) == Secret("cmd-token")
