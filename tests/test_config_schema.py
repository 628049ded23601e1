"""The schema is the one source of truth: defaults, bounds, docs, example and check-config all follow it."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import math
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from mail_monitor.config import (
    Account,
    BlocklistSettings,
    Config,
    ConfigError,
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
    load_config,
    parse_config,
    read_secrets,
)
from mail_monitor.config import kinds as k
from mail_monitor.config import schema as s
from mail_monitor.config.render import example_config, redacted, regenerate_docs
from mail_monitor.config.text import shown_value

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "configuration.md"
SOURCE = "/etc/mm.toml"

DATACLASSES: list[tuple[s.Section, type]] = [
    (s.MONITOR, MonitorSettings), (s.ACCOUNT, Account), (s.SMTP, Endpoint), (s.IMAP, ImapEndpoint),
    (s.ROUTE, Route), (s.NTFY, NtfySettings), (s.DOMAIN, DomainSettings), (s.BLOCKLISTS, BlocklistSettings),
    (s.HEARTBEAT, HeartbeatSettings), (s.REPORTS, ReportsSettings), (s.POSTFIX_QUEUE, PostfixQueueSettings),
    (s.METRICS, Config),
]


def minimal() -> dict[str, Any]:
    """The smallest valid configuration, with every optional section present."""
    return {
        "monitor": {"deadline": "1d"},
        "accounts": {"self": {"address": "m@example.org", "password_file": "/nonexistent/secret",
                              "smtp": {"host": "mail.example.org"}, "imap": {"host": "mail.example.org"}}},
        "routes": [{"name": "r", "from": "self", "to": "self", "mode": "async"}],
        "alerts": {"ntfy": {"topic": "t"}},
        "metrics": {"textfile": "/x/m.prom"},
        "domains": [{"name": "example.org"}],
        "blocklists": {},
        "heartbeat": {"url": "https://hc-ping.com/x"},
        "reports": {"account": "self"},
        "postfix_queue": {},
    }


def table_of(data: dict[str, Any], section: s.Section) -> dict[str, Any]:
    """Where ``section``'s keys go inside ``data`` (as built by ``minimal``)."""
    path = section.path.replace("accounts.NAME", "accounts.self")
    table: Any = data
    for part in path.split("."):
        table = table[part[:-2]][0] if part.endswith("[]") else table[part]
    return table  # type: ignore[no-any-return]


def parse(data: dict[str, Any]) -> Config:
    return parse_config(data, SOURCE)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: ")
    assert "\n" not in message and "\r" not in message
    return message


# --------------------------------------------------------------------------- one source of truth


def test_docs_key_tables_match_the_schema() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert regenerate_docs(text) == text, "run: python -m mail_monitor.config docs/configuration.md"
    for section in s.SECTIONS:
        block = text.split(f"<!-- keys: {section.path} -->", 1)[1].split("<!-- end keys -->", 1)[0]
        for key in section.keys:
            assert f"| `{key.name}` | {key.kind.expected.replace('|', chr(92) + '|')} |" in block


def test_docs_generator_refuses_a_missing_or_unknown_section() -> None:
    text = DOCS.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="unknown section in docs marker: nothing"):
        regenerate_docs(text.replace("<!-- keys: postfix_queue -->", "<!-- keys: nothing -->"))
    with pytest.raises(ValueError, match="no '<!-- keys: PATH -->' block for: monitor"):
        regenerate_docs(text.replace("<!-- keys: monitor -->", ""))


