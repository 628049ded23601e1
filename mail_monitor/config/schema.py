"""Every configuration key, in one place: its kind (type and bounds), default and one-line doc.

The loader reads tables through these declarations, the dataclasses take their
defaults from them, and check-config's print, ``init``'s example and the key tables
in docs/configuration.md are generated from them. A key that is not here does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mail_monitor.config import kinds as k

TLS_MODES: tuple[str, ...] = ("starttls", "implicit", "none")
DEFAULT_PORTS = {
    "smtp": {"starttls": 587, "implicit": 465, "none": 25},
    "imap": {"starttls": 143, "implicit": 993, "none": 143},
}
AUTH_METHODS: tuple[str, ...] = ("spf", "dkim", "dmarc")
# What a heartbeat url_template may use (mail_monitor/heartbeat.py fills them in).
HEARTBEAT_PLACEHOLDERS: tuple[str, ...] = ("status", "success", "exit_code", "message")
# DNSBLs free for a small server's own checks (spec 8.3); docs/deliverability.md has a row for
# each. Spamhaus refuses public and many cloud resolvers; lists that need a key or a registered
# resolver (Barracuda, Abusix, Spamhaus DQS) are left for the user to add.
DEFAULT_BLOCKLISTS: tuple[str, ...] = ("zen.spamhaus.org", "bl.spamcop.net", "psbl.surriel.com", "bl.mailspike.net")

AS_DEFAULT = object()  # a key's example value: its default

DAY = 86400.0
HOUR = 3600.0
INTERVAL = k.Duration(60, 7 * DAY, zero_means="every run")


@dataclass(frozen=True)
class Key:
    """One key: ``default`` is written as in TOML and parsed by ``kind`` (so it obeys the bounds)."""

    name: str
    kind: k.Kind
    doc: str
    default: Any = None
    required: bool = False
    default_doc: str | None = None  # for defaults computed from other keys or the machine
    example: Any = None  # value shown by ``init``: AS_DEFAULT for the default; None: not in the example
    attr: str | None = None  # the dataclass attribute, when it is not ``name``
    secret_path: bool = False  # a capability URL: check-config shows its scheme and host only
    value: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", None if self.default is None else self.kind.parse(self.default))
        if self.example is AS_DEFAULT:
            object.__setattr__(self, "example", self.default)

    @property
    def attribute(self) -> str:
        return self.attr or self.name


@dataclass(frozen=True)
class Section:
    """A TOML table. ``path`` as in messages; ``header`` as ``init`` writes it."""

    path: str
    header: str
    doc: str
    keys: tuple[Key, ...]
    in_example: bool = True  # False: ``init`` writes it commented out

    def __getitem__(self, name: str) -> Key:
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(name)

    def default(self, name: str) -> Any:
        """The parsed default, for the dataclass field of the same key."""
        return self[name].value

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)


MONITOR = Section("monitor", "[monitor]", "How a run behaves.", (
    Key("state_file", k.FilePath(), "Results between runs; alerts fire only on changes. "
        "A lock file `state.json.lock` sits next to it.",
        default="/var/lib/mail-monitor/state.json", example=AS_DEFAULT),
    Key("deadline", k.Duration(1, DAY), "A run never lasts longer, whatever the servers do. 10 % of it "
        "(at most 10 s) is kept for writing state, metrics and alerts.", default="3m", example=AS_DEFAULT),
    Key("timeout", k.Duration(0.1, HOUR), "Longest wait for any one network step (connect, TLS handshake, "
        "one command); never longer than `deadline`.", default="30s", example=AS_DEFAULT),
    Key("subject_prefix", k.Text("3-64 printable ASCII characters", 64, re.compile(r"(?=.*\S.*\S.*\S)[ -~]{3,64}")),
        "Test mails' subjects start with this. Cleanup only touches mails whose subject starts with it "
        "**and** that carry the `X-Mail-Monitor-Token` header.", default="[mail-monitor]", example=AS_DEFAULT),
    Key("delete_test_mail", k.Boolean(), "Delete the test mail once seen.", default=True, example=AS_DEFAULT),
    Key("stale_after", k.Duration(60, 30 * DAY), "Delete monitor mails older than this (left behind by runs "
        "that failed).", default="1h", example=AS_DEFAULT),
    Key("cleanup_window", k.Duration(DAY, 365 * DAY), "How far back to look for such mails; older mail is "
        "never searched, which keeps a run's cost flat in a large mailbox.", default="7d", example=AS_DEFAULT),
    Key("tls_warn_days", k.Integer(0, 3650), "A certificate that expires within this many days is a warning.",
        default=14, example=AS_DEFAULT),
    Key("max_parallel", k.Integer(1, 1000), "Routes checked at the same time. At most 8 connections are being "
        "opened at any moment.", default=50),
    Key("instance", k.EHLO_NAME, "Names this monitor in alert titles and test mails (and is its SMTP EHLO "
        "name), so several monitors can share one ntfy topic and one mailbox.",
        default_doc="the host name (characters outside `A-Za-z0-9.-` become `-`)"),
    Key("resolver", k.DnsServerKind(), "Send every DNS query (domain checks, blocklists, probe authentication) "
        "to this server instead of the system's resolvers.", default_doc="the system's resolvers"),
))

ACCOUNT = Section("accounts.NAME", "[accounts.self]", "An account: where to log in. Add more as [accounts.NAME].", (
    Key("address", k.ADDRESS, "Where test mails are sent to (and from). May differ from the login, "
        "e.g. `me+Junk@…`.", required=True, example="monitor@example.com"),
    Key("username", k.Text("a login name", 256), "IMAP and SMTP login name.", default_doc="`address`",
        example="monitor@example.com"),
    Key("password_file", k.SecretFile(), "File holding the password (required unless every endpoint uses "
        "OAuth2).", example="/run/secrets/mail-monitor"),
    Key("smtp", k.Table("accounts.NAME.smtp"), "The submission server; needed by accounts that send."),
    Key("imap", k.Table("accounts.NAME.imap"), "The IMAP server; needed by accounts that receive."),
))


def _endpoint_keys(kind: str, tls_default: str, example_port: int) -> tuple[Key, ...]:
    ports = DEFAULT_PORTS[kind]
    return (
        Key("host", k.hostname(), "Server name (checked against its certificate) or IP address.", required=True,
            example="mail.example.com"),
        Key("tls", k.Choice(TLS_MODES), '`"none"` sends the password in clear text: a warning unless '
            "`allow_plaintext = true`.", default=tls_default, example=AS_DEFAULT),
        Key("port", k.Integer(1, 65535), "Server port.", default_doc=" / ".join(
            f"{port} ({mode})" for mode, port in ports.items()), example=example_port),
        Key("ca_file", k.FilePath("a PEM file name"), "Trust exactly this CA (PEM) instead of the system store."),
        Key("allow_plaintext", k.Boolean(), 'Accept `tls = "none"` without a warning (e.g. a loopback server).',
            default=False),
        Key("oauth2_token_file", k.SecretFile(), "Log in with XOAUTH2 using the access token in this file "
            "instead of the account's password."),
        Key("oauth2_token_command", k.Command(), "Or run this program (no shell, 30 s at most) at the start of "
            "each run; its first line of output is the access token."),
    )


SMTP = Section("accounts.NAME.smtp", "[accounts.self.smtp]", "Submission server (SMTP AUTH).",
               _endpoint_keys("smtp", "starttls", 587))

IMAP = Section("accounts.NAME.imap", "[accounts.self.imap]", "IMAP server.", (
    *_endpoint_keys("imap", "implicit", 993),
    Key("extra_folders", k.ListOf(k.FOLDER), "Also searched besides INBOX; a test mail found there is reported "
        "as landed in spam (a warning). A folder the server does not have is skipped and named in "
        "imap_auth's message.", default=[], example=["Junk"]),
    Key("provider", k.Choice(("default", "gmail")), '`"gmail"`: search with X-GM-RAW, watch `[Gmail]/Spam`, '
        "delete by moving to `[Gmail]/Trash`.", default="default"),
))

ROUTE = Section("routes[]", "[[routes]]", "A route: send from one account, expect the mail in another. "
                "Repeat for more.", (
    Key("name", k.NAME, "Unique. The `route` label in metrics.", required=True, example="self"),
    Key("from", k.AccountRef(), "Account that sends (must have `smtp`).", required=True, attr="sender",
        example="self"),
    Key("to", k.AccountRef(), "Account that receives (must have `imap`).", required=True, attr="recipient",
        example="self"),
    Key("receive_timeout", k.Duration(1, DAY), "How long to wait before the mail counts as lost (never past "
        "the run deadline).", default="60s", example=AS_DEFAULT),
    Key("slow_after", k.Duration(0.001, DAY), "A roundtrip above this is a warning.", default="30s",
        example=AS_DEFAULT),
    Key("mode", k.Choice(("sync", "async")), '`"async"`: send now, look for the mail on later runs '
        "(for destinations that take minutes).", default="sync"),
    Key("late_after", k.Duration(60, 30 * DAY), 'Async only: a probe not seen after this is a warning.',
        default="15m"),
    Key("lost_after", k.Duration(60, 30 * DAY), "Async only: a probe not seen after this is lost (failed); "
        "more than `late_after`.", default="2h"),
    Key("require", k.ListOf(k.Choice(AUTH_METHODS), 3), "Authentication results of the received probe that "
        "must pass; the others are only reported.", default=[]),
    Key("trusted_authserv_ids", k.ListOf(k.Text("an authserv-id (a host name)", 255,
                                                 re.compile(r"[!-~]+"))),
        "Authentication-Results headers from these receivers are reported and count; others are ignored.",
        default=[]),
    Key("sending_ips", k.ListOf(k.IpAddressKind()), "The addresses the probe leaves from, for SPF.",
        default=[], default_doc="from the receiving server's topmost trusted `Received:`"),
))

NTFY = Section("alerts.ntfy", "[alerts.ntfy]", "Push alerts to your phone with ntfy, only when something "
               "changes.", (
    Key("topic", k.Text("1-64 letters, digits, _ or -", 64, re.compile(r"[A-Za-z0-9_-]{1,64}")),
        "ntfy topic; pick something hard to guess on a public server.", required=True, example="my-mail-alerts"),
    Key("server", k.URL, "Your ntfy server.", default="https://ntfy.sh", example=AS_DEFAULT),
    Key("token_file", k.SecretFile(), "Access token (`Authorization: Bearer`).",
        example="/run/secrets/ntfy-token"),
    Key("username", k.Text("a user name", 256), "Basic auth instead of a token, with `password_file`."),
    Key("password_file", k.SecretFile(), "Basic auth password."),
    Key("ca_file", k.FilePath("a PEM file name"), "Trust this CA for a self-hosted server."),
    Key("after_failures", k.Integer(1, 1000), "Consecutive failed runs before the failure alert.", default=1,
        example=AS_DEFAULT),
    Key("remind_every", k.Duration(60, 30 * DAY, zero_means="never"), "Re-alert while still failing.",
        default="0", example=AS_DEFAULT),
    Key("click", k.URL, "URL opened when the notification is tapped."),
    Key("dashboard_url", k.URL, "Adds a \"Dashboard\" action button (e.g. your Grafana board)."),
    Key("runbook_url", k.URL, "Adds a \"Runbook\" action button."),
    Key("email", k.ADDRESS, "Also ask ntfy to e-mail the alert here (for when your own mail is down)."),
    Key("timeout", k.Duration(0.5, 300), "Per request.", default="10s"),
    Key("retries", k.Integer(0, 10), "Extra attempts within one run (back-off 1 s, 2 s, 4 s …, within the "
        "deadline).", default=3),
))

METRICS = Section("metrics", "[metrics]", "Prometheus metrics for node_exporter's textfile collector.", (
    Key("textfile", k.FilePath("a file name", ".prom"), "A `.prom` file in node_exporter's textfile directory; "
        "written atomically after every run.", example="/var/lib/prometheus-node-exporter/mail_monitor.prom",
        attr="metrics_textfile"),
))

DOMAIN = Section("domains[]", "[[domains]]", "DNS posture of a domain you send from (MX, SPF, DKIM, DMARC, ...).", (
    Key("name", k.domain_name(), "The domain.", required=True, example="example.com"),
    Key("dkim_selectors", k.ListOf(k.Text("a DKIM selector (DNS labels)", 253,
                                          re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*"))),
        "Selectors whose keys must be published.", default=[], example=["mail"]),
    Key("sending_ips", k.ListOf(k.IpAddressKind()), "Addresses your mail leaves from (SPF, PTR, blocklists).",
        default=[], default_doc="the A/AAAA of the SMTP hosts of the accounts in this domain"),
    Key("mta_sts", k.Boolean(), "Check the MTA-STS record and policy (and TLS-RPT).", default=False,
        example=True),
    Key("ca_file", k.FilePath("a PEM file name"), "Trust this CA for the policy fetch from "
        "`https://mta-sts.NAME`."),
    Key("interval", INTERVAL, "Check this domain at most this often; results in between come from the state.",
        default="1h"),
), in_example=False)

BLOCKLISTS = Section("blocklists", "[blocklists]", "DNS blocklists, checked for every sending IP.", (
    Key("zones", k.ListOf(k.domain_name("a DNS zone such as zen.spamhaus.org"), 32, 1),
        "DNSBL zones to query.", default=list(DEFAULT_BLOCKLISTS), example=AS_DEFAULT),
    Key("fail_on", k.ListOf(k.domain_name("a DNS zone listed in zones"), 32),
        "A listing in these zones is a failure, not a warning.", default=[], example=["zen.spamhaus.org"]),
    Key("interval", INTERVAL, "Query at most this often.", default="1h"),
), in_example=False)

HEARTBEAT = Section("heartbeat", "[heartbeat]", "Tell a dead man's switch (healthchecks.io, Uptime Kuma, "
                    "Gatus) that the monitor runs.", (
    Key("url", k.URL, "healthchecks.io style: `GET URL/start` when a run begins, `GET URL/<exit code>` when it "
        "ends.", example="https://hc-ping.com/your-uuid", secret_path=True),
    Key("url_template", k.UrlTemplate(HEARTBEAT_PLACEHOLDERS), "Instead of `url`: one request when the run ends, "
        "placeholders filled in (`{status}` up/down, `{success}` true/false, `{exit_code}`, `{message}`).",
        secret_path=True),
    Key("method", k.Choice(("GET", "POST")), "HTTP method (Gatus wants POST).", default="GET"),
    Key("token_file", k.SecretFile(), "Bearer token sent with every request (Gatus)."),
    Key("ca_file", k.FilePath("a PEM file name"), "Trust this CA for a self-hosted service."),
    Key("timeout", k.Duration(0.5, 300), "Longest wait for one ping (never past the run's deadline).",
        default="10s"),
), in_example=False)

REPORTS = Section("reports", "[reports]", "Read DMARC aggregate and TLS-RPT reports from a mailbox.", (
    Key("account", k.AccountRef(), "Account (with `imap`) whose mailbox receives the rua reports.",
        required=True, example="self"),
    Key("folder", k.FOLDER, "Folder the reports arrive in.", default="DMARC", example=AS_DEFAULT),
    Key("done_folder", k.FOLDER, "Move processed reports here.", default_doc="left where they are",
        example="DMARC/done"),
    Key("error_folder", k.FOLDER, "Move unreadable reports here.", default_doc="left where they are"),
    Key("dedup_window", k.Duration(DAY, 365 * DAY), "Remember report ids this long (a report seen twice counts "
        "once).", default="7d"),
    Key("min_compliance", k.Fraction(), "A reporter's DMARC compliance ratio below this is a warning.",
        default_doc="no warning"),
    Key("interval", INTERVAL, "Read the folder at most this often.", default="1h"),
), in_example=False)

POSTFIX_QUEUE = Section("postfix_queue", "[postfix_queue]", "Local Postfix queue depth and age (postqueue -j).", (
    Key("enable", k.Boolean(), "Check the queue of the Postfix on this host.", default=False, example=True),
    Key("config_directory", k.FilePath("a directory name"), "Passed to postqueue as `-c`.",
        default_doc="Postfix's own"),
    Key("postqueue", k.Text("a program name or path", 4096), "The postqueue program (on NixOS: "
        "`/run/wrappers/bin/postqueue`).", default="postqueue"),
    Key("warn_deferred", k.Integer(1, 10_000_000), "This many deferred messages or more is a warning.", default=20),
    Key("crit_deferred", k.Integer(1, 10_000_000), "This many or more is a failure; at least `warn_deferred`.",
        default=200),
    Key("warn_oldest_age", k.Duration(60, 30 * DAY), "A deferred message this old or older is a warning.",
        default="1d"),
    Key("interval", INTERVAL, "Check at most this often.", default="0"),
), in_example=False)

SECTIONS: tuple[Section, ...] = (MONITOR, ACCOUNT, SMTP, IMAP, ROUTE, NTFY, METRICS, DOMAIN, BLOCKLISTS, HEARTBEAT,
                                 REPORTS, POSTFIX_QUEUE)
TOP_LEVEL: tuple[str, ...] = ("monitor", "accounts", "routes", "alerts", "metrics", "domains", "blocklists",
                              "heartbeat", "reports", "postfix_queue")
