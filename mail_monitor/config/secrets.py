"""Secrets: read from files (never from the config itself) or from a command, bounded and non-blocking."""

from __future__ import annotations

import os
import re
import selectors
import stat
import subprocess
import time
from collections.abc import Sequence

from mail_monitor.errors import MonitorError

MAX_SECRET_BYTES = 64 * 1024
TOKEN_COMMAND_TIMEOUT = 30.0


class Secret:
    """A secret value that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretError(MonitorError):
    """A secret could not be obtained (file unusable, token command failed)."""


def expand_credentials_path(raw: str) -> str:
    """Expand ``$CREDENTIALS_DIRECTORY`` (systemd's LoadCredential) and ``~``; nothing else."""

    def replace(match: re.Match[str]) -> str:
        value = os.environ.get("CREDENTIALS_DIRECTORY")
        if not value:
            raise ValueError("$CREDENTIALS_DIRECTORY is not set (not running under systemd?)")
        return value

    expanded = re.sub(r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b", replace, raw)
    return os.path.expanduser(expanded)


def _secret_text(data: bytes, where: str) -> Secret:
    """One line of UTF-8; one trailing newline (LF or CRLF) is not part of the secret."""
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    if value.endswith("\n"):
        value = value[:-1].removesuffix("\r")
    if not value:
        raise ValueError(f"{where}: file is empty")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{where}: more than one line (a secret file holds only the secret)")
    return Secret(value)


def read_secret_file(raw_path: str, warnings: list[str] | None = None) -> Secret:
    """Read a secret from a regular file of at most 64 KiB, without ever blocking.

    FIFOs, devices and directories are refused after ``fstat`` on a descriptor opened
    with ``O_NONBLOCK`` (so a FIFO without writer cannot hang the open either). A file
    readable by group or others adds a warning naming its mode to ``warnings``.
    """
    path = expand_credentials_path(raw_path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot open ({exc.strerror or exc.__class__.__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file ({_file_type(info.st_mode)})")
        if info.st_size > MAX_SECRET_BYTES:
            raise ValueError(f"{path}: larger than {MAX_SECRET_BYTES // 1024} KiB; expected only a secret")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SECRET_BYTES:
            chunk = os.read(fd, MAX_SECRET_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_SECRET_BYTES:
            raise ValueError(f"{path}: larger than {MAX_SECRET_BYTES // 1024} KiB; expected only a secret")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    finally:
        os.close(fd)
    if warnings is not None and info.st_mode & 0o044:
        warnings.append(f"{path} is readable by group/others (mode {stat.S_IMODE(info.st_mode):04o}); "
                        "chmod 600 it")
    return _secret_text(b"".join(chunks), path)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def run_token_command(argv: Sequence[str], timeout: float = TOKEN_COMMAND_TIMEOUT) -> Secret:
    """An OAuth2 access token from a command's first line of output (e.g. a token helper).

    Run without a shell, stdin closed, stderr discarded (it may hold secrets), killed
    after ``timeout`` seconds or once it prints more than 64 KiB. Called when the
    token is needed, never while loading the configuration.
    """
    name = os.path.basename(argv[0]) if argv else "?"
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, close_fds=True)
    except OSError as exc:
        raise SecretError(f"oauth2_token_command {name}: cannot start: {exc.strerror or exc}") from None
    assert process.stdout is not None
    output = bytearray()
    ends = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                left = ends - time.monotonic()
                if left <= 0:
                    raise SecretError(f"oauth2_token_command {name}: no answer within {timeout:g}s")
                if not selector.select(left):
                    continue
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
                if len(output) > MAX_SECRET_BYTES:
                    raise SecretError(f"oauth2_token_command {name}: printed more than "
                                      f"{MAX_SECRET_BYTES // 1024} KiB")
        try:
            code = process.wait(max(0.0, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise SecretError(f"oauth2_token_command {name}: did not exit within {timeout:g}s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if code != 0:
        raise SecretError(f"oauth2_token_command {name}: exited with status {code}")
    first_line = bytes(output).split(b"\n", 1)[0].strip()
    try:
        return _secret_text(first_line, f"oauth2_token_command {name}")
    except ValueError as exc:
        raise SecretError(str(exc)) from None