@pytest.mark.parametrize(("section", "cls"), DATACLASSES, ids=lambda x: getattr(x, "path", ""))
def test_dataclass_defaults_are_the_schema_defaults(section: s.Section, cls: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in section.keys:
        if isinstance(key.kind, k.Table):
            continue
        assert key.attribute in fields, f"{section.path}.{key.name} has no field {cls.__name__}.{key.attribute}"
        field = fields[key.attribute]
        if key.required or field.default is dataclasses.MISSING:
            continue
        assert field.default == key.value, f"{cls.__name__}.{key.attribute} default differs from the schema"


def test_loader_fills_in_the_schema_defaults() -> None:
    config = parse(minimal())
    objects = [(s.MONITOR, config.monitor), (s.ACCOUNT, config.accounts["self"]),
               (s.SMTP, config.accounts["self"].smtp), (s.IMAP, config.accounts["self"].imap),
               (s.ROUTE, config.routes[0]), (s.NTFY, config.ntfy), (s.DOMAIN, config.domains[0]),
               (s.BLOCKLISTS, config.blocklists), (s.HEARTBEAT, config.heartbeat), (s.REPORTS, config.reports),
               (s.POSTFIX_QUEUE, config.postfix_queue)]
    checked = 0
    for section, obj in objects:
        given = table_of(minimal(), section)
        for key in section.keys:
            if key.name not in given and key.value is not None:
                assert getattr(obj, key.attribute) == key.value, f"{section.path}.{key.name}"
                checked += 1
    assert checked > 40
    assert config.accounts["self"].smtp is not None and config.accounts["self"].smtp.port == 587
    assert config.accounts["self"].imap is not None and config.accounts["self"].imap.port == 993
    assert config.accounts["self"].username == "m@example.org"


def test_a_default_outside_its_bounds_cannot_be_declared() -> None:
    with pytest.raises(k.Invalid):
        s.Key("deadline", k.Duration(1, s.DAY), "doc", default="2d")
    with pytest.raises(k.Invalid):
        s.Key("port", k.Integer(1, 65535), "doc", default=0)


def test_every_key_is_documented_once_and_every_section_is_read() -> None:
    paths = [section.path for section in s.SECTIONS]
    assert len(paths) == len(set(paths))
    for section in s.SECTIONS:
        assert len(section.names) == len(set(section.names)), section.path
        for key in section.keys:
            assert key.doc.strip() and "\n" not in key.doc, f"{section.path}.{key.name}"
            assert not (key.required and key.default is not None)


# --------------------------------------------------------------------------- bounds


def _bounded_keys() -> list[tuple[s.Section, s.Key]]:
    found = []
    for section in s.SECTIONS:
        for key in section.keys:
            kind = key.kind
            if isinstance(kind, (k.Duration, k.Integer, k.Fraction)):
                found.append((section, key))
    return found


BOUNDED = _bounded_keys()


def _ids(item: Any) -> str:
    return item.path if isinstance(item, s.Section) else item.name


@pytest.mark.parametrize(("section", "key"), BOUNDED, ids=_ids)
def test_bounds_are_exact(section: s.Section, key: s.Key) -> None:
    kind = key.kind
    if isinstance(kind, k.Duration):
        for seconds in (kind.low, kind.high):
            assert kind.parse(seconds) == seconds
            assert kind.parse(kind.render(seconds)) == seconds
        if kind.zero_means:
            assert kind.parse(0) == kind.parse("0") == 0 and kind.zero_means in kind.expected
        else:
            with pytest.raises(k.Invalid):
                kind.parse(0)
        below, above = kind.low * 0.999, kind.high + 0.001
        for raw in (below, above, f"{kind.high + 1}s"):
            if kind.zero_means and raw == 0:
                continue
            with pytest.raises(k.Invalid):
                kind.parse(raw)
    elif isinstance(kind, k.Integer):
        assert kind.parse(kind.low) == kind.low and kind.parse(kind.high) == kind.high
        for raw in (kind.low - 1, kind.high + 1, float(kind.low), str(kind.low), True, 10**400):
            with pytest.raises(k.Invalid):
                kind.parse(raw)
    else:
        assert kind.parse(0) == 0.0 and kind.parse(1) == 1.0 and kind.parse(0.5) == 0.5
        for raw in (-0.0001, 1.0001, 2, math.nan, math.inf, "0.5", True):
            with pytest.raises(k.Invalid):
                kind.parse(raw)


HOSTILE_NUMBERS = [math.inf, -math.inf, math.nan, 1e308, -1, 10**400, -(10**400), "99999999999d", "1e3s",
                   "inf", "nan", "1" * 5000, True, [1], {"a": 1}]


@pytest.mark.parametrize(("section", "key"), BOUNDED, ids=_ids)
@pytest.mark.parametrize("raw", HOSTILE_NUMBERS, ids=shown_value)
def test_hostile_numbers_are_one_line_errors_naming_the_key(section: s.Section, key: s.Key, raw: object) -> None:
    data = minimal()
    table_of(data, section)[key.name] = raw
    message = error_of(data)
    assert f".{key.name}: expected {key.kind.expected}, got " in message, message
    assert len(message) < 400


def test_deadline_bounds_in_a_file(tmp_path: Path) -> None:
    """The values of issue 10 that crashed run or gave a false CRITICAL."""
    secret = tmp_path / "pw"
    secret.write_text("pw")
    secret.chmod(0o600)
    for value in ("inf", "nan", "1e308", '"99999999999d"', '"2d"', "0"):
        path = tmp_path / "c.toml"
        path.write_text(f'[monitor]\ndeadline = {value}\n[accounts.a]\naddress = "a@example.org"\n'
                        f'password_file = "{secret}"\nsmtp = {{ host = "h" }}\nimap = {{ host = "h" }}\n'
                        '[[routes]]\nname = "r"\nfrom = "a"\nto = "a"\n')
        with pytest.raises(ConfigError, match=r"monitor\.deadline: expected a duration from 1s to 1d, got "):
            load_config(path)


def test_timeout_may_not_exceed_the_deadline() -> None:
    data = minimal()
    data["monitor"] = {"deadline": "1m", "timeout": "61s"}
    assert "monitor.timeout: expected at most monitor.deadline (1m), got 61s" in error_of(data)
    data["monitor"]["timeout"] = "60s"
    assert parse(data).monitor.timeout == 60
    data["monitor"] = {"deadline": "5s"}  # the default step timeout (30s) is cut to the deadline by the run
    assert parse(data).monitor.timeout == 30


# --------------------------------------------------------------------------- values and cross-references


@pytest.mark.parametrize(("where", "key", "value", "expected"), [
    (("monitor",), "instance", "mönitor", "instance: expected a host name of ASCII letters"),
    (("monitor",), "instance", "a b", "instance: expected a host name"),
    (("monitor",), "instance", "-leading", "instance: expected a host name"),
    (("monitor",), "subject_prefix", "[m]\r\nBcc: x@y", "subject_prefix: expected 3-64 printable ASCII"),
    (("monitor",), "subject_prefix", "  x ", "subject_prefix: expected 3-64"),
    (("monitor",), "resolver", "dns.example.org", "monitor.resolver: expected an IP address"),
    (("monitor",), "resolver", "127.0.0.1:70000", "monitor.resolver: expected an IP address"),
    (("accounts", "self", "smtp"), "host", "mail example", "smtp.host: expected a host name or IP address"),
    (("accounts", "self", "smtp"), "oauth2_token_command", [], "oauth2_token_command: expected an array"),
    (("accounts", "self", "imap"), "extra_folders", ["Junk", "Junk"], "extra_folders: expected an array"),
    (("accounts", "self", "imap"), "provider", "yahoo", 'provider: expected one of "default", "gmail"'),
    (("routes", 0), "require", ["spf", "arc"], 'require: expected an array (at most 3, no duplicates) of: one of'),
    (("routes", 0), "sending_ips", ["192.0.2.300"], "sending_ips: expected an array"),
    (("routes", 0), "mode", "later", 'mode: expected one of "sync", "async"'),
    (("domains", 0), "name", "exa mple.org", "domains[0].name: expected a domain name"),
    (("domains", 0), "name", "localhost", "domains[0].name: expected a domain name"),
    (("domains", 0), "sending_ips", ["2001:db8::1", "not-an-ip"], "domains[0].sending_ips: expected"),
    (("blocklists",), "zones", ["zen.spamhaus.org", "bad zone"], "blocklists.zones: expected an array"),
    (("blocklists",), "zones", [], "blocklists.zones: expected an array (at least 1"),
    (("heartbeat",), "url", "ftp://x", "heartbeat.url: expected an http:// or https:// URL"),
    (("alerts", "ntfy"), "email", "not-an-address", "alerts.ntfy.email: expected an e-mail address"),
    (("alerts", "ntfy"), "dashboard_url", "grafana", "alerts.ntfy.dashboard_url: expected an http"),
    (("metrics",), "textfile", "/x/m.txt", 'metrics.textfile: expected a file name ending in ".prom"'),
    (("reports",), "min_compliance", 1.5, "reports.min_compliance: expected a number from 0 to 1"),
])
def test_bad_values(where: tuple[Any, ...], key: str, value: object, expected: str) -> None:
    data = minimal()
    table: Any = data
    for part in where:
        table = table[part]
    table[key] = value
    assert expected in error_of(data)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["reports"].update(account="nobody"), "reports.account: expected the name of an [accounts.NAME]"),
    (lambda d: (d["accounts"]["self"].pop("imap") and d["routes"][0].update(to="other")) or
     d["accounts"].update(other={"address": "o@example.org", "password_file": "/p", "imap": {"host": "h"}}),
     "reports.account: expected an account with an imap table"),
    (lambda d: d["blocklists"].update(zones=["a.example.org"], fail_on=["b.example.org"]),
     'blocklists.fail_on: expected zones listed in blocklists.zones, got "b.example.org"'),
    (lambda d: d["heartbeat"].update(url_template="https://x/{status}"), "heartbeat.url: expected exactly one"),
    (lambda d: d["heartbeat"].pop("url"), "heartbeat.url: expected exactly one"),
    (lambda d: d["heartbeat"].update(url=None) or d["heartbeat"].pop("url") or
     d["heartbeat"].update(url_template="https://x/{secret}"), "heartbeat.url_template: expected an http(s) URL"),
    (lambda d: d["domains"].append({"name": "EXAMPLE.org."}), "domains[1].name: expected a domain no other"),
    (lambda d: d["postfix_queue"].update(warn_deferred=10, crit_deferred=9),
     "postfix_queue.crit_deferred: expected at least warn_deferred (10), got 9"),
    (lambda d: d["routes"][0].update(mode="sync", late_after="1h"), 'routes[0].late_after: expected only with mode'),
    (lambda d: d["routes"][0].update(late_after="2h", lost_after="2h"), "routes[0].lost_after: expected more than"),
    (lambda d: d["routes"].append({"name": "r", "from": "self", "to": "self"}), "routes[1].name: expected a name no"),
    (lambda d: d["accounts"]["self"].pop("password_file"), "accounts.self.password_file: missing"),
    (lambda d: d["accounts"]["self"]["smtp"].update(oauth2_token_file="/t", oauth2_token_command=["t"]),
     "accounts.self.smtp.oauth2_token_command: expected either"),
    (lambda d: d["accounts"].update({"bad name": d["accounts"]["self"]}), "accounts.bad name: expected an account"),
    (lambda d: d["alerts"]["ntfy"].update(token_file="/t", username="u", password_file="/p"),
     "alerts.ntfy.token_file: expected either"),
    (lambda d: d["reports"].update(done_folder="DMARC"), "reports.done_folder: expected a folder other than"),
])
def test_cross_references(change: Any, expected: str) -> None:
    data = minimal()
    change(data)
    assert expected in error_of(data)


