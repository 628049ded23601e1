"""Parse TOML data into a :class:`Config` (pure), then read the secret files (a separate step).

Every problem becomes one :class:`ConfigError` line naming the file, the key path and
what was expected; user input echoed in it is escaped and shortened.
"""

from __future__ import annotations

import os
import stat
import time
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from mail_monitor.config import kinds
from mail_monitor.config import schema as s
from mail_monitor.config.model import (
    Account,
    BlocklistSettings,
    Config,
    DnsServer,
    DomainSettings,
    Endpoint,
    HeartbeatSettings,
    ImapEndpoint,
    MonitorSettings,
    NtfySettings,
    PostfixQueueSettings,
    ReportsSettings,
    Route,
    default_instance,
)
from mail_monitor.config.secrets import (
    TOKEN_COMMAND_TIMEOUT,
    Secret,
    SecretError,
    read_secret_file,
    run_token_command,
)
from mail_monitor.config.text import escape, shorten, shown_name, shown_value
from mail_monitor.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/mail-monitor/config.toml")
MAX_CONFIG_BYTES = 1024 * 1024
AnyEndpoint = TypeVar("AnyEndpoint", bound=Endpoint)
MAX_TABLES = 1000  # accounts, routes, domains: each at most this many


def _did_you_mean(name: str, known: list[str]) -> str:
    import difflib  # only ever needed for an error message: not on every run's start

    hint = difflib.get_close_matches(name[:200], known, n=1)
    return f' (did you mean "{hint[0]}"?)' if hint else ""


