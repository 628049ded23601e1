"""The validated configuration as frozen dataclasses; defaults come from the schema."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mail_monitor.config import schema as s
from mail_monitor.config.kinds import IpAddress
from mail_monitor.config.secrets import TOKEN_COMMAND_TIMEOUT, Secret, SecretError, run_token_command
from mail_monitor.config.text import split_url
from mail_monitor.errors import ConfigError

if TYPE_CHECKING:
    from mail_monitor.redact import Scrubber

TlsMode = Literal["starttls", "implicit", "none"]
RouteMode = Literal["sync", "async"]
Provider = Literal["default", "gmail"]


def default_instance() -> str:
    """The host name as a valid EHLO name: other characters become "-"; never empty."""
    name = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()).strip(".-")[:253].strip(".-")
    return name or "mail-monitor"


@dataclass(frozen=True)
class DnsServer:
    """One DNS server that every query goes to (``[monitor] resolver``)."""

    address: str
    port: int = 53


@dataclass(frozen=True)
class Endpoint:
    """Where a protocol is spoken, how its certificate is checked and how to log in.

    ``oauth2_token`` is read from ``oauth2_token_file`` with the other secrets;
    ``oauth2_token_command`` is run once at the start of a run (``resolve_token_commands``), or at
    the login when the run did not (``oauth2_token``).
    """

    host: str
    port: int
    tls: TlsMode
    ca_file: Path | None = None
    allow_plaintext: bool = s.SMTP["allow_plaintext"].value
    oauth2_token_file: str | None = None
    oauth2_token_command: tuple[str, ...] | None = None
    oauth2_token: Secret | None = field(default=None, repr=False)
    oauth2_token_error: str | None = None  # the command failed when the run resolved it

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uses_oauth2(self) -> bool:
        return self.oauth2_token_file is not None or self.oauth2_token_command is not None

    @property
    def plaintext_warning(self) -> bool:
        """True when a password would cross the network in clear without the user having said so."""
        return self.tls == "none" and not self.allow_plaintext


def oauth2_token(endpoint: Endpoint, timeout: float = TOKEN_COMMAND_TIMEOUT) -> Secret | None:
    """The endpoint's XOAUTH2 access token: read from its file with the config, or from its command, run now.

    None when the endpoint logs in with the account's password. Raises SecretError.
    """
    if endpoint.oauth2_token is not None:
        return endpoint.oauth2_token
    if endpoint.oauth2_token_error is not None:
        raise SecretError(endpoint.oauth2_token_error)
    if endpoint.oauth2_token_command is not None:
        return run_token_command(endpoint.oauth2_token_command, timeout)
    return None


@dataclass(frozen=True)
class ImapEndpoint(Endpoint):
    """An IMAP endpoint, with the folders (Junk...) where a test mail may also land."""

    extra_folders: tuple[str, ...] = s.IMAP["extra_folders"].value
    provider: Provider = s.IMAP["provider"].value


@dataclass(frozen=True)
class Account:
    """A mailbox the monitor logs into; ``password_file`` is kept only to name it in messages.

    ``password`` is None until the secrets are read (``read_secrets``), and stays None for
    an account whose endpoints all log in with OAuth2.
    """

    name: str
    address: str
    username: str
    password_file: str | None
    password: Secret | None = field(default=None, repr=False)
    smtp: Endpoint | None = None
    imap: ImapEndpoint | None = None

    def require_password(self) -> Secret:
        if self.password is None:
            raise ConfigError(f"accounts.{self.name}: no password (password_file not set or not read yet)")
        return self.password


@dataclass(frozen=True)
class Route:
    """"Mail from ``sender`` must reach ``recipient``": the unit that passes or fails."""

    name: str
    sender: Account
    recipient: Account
    receive_timeout: float = s.ROUTE["receive_timeout"].value
    slow_after: float = s.ROUTE["slow_after"].value
    mode: RouteMode = s.ROUTE["mode"].value
    late_after: float = s.ROUTE["late_after"].value
    lost_after: float = s.ROUTE["lost_after"].value
    require: tuple[str, ...] = s.ROUTE["require"].value
    trusted_authserv_ids: tuple[str, ...] = s.ROUTE["trusted_authserv_ids"].value
    sending_ips: tuple[IpAddress, ...] = s.ROUTE["sending_ips"].value


@dataclass(frozen=True)
class NtfySettings:
    """Where alerts go and when; secrets are read after parsing, never shown."""

    topic: str
    server: str = s.NTFY["server"].value
    token: Secret | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    password_file: str | None = None
    ca_file: Path | None = None
    after_failures: int = s.NTFY["after_failures"].value
    remind_every: float = s.NTFY["remind_every"].value
    click: str | None = None
    timeout: float = s.NTFY["timeout"].value
    retries: int = s.NTFY["retries"].value
    dashboard_url: str | None = None
    runbook_url: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class MonitorSettings:
    """How one run behaves: its deadline, its timeouts, what cleanup may touch."""

    state_file: Path | None = s.MONITOR["state_file"].value
    deadline: float = s.MONITOR["deadline"].value
    timeout: float = s.MONITOR["timeout"].value
    subject_prefix: str = s.MONITOR["subject_prefix"].value
    delete_test_mail: bool = s.MONITOR["delete_test_mail"].value
    stale_after: float = s.MONITOR["stale_after"].value
    cleanup_window: float = s.MONITOR["cleanup_window"].value
    tls_warn_days: float = s.MONITOR["tls_warn_days"].value
    max_parallel: int = s.MONITOR["max_parallel"].value
    instance: str = field(default_factory=default_instance)
    resolver: DnsServer | None = None


@dataclass(frozen=True)
class DomainSettings:
    """A ``[[domains]]`` entry: DNS posture checks for one domain (subject ``domain:NAME``)."""

    name: str
    dkim_selectors: tuple[str, ...] = s.DOMAIN["dkim_selectors"].value
    sending_ips: tuple[IpAddress, ...] = s.DOMAIN["sending_ips"].value  # empty: derive from the SMTP hosts
    mta_sts: bool = s.DOMAIN["mta_sts"].value
    ca_file: Path | None = None
    interval: float = s.DOMAIN["interval"].value


@dataclass(frozen=True)
class BlocklistSettings:
    """``[blocklists]``: DNSBL zones for every sending IP; ``fail_on`` is a subset of ``zones``."""

    zones: tuple[str, ...] = s.BLOCKLISTS["zones"].value
    fail_on: tuple[str, ...] = s.BLOCKLISTS["fail_on"].value
    interval: float = s.BLOCKLISTS["interval"].value


@dataclass(frozen=True)
class HeartbeatSettings:
    """``[heartbeat]``: exactly one of ``url`` and ``url_template`` is set."""

    url: str | None = None
    url_template: str | None = None
    method: Literal["GET", "POST"] = s.HEARTBEAT["method"].value
    token_file: str | None = None
    token: Secret | None = field(default=None, repr=False)
    ca_file: Path | None = None
    timeout: float = s.HEARTBEAT["timeout"].value

    @property
    def url_secret(self) -> str | None:
        """The part of every ping URL that is the secret: all of ``url`` after the host; of
        ``url_template``, what comes before its first placeholder (a push token sits there)."""
        if self.url is not None:
            rest = split_url(self.url)[1]
        else:
            rest = split_url(self.url_template or "")[1].partition("{")[0]
        return rest if rest.strip("/?#") else None


@dataclass(frozen=True)
class ReportsSettings:
    """``[reports]``: where DMARC/TLS-RPT reports arrive; ``account`` has an imap endpoint."""

    account: Account
    folder: str = s.REPORTS["folder"].value
    done_folder: str | None = None
    error_folder: str | None = None
    dedup_window: float = s.REPORTS["dedup_window"].value
    min_compliance: float | None = None
    interval: float = s.REPORTS["interval"].value


@dataclass(frozen=True)
class PostfixQueueSettings:
    """``[postfix_queue]``: the local Postfix queue; checked only when ``enable``."""

    enable: bool = s.POSTFIX_QUEUE["enable"].value
    config_directory: Path | None = None
    postqueue: str = s.POSTFIX_QUEUE["postqueue"].value
    warn_deferred: int = s.POSTFIX_QUEUE["warn_deferred"].value
    crit_deferred: int = s.POSTFIX_QUEUE["crit_deferred"].value
    warn_oldest_age: float = s.POSTFIX_QUEUE["warn_oldest_age"].value
    interval: float = s.POSTFIX_QUEUE["interval"].value


@dataclass(frozen=True)
class Config:
    """A validated configuration: nothing past ``load_config`` re-checks it.

    ``warnings`` are one-line messages about legal but risky settings (plain-text
    logins, secret files readable by others); the CLI logs them on stderr.
    """

    monitor: MonitorSettings
    accounts: Mapping[str, Account]
    routes: tuple[Route, ...]
    ntfy: NtfySettings | None = None
    metrics_textfile: Path | None = None
    source: str = "<flags>"
    domains: tuple[DomainSettings, ...] = ()
    blocklists: BlocklistSettings | None = None
    heartbeat: HeartbeatSettings | None = None
    reports: ReportsSettings | None = None
    postfix_queue: PostfixQueueSettings | None = None
    warnings: tuple[str, ...] = ()

    def scrubber(self) -> Scrubber:
        """Replaces every configured secret, and its wire encodings, in any text."""
        from mail_monitor.redact import Scrubber

        return Scrubber(self.credentials())

    def credentials(self) -> list[tuple[str | None, Secret]]:
        """Every secret read, with the user name it is sent with (for the wire encodings)."""
        found: list[tuple[str | None, Secret]] = []
        for account in self.accounts.values():
            if account.password is not None:
                found.append((account.username, account.password))
            for endpoint in (account.smtp, account.imap):
                if endpoint is not None and endpoint.oauth2_token is not None:
                    found.append((account.username, endpoint.oauth2_token))
        if self.ntfy is not None:
            if self.ntfy.token is not None:
                found.append((None, self.ntfy.token))
            if self.ntfy.password is not None:
                found.append((self.ntfy.username, self.ntfy.password))
        if self.heartbeat is not None:
            if self.heartbeat.token is not None:
                found.append((None, self.heartbeat.token))
            if self.heartbeat.url_secret is not None:
                found.append((None, Secret(self.heartbeat.url_secret)))
        return found