def test_oauth2_only_account_needs_no_password_and_parsing_reads_no_file() -> None:
    data = minimal()
    account = data["accounts"]["self"]
    del account["password_file"]
    account["smtp"]["oauth2_token_command"] = ["/bin/echo", "token"]
    account["imap"]["oauth2_token_file"] = "/nonexistent/token"
    config = parse(data)
    assert config.accounts["self"].password is None and config.accounts["self"].password_file is None
    assert config.accounts["self"].smtp is not None and config.accounts["self"].smtp.uses_oauth2
    assert config.accounts["self"].smtp.oauth2_token_command == ("/bin/echo", "token")
    with pytest.raises(ConfigError, match=r"accounts\.self\.imap\.oauth2_token_file: cannot read secret: "
                                          r"/nonexistent/token: no such file"):
        read_secrets(config)


def test_new_sections_parse_into_typed_values() -> None:
    data = minimal()
    data["monitor"]["resolver"] = "[::1]:5353"
    data["routes"][0].update(require=["dkim", "spf"], trusted_authserv_ids=["mx.google.com"],
                             sending_ips=["192.0.2.1", "2001:db8::1"], late_after="10m", lost_after="1h")
    data["domains"][0].update(name="Example.ORG.", dkim_selectors=["mail", "s2._x"], mta_sts=True, interval=0)
    data["blocklists"] = {"zones": ["zen.spamhaus.org"], "fail_on": ["zen.spamhaus.org"], "interval": "2h"}
    data["heartbeat"] = {"url_template": "https://kuma/api/push/T?status={status}&msg={message}", "method": "POST"}
    data["reports"].update(done_folder="DMARC/done", min_compliance=0.9, dedup_window="14d")
    data["postfix_queue"].update(enable=True, config_directory="/etc/postfix", warn_oldest_age="6h")
    config = parse(data)
    assert config.monitor.resolver is not None
    assert (config.monitor.resolver.address, config.monitor.resolver.port) == ("::1", 5353)
    route = config.routes[0]
    assert route.require == ("dkim", "spf") and route.mode == "async"
    assert route.sending_ips == (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1"))
    assert (route.late_after, route.lost_after) == (600, 3600)
    domain = config.domains[0]
    assert (domain.name, domain.dkim_selectors, domain.mta_sts, domain.interval) == (
        "example.org", ("mail", "s2._x"), True, 0)
    assert config.blocklists == BlocklistSettings(("zen.spamhaus.org",), ("zen.spamhaus.org",), 7200)
    assert config.heartbeat is not None and config.heartbeat.method == "POST"
    data["heartbeat"] = {"url": "https://hc-ping.com/uuid/"}
    assert parse(data).heartbeat == HeartbeatSettings(url="https://hc-ping.com/uuid")
    assert config.reports is not None and config.reports.account is config.accounts["self"]
    assert (config.reports.min_compliance, config.reports.dedup_window) == (0.9, 14 * 86400)
    assert config.postfix_queue == PostfixQueueSettings(True, Path("/etc/postfix"), warn_oldest_age=6 * 3600)


def test_absent_sections_are_none_or_empty() -> None:
    data = minimal()
    for name in ("alerts", "metrics", "domains", "blocklists", "heartbeat", "reports", "postfix_queue"):
        del data[name]
    config = parse(data)
    assert (config.ntfy, config.metrics_textfile, config.domains, config.blocklists, config.heartbeat,
            config.reports, config.postfix_queue) == (None, None, (), None, None, None, None)
    assert parse(minimal()).blocklists == BlocklistSettings(zones=s.DEFAULT_BLOCKLISTS)


@pytest.mark.parametrize(("hostname", "instance"), [
    ("mail.example.org", "mail.example.org"), ("höst_name.example", "h-st-name.example"), ("", "mail-monitor"),
    ("---", "mail-monitor"), ("ünï", "n"), ("a" * 300, "a" * 253),
])
def test_default_instance_is_a_valid_ehlo_name(monkeypatch: pytest.MonkeyPatch, hostname: str,
                                               instance: str) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    assert default_instance() == instance
    assert k.EHLO_NAME.parse(default_instance()) == instance
    assert parse(minimal()).monitor.instance == instance


# --------------------------------------------------------------------------- warnings


def test_plaintext_login_warns_unless_allowed() -> None:
    data = minimal()
    data["accounts"]["self"]["smtp"].update(tls="none")
    warnings = parse(data).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{SOURCE}: accounts.self.smtp: tls = \"none\": the login crosses the network")
    assert parse(data).accounts["self"].smtp.port == 25  # type: ignore[union-attr]
    data["accounts"]["self"]["smtp"]["allow_plaintext"] = True
    assert parse(data).warnings == ()
    assert parse(data).accounts["self"].smtp.allow_plaintext is True  # type: ignore[union-attr]