class _Context:
    """The file name and the warnings of one parse."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.shown_source = shorten(escape(source), 200)
        self.warnings: list[str] = []

    def fail(self, path: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.shown_source}: {path}: {message}")

    def expected(self, path: str, expected: str, got: object) -> NoReturn:
        self.fail(path, f"expected {expected}, got {shown_value(got)}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.shown_source}: {path}: {message}")

    def table(self, raw: object, path: str, what: str = "a table") -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.expected(path, what, raw)
        return raw

    def tables(self, raw: object, path: str, header: str, required: bool) -> list[dict[str, Any]]:
        """An array of tables (``[[routes]]``), at least one if ``required``."""
        if raw is None and not required:
            return []
        if not isinstance(raw, list) or (required and not raw) or len(raw) > MAX_TABLES:
            least = "at least one" if required else "an array of"
            self.expected(path, f"{least} {header} table{'s' if not required else ''} "
                          f"(at most {MAX_TABLES})", raw)
        return [self.table(item, f"{path}[{index}]") for index, item in enumerate(raw)]

    def read(self, section: s.Section, raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        """Every key of ``section``: parsed, or its default; unknown keys are errors."""
        for name in raw:
            if name not in section.names:
                known = list(section.names)
                self.fail(f"{path}.{shown_name(name)}", f"unknown key{_did_you_mean(name, known)}; "
                          f"expected one of: {', '.join(known)}")
        values: dict[str, Any] = {}
        for key in section.keys:
            if key.name in raw:
                try:
                    values[key.name] = key.kind.parse(raw[key.name])
                except kinds.Invalid:
                    self.expected(f"{path}.{key.name}", key.kind.expected, raw[key.name])
            elif key.required:
                self.fail(f"{path}.{key.name}", f"missing; expected {key.kind.expected}")
            else:
                values[key.name] = key.value
        return values


def _fields(values: dict[str, Any], section: s.Section, *skip: str) -> dict[str, Any]:
    """Schema values under their dataclass attribute names."""
    return {section[name].attribute: value for name, value in values.items() if name not in skip}


# --------------------------------------------------------------------------- sections


def _monitor(ctx: _Context, raw: object) -> MonitorSettings:
    table = ctx.table(raw, "monitor") if raw is not None else {}
    values = ctx.read(s.MONITOR, table, "monitor")
    if "timeout" in table and values["timeout"] > values["deadline"]:  # the default is cut to the deadline
        render = s.MONITOR["timeout"].kind.render
        ctx.fail("monitor.timeout", f"expected at most monitor.deadline ({render(values['deadline'])}), "
                 f"got {render(values['timeout'])}")
    resolver = values.pop("resolver")
    instance = values.pop("instance") or default_instance()
    return MonitorSettings(**_fields(values, s.MONITOR), instance=instance,
                           resolver=DnsServer(*resolver) if resolver else None)


def _endpoint_values(ctx: _Context, raw: object, path: str, kind: str) -> dict[str, Any]:
    section = s.SMTP if kind == "smtp" else s.IMAP
    values = ctx.read(section, ctx.table(raw, path), path)
    if values["port"] is None:
        values["port"] = s.DEFAULT_PORTS[kind][values["tls"]]
    if values["oauth2_token_file"] is not None and values["oauth2_token_command"] is not None:
        ctx.fail(f"{path}.oauth2_token_command", "expected either oauth2_token_file or oauth2_token_command, "
                 "not both")
    if values["tls"] == "none" and not values["allow_plaintext"]:
        ctx.warn(path, 'tls = "none": the login crosses the network in clear text; '
                 "set allow_plaintext = true if that is intended (e.g. a loopback server)")
    if kind == "imap" and values["provider"] == "default" and values["host"].lower().endswith(".gmail.com"):
        ctx.warn(f"{path}.provider", 'a Gmail server: set provider = "gmail" (Gmail deletes and files mail '
                 "differently)")
    return _fields(values, section)


def _account(ctx: _Context, name: str, raw: object) -> Account:
    path = f"accounts.{shown_name(name)}"
    if not _valid_name(name):
        ctx.fail(path, f"expected an account name of {kinds.NAME.what}")
    values = ctx.read(s.ACCOUNT, ctx.table(raw, path), path)
    if values["smtp"] is None and values["imap"] is None:
        ctx.fail(path, "expected an smtp or imap table (or both)")
    smtp = imap = None
    if values["smtp"] is not None:
        smtp = Endpoint(**_endpoint_values(ctx, values["smtp"], f"{path}.smtp", "smtp"))
    if values["imap"] is not None:
        imap = ImapEndpoint(**_endpoint_values(ctx, values["imap"], f"{path}.imap", "imap"))
    if values["password_file"] is None and not all(e.uses_oauth2 for e in (smtp, imap) if e is not None):
        ctx.fail(f"{path}.password_file", f"missing; expected {s.ACCOUNT['password_file'].kind.expected} "
                 "(or oauth2_token_file or oauth2_token_command on every endpoint)")
    return Account(name=name, address=values["address"], username=values["username"] or values["address"],
                   password_file=values["password_file"], smtp=smtp, imap=imap)


def _valid_name(name: str) -> bool:
    try:
        kinds.NAME.parse(name)
    except kinds.Invalid:
        return False
    return True


def _accounts(ctx: _Context, raw: object) -> dict[str, Account]:
    if raw is None:
        ctx.fail("accounts", "missing; expected at least one [accounts.NAME] table")
    table = ctx.table(raw, "accounts")
    if not table or len(table) > MAX_TABLES:
        ctx.expected("accounts", f"1 to {MAX_TABLES} [accounts.NAME] tables", raw)
    return {name: _account(ctx, name, value) for name, value in table.items()}


def _account_ref(ctx: _Context, accounts: Mapping[str, Account], name: str, path: str, needs: str) -> Account:
    account = accounts.get(name)
    if account is None:
        known = ", ".join(sorted(accounts))
        ctx.fail(path, f"expected the name of an [accounts.NAME] table{_did_you_mean(name, list(accounts))}; "
                 f"known: {shorten(known, 200)}; got {shown_value(name)}")
    if getattr(account, needs) is None:
        ctx.fail(path, f"expected an account with an {needs} table (accounts.{shown_name(name)}.{needs} is "
                 f"missing), got {shown_value(name)}")
    return account


def _routes(ctx: _Context, raw: object, accounts: Mapping[str, Account]) -> tuple[Route, ...]:
    routes: list[Route] = []
    for index, table in enumerate(ctx.tables(raw, "routes", "[[routes]]", required=True)):
        path = f"routes[{index}]"
        values = ctx.read(s.ROUTE, table, path)
        if any(r.name == values["name"] for r in routes):
            ctx.expected(f"{path}.name", "a name no other route uses", values["name"])
        sender = _account_ref(ctx, accounts, values["from"], f"{path}.from", "smtp")
        recipient = _account_ref(ctx, accounts, values["to"], f"{path}.to", "imap")
        if values["mode"] == "sync":
            for key in ("late_after", "lost_after"):
                if key in table:
                    ctx.fail(f"{path}.{key}", 'expected only with mode = "async"')
        elif values["lost_after"] <= values["late_after"]:
            ctx.fail(f"{path}.lost_after", f"expected more than late_after "
                     f"({s.ROUTE['late_after'].kind.render(values['late_after'])}), "
                     f"got {s.ROUTE['lost_after'].kind.render(values['lost_after'])}")
        routes.append(Route(**_fields(values, s.ROUTE, "from", "to"), sender=sender, recipient=recipient))
    return tuple(routes)


def _ntfy(ctx: _Context, raw: object) -> NtfySettings:
    path = "alerts.ntfy"
    values = ctx.read(s.NTFY, ctx.table(raw, path), path)
    values["server"] = values["server"].rstrip("/")
    if values["token_file"] is not None and values["username"] is not None:
        ctx.fail(f"{path}.token_file", "expected either token_file or username + password_file, not both")
    if (values["username"] is None) != (values["password_file"] is None):
        ctx.fail(f"{path}.username", "expected username and password_file together")
    return NtfySettings(**_fields(values, s.NTFY))


def _alerts(ctx: _Context, raw: object) -> NtfySettings | None:
    if raw is None:
        return None
    table = ctx.table(raw, "alerts")
    for name in table:
        if name != "ntfy":
            ctx.fail(f"alerts.{shown_name(name)}", f"unknown key{_did_you_mean(name, ['ntfy'])}; expected: ntfy")
    return _ntfy(ctx, table["ntfy"]) if "ntfy" in table else None


def _metrics(ctx: _Context, raw: object) -> Path | None:
    if raw is None:
        return None
    values = ctx.read(s.METRICS, ctx.table(raw, "metrics"), "metrics")
    textfile: Path | None = values["textfile"]
    return textfile


def _domains(ctx: _Context, raw: object) -> tuple[DomainSettings, ...]:
    domains: list[DomainSettings] = []
    for index, table in enumerate(ctx.tables(raw, "domains", "[[domains]]", required=False)):
        path = f"domains[{index}]"
        values = ctx.read(s.DOMAIN, table, path)
        if any(d.name == values["name"] for d in domains):
            ctx.expected(f"{path}.name", "a domain no other [[domains]] entry names", values["name"])
        domains.append(DomainSettings(**_fields(values, s.DOMAIN)))
    return tuple(domains)


def _blocklists(ctx: _Context, raw: object) -> BlocklistSettings | None:
    if raw is None:
        return None
    values = ctx.read(s.BLOCKLISTS, ctx.table(raw, "blocklists"), "blocklists")
    for zone in values["fail_on"]:
        if zone not in values["zones"]:
            ctx.fail("blocklists.fail_on", f"expected zones listed in blocklists.zones, got {shown_value(zone)}")
    return BlocklistSettings(**_fields(values, s.BLOCKLISTS))


def _heartbeat(ctx: _Context, raw: object) -> HeartbeatSettings | None:
    if raw is None:
        return None
    values = ctx.read(s.HEARTBEAT, ctx.table(raw, "heartbeat"), "heartbeat")
    if (values["url"] is None) == (values["url_template"] is None):
        ctx.fail("heartbeat.url", "expected exactly one of url and url_template")
    if values["url"] is not None:
        values["url"] = values["url"].rstrip("/")  # "/start" and "/0" are appended
    return HeartbeatSettings(**_fields(values, s.HEARTBEAT))


def _reports(ctx: _Context, raw: object, accounts: Mapping[str, Account]) -> ReportsSettings | None:
    if raw is None:
        return None
    values = ctx.read(s.REPORTS, ctx.table(raw, "reports"), "reports")
    account = _account_ref(ctx, accounts, values.pop("account"), "reports.account", "imap")
    for key in ("done_folder", "error_folder"):
        if values[key] is not None and values[key] == values["folder"]:
            ctx.expected(f"reports.{key}", "a folder other than reports.folder", values[key])
    return ReportsSettings(**_fields(values, s.REPORTS), account=account)


def _postfix_queue(ctx: _Context, raw: object) -> PostfixQueueSettings | None:
    if raw is None:
        return None
    values = ctx.read(s.POSTFIX_QUEUE, ctx.table(raw, "postfix_queue"), "postfix_queue")
    if values["crit_deferred"] < values["warn_deferred"]:
        ctx.fail("postfix_queue.crit_deferred", f"expected at least warn_deferred ({values['warn_deferred']}), "
                 f"got {values['crit_deferred']}")
    return PostfixQueueSettings(**_fields(values, s.POSTFIX_QUEUE))


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate parsed TOML into a Config. Pure: touches no file; secrets are not read yet."""
    ctx = _Context(source)
    for name in data:
        if name not in s.TOP_LEVEL:
            ctx.fail(shown_name(name), f"unknown key{_did_you_mean(name, list(s.TOP_LEVEL))}; "
                     f"expected one of: {', '.join(s.TOP_LEVEL)}")
    monitor = _monitor(ctx, data.get("monitor"))
    accounts = _accounts(ctx, data.get("accounts"))
    routes = _routes(ctx, data.get("routes"), accounts)
    return Config(
        monitor=monitor,
        accounts=accounts,
        routes=routes,
        ntfy=_alerts(ctx, data.get("alerts")),
        metrics_textfile=_metrics(ctx, data.get("metrics")),
        source=source,
        domains=_domains(ctx, data.get("domains")),
        blocklists=_blocklists(ctx, data.get("blocklists")),
        heartbeat=_heartbeat(ctx, data.get("heartbeat")),
        reports=_reports(ctx, data.get("reports"), accounts),
        postfix_queue=_postfix_queue(ctx, data.get("postfix_queue")),
        warnings=tuple(ctx.warnings),
    )


