"""Load and validate the TOML configuration into typed, immutable dataclasses.

Every problem becomes one :class:`ConfigError` line naming the file, the key
path and what was expected, so a typo never reaches the network code.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from mail_monitor.errors import ConfigError

TlsMode = Literal["starttls", "implicit", "none"]
TLS_MODES: tuple[str, ...] = ("starttls", "implicit", "none")
DEFAULT_PORTS = {
    "smtp": {"starttls": 587, "implicit": 465, "none": 25},
    "imap": {"starttls": 143, "implicit": 993, "none": 143},
}
DEFAULT_CONFIG_PATH = Path("/etc/mail-monitor/config.toml")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


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


@dataclass(frozen=True)
class Endpoint:
    """Where a protocol is spoken, and how its certificate is checked."""

    host: str
    port: int
    tls: TlsMode
    ca_file: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ImapEndpoint(Endpoint):
    """An IMAP endpoint, with the folders (Junk...) where a test mail may also land."""

    extra_folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Account:
    """A mailbox the monitor logs into; ``password_file`` is kept only to name it in messages."""

    name: str
    address: str
    username: str
    password_file: str
    password: Secret = field(repr=False)
    smtp: Endpoint | None = None
    imap: ImapEndpoint | None = None


@dataclass(frozen=True)
class Route:
    """"Mail from ``sender`` must reach ``recipient``": the unit that passes or fails."""

    name: str
    sender: Account
    recipient: Account
    receive_timeout: float = 60.0
    slow_after: float = 30.0
    mode: str = "sync"  # "async": send now, look for the probe on later runs
    late_after: float = 900.0
    lost_after: float = 7200.0


@dataclass(frozen=True)
class NtfySettings:
    """Where alerts go and when; secrets are read at load time, never shown."""

    topic: str
    server: str = "https://ntfy.sh"
    token: Secret | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    password_file: str | None = None
    ca_file: Path | None = None
    after_failures: int = 1
    remind_every: float = 0.0
    click: str | None = None
    timeout: float = 10.0
    retries: int = 3


@dataclass(frozen=True)
class MonitorSettings:
    """How one run behaves: its deadline, its timeouts, what cleanup may touch."""

    state_file: Path | None = Path("/var/lib/mail-monitor/state.json")
    deadline: float = 180.0
    timeout: float = 30.0
    subject_prefix: str = "[mail-monitor]"
    delete_test_mail: bool = True
    stale_after: float = 3600.0
    cleanup_window: float = 7 * 86400.0
    tls_warn_days: float = 14.0
    max_parallel: int = 50
    instance: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True)
class Config:
    """A validated configuration: nothing past ``load_config`` re-checks it."""

    monitor: MonitorSettings
    accounts: Mapping[str, Account]
    routes: tuple[Route, ...]
    ntfy: NtfySettings | None = None
    metrics_textfile: Path | None = None
    source: str = "<flags>"


# --------------------------------------------------------------------------- helpers

T = TypeVar("T")


def parse_duration(value: object) -> float:
    """Seconds from "90s", "5m", "1h", "1.5d", "250ms" or a plain number."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def human_duration(seconds: float) -> str:
    """For people: "1d 2h 5m", "12m", "40s" (whole minutes once past the first one)."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{secs}s"


def expand_credentials_path(raw: str) -> str:
    """Expand ``$CREDENTIALS_DIRECTORY`` (systemd's LoadCredential) and ``~``; nothing else."""

    def replace(match: re.Match[str]) -> str:
        value = os.environ.get("CREDENTIALS_DIRECTORY")
        if not value:
            raise ValueError("$CREDENTIALS_DIRECTORY is not set (not running under systemd?)")
        return value

    expanded = re.sub(r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b", replace, raw)
    return os.path.expanduser(expanded)


def read_secret_file(raw_path: str) -> Secret:
    """Read a secret from a file; strips one trailing newline, refuses empty files."""
    path = expand_credentials_path(raw_path)
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    if value.endswith("\n"):
        value = value[:-1]
        if value.endswith("\r"):
            value = value[:-1]
    if not value:
        raise ValueError(f"{path}: file is empty")
    return Secret(value)


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib  # only ever needed for an error message: not on every run's start

    hint = difflib.get_close_matches(name, known, n=1)
    return f' (did you mean "{hint[0]}"?)' if hint else ""


class _Reader:
    """Walks a parsed TOML table, recording the key path for error messages."""

    def __init__(self, source: str, table: Mapping[str, Any], path: str = "") -> None:
        self.source = source
        self.table = table
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, expected: str, got: object = None) -> ConfigError:
        shown = "" if got is None else f", got {_describe(got)}"
        return ConfigError(f"{self.source}: {self.key(name)}: expected {expected}{shown}")

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.table.get(name)

    def has(self, name: str) -> bool:
        return name in self.table

    def typed(self, name: str, kind: type[T], expected: str, default: T | None = None,
              required: bool = False) -> T | None:
        value = self._get(name)
        if value is None:
            if required:
                raise ConfigError(f"{self.source}: {self.key(name)}: missing; expected {expected}")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, expected, value)
        return value

    def string(self, name: str, default: str | None = None, required: bool = False,
               nonempty: bool = True) -> str | None:
        value = self.typed(name, str, "a string", default, required)
        if value is not None and nonempty and not value.strip():
            raise self.error(name, "a non-empty string", value)
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.typed(name, int, f"an integer from {low} to {high}", default)
        assert value is not None
        if not low <= value <= high:
            raise self.error(name, f"an integer from {low} to {high}", value)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.typed(name, bool, "true or false", default)
        assert value is not None
        return value

    def duration(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self._get(name)
        if value is None:
            return default
        expected = 'a duration like "90s", "5m", "1h" or a number of seconds'
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise self.error(name, expected, value) from None
        if seconds < minimum:
            raise self.error(name, f"a duration of at least {format_duration(minimum)}", value)
        return seconds

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(name, default)
        assert value is not None
        if value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            raise self.error(name, f"one of {options}", value)
        return value

    def path_value(self, name: str) -> Path | None:
        value = self.string(name)
        return Path(os.path.expanduser(value)) if value is not None else None

    def secret(self, name: str, required: bool = False) -> tuple[str | None, Secret | None]:
        raw = self.string(name, required=required)
        if raw is None:
            return None, None
        try:
            return raw, read_secret_file(raw)
        except ValueError as exc:
            raise ConfigError(f"{self.source}: {self.key(name)}: cannot read secret: {exc}") from None

    def sub(self, name: str, required: bool = False) -> _Reader | None:
        value = self._get(name)
        if value is None:
            if required:
                raise ConfigError(f"{self.source}: {self.key(name)}: missing; expected a table")
            return None
        if not isinstance(value, dict):
            raise self.error(name, "a table", value)
        return _Reader(self.source, value, self.key(name))

    def finish(self) -> None:
        """Unknown keys are errors, with a did-you-mean hint."""
        for name in self.table:
            if name not in self.seen:
                suffix = _did_you_mean(name, sorted(self.seen))
                known = ", ".join(sorted(self.seen))
                raise ConfigError(
                    f"{self.source}: {self.key(name)}: unknown key{suffix}; expected one of: {known}"
                )


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- sections


def _monitor(reader: _Reader | None) -> MonitorSettings:
    defaults = MonitorSettings()
    if reader is None:
        return defaults
    state_file: Path | None = defaults.state_file
    if reader.has("state_file"):
        state_file = reader.path_value("state_file")
    settings = MonitorSettings(
        state_file=state_file,
        deadline=reader.duration("deadline", defaults.deadline, minimum=1),
        timeout=reader.duration("timeout", defaults.timeout, minimum=0.1),
        subject_prefix=reader.string("subject_prefix", defaults.subject_prefix) or "",
        delete_test_mail=reader.boolean("delete_test_mail", defaults.delete_test_mail),
        stale_after=reader.duration("stale_after", defaults.stale_after, minimum=60),
        cleanup_window=reader.duration("cleanup_window", defaults.cleanup_window, minimum=86400),
        tls_warn_days=float(reader.integer("tls_warn_days", int(defaults.tls_warn_days), 0, 3650)),
        max_parallel=reader.integer("max_parallel", defaults.max_parallel, 1, 1000),
        instance=reader.string("instance", defaults.instance) or defaults.instance,
    )
    if len(settings.subject_prefix.strip()) < 3:
        raise reader.error("subject_prefix", "at least 3 visible characters (cleanup relies on it)",
                           settings.subject_prefix)
    reader.finish()
    return settings


def _endpoint(reader: _Reader, kind: str, factory: Callable[..., T], **extra: Any) -> T:
    default_tls = "starttls" if kind == "smtp" else "implicit"
    tls = reader.choice("tls", TLS_MODES, default_tls)
    host = reader.string("host", required=True)
    port = reader.integer("port", DEFAULT_PORTS[kind][tls], 1, 65535)
    ca_file = reader.path_value("ca_file")
    if ca_file is not None and not os.access(ca_file, os.R_OK):
        raise reader.error("ca_file", "a readable CA file (PEM)", str(ca_file))
    if kind == "imap":
        folders = reader.typed("extra_folders", list, "an array of folder names", [])
        assert folders is not None
        if not all(isinstance(f, str) and f for f in folders):
            raise reader.error("extra_folders", "an array of non-empty strings", folders)
        extra["extra_folders"] = tuple(folders)
    reader.finish()
    return factory(host=host, port=port, tls=tls, ca_file=ca_file, **extra)


def _account(name: str, reader: _Reader) -> Account:
    address = reader.string("address", required=True)
    assert address is not None
    if "@" not in address:
        raise reader.error("address", "an e-mail address", address)
    username = reader.string("username", address) or address
    smtp_reader = reader.sub("smtp")
    imap_reader = reader.sub("imap")
    if smtp_reader is None and imap_reader is None:
        raise ConfigError(f"{reader.source}: {reader.path}: expected an smtp or imap table (or both)")
    password_file, password = reader.secret("password_file", required=True)
    assert password_file is not None and password is not None
    smtp = _endpoint(smtp_reader, "smtp", Endpoint) if smtp_reader else None
    imap = _endpoint(imap_reader, "imap", ImapEndpoint) if imap_reader else None
    reader.finish()
    return Account(name, address, username, password_file, password, smtp, imap)


def _routes(source: str, raw: object, accounts: Mapping[str, Account]) -> tuple[Route, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: routes: expected at least one [[routes]] table")
    routes: list[Route] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: routes[{index}]: expected a table, got {_describe(item)}")
        reader = _Reader(source, item, f"routes[{index}]")
        name = reader.string("name", required=True)
        assert name is not None
        if not re.fullmatch(r"[A-Za-z0-9_.@+-]+", name):
            raise reader.error("name", "letters, digits and _ . @ + - only", name)
        if any(r.name == name for r in routes):
            raise reader.error("name", "a name no other route uses", name)
        ends: dict[str, Account] = {}
        for key, needs in (("from", "smtp"), ("to", "imap")):
            account_name = reader.string(key, required=True)
            assert account_name is not None
            account = accounts.get(account_name)
            if account is None:
                suffix = _did_you_mean(account_name, list(accounts))
                known = ", ".join(sorted(accounts)) or "none defined"
                raise reader.error(key, f"the name of an [accounts.NAME] table{suffix}; known: {known}",
                                   account_name)
            if getattr(account, needs) is None:
                raise reader.error(key, f"an account with an {needs} table "
                                   f'(accounts.{account_name}.{needs} is missing)', account_name)
            ends[key] = account
        routes.append(Route(
            name=name,
            sender=ends["from"],
            recipient=ends["to"],
            receive_timeout=reader.duration("receive_timeout", 60.0, minimum=1),
            slow_after=reader.duration("slow_after", 30.0, minimum=0.001),
            mode=reader.choice("mode", ("sync", "async"), "sync"),
            late_after=reader.duration("late_after", 900.0, minimum=60),
            lost_after=reader.duration("lost_after", 7200.0, minimum=60),
        ))
        reader.finish()
    return tuple(routes)


def _ntfy(reader: _Reader) -> NtfySettings:
    topic = reader.string("topic", required=True)
    assert topic is not None
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", topic):
        raise reader.error("topic", "1-64 letters, digits, _ or -", topic)
    server = (reader.string("server", "https://ntfy.sh") or "").rstrip("/")
    if not re.match(r"^https?://[^/\s]+", server):
        raise reader.error("server", "an http:// or https:// URL", server)
    token_file, token = reader.secret("token_file")
    username = reader.string("username")
    password_file, password = reader.secret("password_file")
    if token and username:
        raise reader.error("token_file", "either token_file or username + password_file, not both")
    if (username is None) != (password is None):
        raise reader.error("username", "username and password_file together")
    click = reader.string("click")
    settings = NtfySettings(
        topic=topic,
        server=server,
        token=token,
        token_file=token_file,
        username=username,
        password=password,
        password_file=password_file,
        ca_file=reader.path_value("ca_file"),
        after_failures=reader.integer("after_failures", 1, 1, 1000),
        remind_every=reader.duration("remind_every", 0.0),
        click=click,
        timeout=reader.duration("timeout", 10.0, minimum=0.5),
        retries=reader.integer("retries", 3, 0, 10),
    )
    reader.finish()
    return settings


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    top = _Reader(source, data)
    monitor = _monitor(top.sub("monitor"))
    accounts_reader = top.sub("accounts", required=True)
    assert accounts_reader is not None
    accounts: dict[str, Account] = {}
    for name in accounts_reader.table:
        sub = accounts_reader.sub(name)
        assert sub is not None
        accounts[name] = _account(name, sub)
    if not accounts:
        raise ConfigError(f"{source}: accounts: expected at least one [accounts.NAME] table")
    routes = _routes(source, top._get("routes"), accounts)
    ntfy = None
    alerts = top.sub("alerts")
    if alerts is not None:
        ntfy_reader = alerts.sub("ntfy")
        if ntfy_reader is not None:
            ntfy = _ntfy(ntfy_reader)
        alerts.finish()
    textfile = None
    metrics = top.sub("metrics")
    if metrics is not None:
        textfile = metrics.path_value("textfile")
        if textfile is not None and not textfile.name.endswith(".prom"):
            raise metrics.error("textfile", 'a file name ending in ".prom" (node_exporter reads only those)',
                                str(textfile))
        metrics.finish()
    top.finish()
    return Config(monitor, accounts, routes, ntfy, textfile, source)


def load_config(path: Path) -> Config:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with: mail-monitor init {path})") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, str(path))