def test_gmail_without_provider_warns() -> None:
    data = minimal()
    data["accounts"]["self"]["imap"]["host"] = "imap.gmail.com"
    assert any('provider = "gmail"' in w for w in parse(data).warnings)
    data["accounts"]["self"]["imap"]["provider"] = "gmail"
    assert parse(data).warnings == ()


# --------------------------------------------------------------------------- messages stay one line


@pytest.mark.parametrize("name", ["dead\nline", "bell\x07\x1b[31m", "k" * 1000, "rtl\u202eevil", "nul\x00"])
def test_hostile_keys_are_escaped_and_shortened(name: str) -> None:
    cases = []
    data = minimal()
    data["monitor"][name] = 1
    cases.append(data)
    data = minimal()
    data["accounts"][name] = data["accounts"]["self"]
    cases.append(data)
    data = minimal()
    data[name] = {}
    cases.append(data)
    data = minimal()
    data["routes"][0]["to"] = name
    cases.append(data)
    for data in cases:
        message = error_of(data)
        assert all(c.isprintable() for c in message), repr(message)
        assert len(message) < 500, len(message)
        assert name not in message or (name.isprintable() and len(name) <= 60)


@pytest.mark.parametrize("value", ["two\nlines", "\x1b]0;title\x07", "v" * 1000, "\u2028", 10**5000], ids=shown_value)
def test_hostile_values_are_escaped_and_shortened(value: object) -> None:
    data = minimal()
    data["accounts"]["self"]["address"] = value
    message = error_of(data)
    assert all(c.isprintable() for c in message)
    assert len(message) < 300
    if isinstance(value, str) and len(value) > 60:
        assert "…" in message