# --------------------------------------------------------------------------- files


def read_secrets(config: Config) -> Config:
    """The same Config with every secret file read and every CA file checked readable.

    Problems with a file are ConfigErrors naming the key; a secret file readable by
    group or others adds a warning (``Config.warnings``), as the loader's others do.
    """
    ctx = _Context(config.source)

    def secret(path: str, raw: str | None) -> Secret | None:
        if raw is None:
            return None
        found: list[str] = []
        try:
            value = read_secret_file(raw, found)
        except ValueError as exc:
            ctx.fail(path, f"cannot read secret: {shorten(escape(str(exc)), 300)}")
        for warning in found:
            ctx.warn(path, escape(warning))
        return value

    def ca_file(path: str, file: Path | None) -> None:
        if file is not None and not os.access(file, os.R_OK):
            ctx.expected(path, "a readable CA file (PEM)", str(file))

    def endpoint(path: str, e: AnyEndpoint | None) -> AnyEndpoint | None:
        if e is None:
            return None
        ca_file(f"{path}.ca_file", e.ca_file)
        return replace(e, oauth2_token=secret(f"{path}.oauth2_token_file", e.oauth2_token_file))

    accounts: dict[str, Account] = {}
    for name, account in config.accounts.items():
        path = f"accounts.{shown_name(name)}"
        accounts[name] = replace(account, password=secret(f"{path}.password_file", account.password_file),
                                 smtp=endpoint(f"{path}.smtp", account.smtp),
                                 imap=endpoint(f"{path}.imap", account.imap))
    routes = tuple(replace(r, sender=accounts[r.sender.name], recipient=accounts[r.recipient.name])
                   for r in config.routes)
    ntfy = config.ntfy
    if ntfy is not None:
        ca_file("alerts.ntfy.ca_file", ntfy.ca_file)
        ntfy = replace(ntfy, token=secret("alerts.ntfy.token_file", ntfy.token_file),
                       password=secret("alerts.ntfy.password_file", ntfy.password_file))
    for index, domain in enumerate(config.domains):
        ca_file(f"domains[{index}].ca_file", domain.ca_file)
    heartbeat = config.heartbeat
    if heartbeat is not None:
        ca_file("heartbeat.ca_file", heartbeat.ca_file)
        heartbeat = replace(heartbeat, token=secret("heartbeat.token_file", heartbeat.token_file))
    reports = config.reports
    if reports is not None:
        reports = replace(reports, account=accounts[reports.account.name])
    return replace(config, accounts=accounts, routes=routes, ntfy=ntfy, heartbeat=heartbeat, reports=reports,
                   warnings=config.warnings + tuple(ctx.warnings))