def test_hostile_file_name_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "bad\nname.toml"
    path.write_text("[monitor\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value) and "bad\\nname.toml: invalid TOML" in str(info.value)


# --------------------------------------------------------------------------- what is printed


def full_config() -> dict[str, Any]:
    data = minimal()
    data["monitor"].update(resolver="192.0.2.53", instance="probe-1", timeout=0.25)
    data["accounts"]["self"]["smtp"].update(tls="none", allow_plaintext=True, ca_file="/ca.pem")
    data["accounts"]["self"]["imap"].update(extra_folders=["Junk", "Spam"], provider="gmail",
                                            oauth2_token_command=["tok", "--me"])
    data["routes"][0].update(require=["spf"], sending_ips=["2001:db8::1"], slow_after=1.234567891234,
                             late_after="1d", lost_after="2d")
    data["alerts"]["ntfy"].update(token_file="$CREDENTIALS_DIRECTORY/ntfy", email="me@example.net",
                                  remind_every="6h", click="https://g.example.org/")
    data["domains"][0].update(sending_ips=["192.0.2.25"], dkim_selectors=["mail"], ca_file="/ca.pem")
    data["heartbeat"].update(url="https://hc-ping.com/5f1b0c2e-secret-uuid", method="POST", token_file="/t",
                             ca_file="/hc-ca.pem", timeout="2.5s")
    data["reports"].update(min_compliance=0.95, error_folder="DMARC/error")
    data["postfix_queue"].update(enable=True, config_directory="/etc/postfix-out")
    return data


def with_ping_urls_shown(config: Config, printed: dict[str, Any]) -> Config:
    """``config`` as check-config's print of it reads back: heartbeat URLs cut to what is shown."""
    if config.heartbeat is None:
        return config
    shown = printed["heartbeat"]
    return dataclasses.replace(config, heartbeat=dataclasses.replace(
        config.heartbeat, url=shown.get("url"), url_template=shown.get("url_template")))


def test_check_config_print_reads_back_into_the_same_config() -> None:
    config = parse(full_config())
    printed = tomli_w.dumps(redacted(config))
    again = parse_config(tomllib.loads(printed), SOURCE)
    assert again == with_ping_urls_shown(config, redacted(config))
    assert redacted(again) == redacted(config)
    assert "$CREDENTIALS_DIRECTORY/ntfy" in printed
    assert again.heartbeat is not None
    assert (again.heartbeat.ca_file, again.heartbeat.timeout) == (Path("/hc-ca.pem"), 2.5)


@pytest.mark.parametrize(("heartbeat", "shown", "secret"), [
    ({"url": "https://hc-ping.com/5f1b0c2e-secret-uuid"}, "https://hc-ping.com/<redacted>", "/5f1b0c2e-secret-uuid"),
    ({"url": "https://hc.example.org:8443/ping/k3y/slug/"}, "https://hc.example.org:8443/<redacted>",
     "/ping/k3y/slug"),
    ({"url_template": "https://kuma.example.org/api/push/Ab12Cd34Ef?status={status}&msg={message}"},
     "https://kuma.example.org/<redacted>", "/api/push/Ab12Cd34Ef?status="),
    ({"url": "https://hc.example.org"}, "https://hc.example.org", None),
    ({"url_template": "https://status.example.org/{status}"}, "https://status.example.org/<redacted>", None),
], ids=["healthchecks", "port-and-slug", "kuma", "no-path", "placeholder-first"])
def test_check_config_shows_a_ping_url_without_its_secret(heartbeat: dict[str, str], shown: str,
                                                           secret: str | None) -> None:
    data = minimal()
    data["heartbeat"] = heartbeat
    config = parse(data)
    assert config.heartbeat is not None and config.heartbeat.url_secret == secret
    printed = redacted(config)
    assert printed["heartbeat"][next(iter(heartbeat))] == shown
    if secret is not None:
        assert secret.strip("/?=") not in tomli_w.dumps(printed)
        # Known to the scrubber like a password, so no log line carries it either.
        assert config.scrubber()(f"GET {secret}/start HTTP/1.1") == "GET <redacted>/start HTTP/1.1"
    parse_config(tomllib.loads(tomli_w.dumps(printed)), SOURCE)  # what is printed still loads


def test_check_config_print_shows_every_default() -> None:
    printed = redacted(parse(minimal()))
    assert printed["monitor"]["deadline"] == "1d" and printed["monitor"]["max_parallel"] == 50
    assert printed["routes"][0]["lost_after"] == "2h"
    assert printed["blocklists"]["zones"] == list(s.DEFAULT_BLOCKLISTS)
    assert printed["accounts"]["self"]["imap"]["provider"] == "default"


def test_init_example_and_its_commented_sections_load() -> None:
    text = example_config()
    data = tomllib.loads(text)
    assert set(data) == {"monitor", "accounts", "routes", "alerts", "metrics"}
    parse_config(data, "<init>")
    enabled = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", text, flags=re.M)
    data = tomllib.loads(enabled)
    assert {"domains", "blocklists", "heartbeat", "reports", "postfix_queue"} <= set(data)
    config = parse_config(data, "<init>")
    assert config.domains[0].dkim_selectors == ("mail",) and config.postfix_queue is not None


def test_every_example_key_is_a_schema_key_with_its_doc() -> None:
    text = example_config()
    for section in s.SECTIONS:
        for key in section.keys:
            if key.example is not None:
                assert f"{key.name} = " in text
                assert key.doc.replace("`", "").replace("**", "") in text


def test_docs_examples_are_valid() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        data = tomllib.loads(block)
        if "routes" in data:
            parse_config(data, "<docs>")
        elif "accounts" not in data and "smtp" not in data:
            merged = copy.deepcopy(minimal())
            for name in ("domains", "blocklists", "heartbeat", "reports", "postfix_queue"):
                merged.pop(name)
            merged.update(data)
            parse_config(merged, "<docs>")