def resolve_token_commands(config: Config, budget: float) -> tuple[Config, list[tuple[str, Secret]]]:
    """The same Config with each ``oauth2_token_command`` run once (per distinct command)
    and its token filled in, or its failure recorded for the login to report.

    Run at the start of a run, before the run's scrubber exists, so that the scrubber
    knows these tokens too. All commands together get ``budget`` seconds, each at most
    TOKEN_COMMAND_TIMEOUT. Also returns the tokens learned, with their user names.
    """
    ends = time.monotonic() + budget
    ran: dict[tuple[str, ...], Secret | str] = {}
    learned: list[tuple[str, Secret]] = []

    def endpoint(username: str, e: AnyEndpoint | None) -> AnyEndpoint | None:
        if e is None or e.oauth2_token_command is None or e.oauth2_token is not None:
            return e
        command = e.oauth2_token_command
        if command not in ran:
            left = min(TOKEN_COMMAND_TIMEOUT, ends - time.monotonic())
            try:
                if left <= 0:
                    raise SecretError(f"oauth2_token_command {os.path.basename(command[0])}: not run, "
                                      "no time left in the run's deadline")
                ran[command] = run_token_command(command, left)
            except SecretError as exc:
                ran[command] = str(exc)
        outcome = ran[command]
        if isinstance(outcome, str):
            return replace(e, oauth2_token_error=outcome)
        learned.append((username, outcome))
        return replace(e, oauth2_token=outcome)

    accounts = {name: replace(a, smtp=endpoint(a.username, a.smtp), imap=endpoint(a.username, a.imap))
                for name, a in config.accounts.items()}
    routes = tuple(replace(r, sender=accounts[r.sender.name], recipient=accounts[r.recipient.name])
                   for r in config.routes)
    reports = config.reports
    if reports is not None:
        reports = replace(reports, account=accounts[reports.account.name])
    return replace(config, accounts=accounts, routes=routes, reports=reports), learned


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of a regular file of at most 1 MiB, opened without blocking."""
    shown = shorten(escape(str(path)), 200)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file (create one with: mail-monitor init {shown})") from None
    except PermissionError:
        raise ConfigError(f"{shown}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot open: {exc.strerror or exc.__class__.__name__}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{shown}: is a directory, expected a TOML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{shown}: not a regular file, expected a TOML file")
        data = b""
        while len(data) <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown}: larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {shorten(escape(str(exc)), 200)}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: invalid TOML: nested too deeply") from None


def load_config(path: Path) -> Config:
    """Read, validate, then read the secrets: a Config ready to run, with its warnings."""
    return read_secrets(parse_config(read_config_file(path), str(path)))
