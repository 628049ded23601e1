"""Everything printed from the schema: check-config's resolved config, init's example, the docs' key tables."""

from __future__ import annotations

import re
from typing import Any

import tomli_w

from mail_monitor.config import kinds
from mail_monitor.config import schema as s
from mail_monitor.config.model import Config
from mail_monitor.config.text import split_url
from mail_monitor.redact import REDACTED

# --------------------------------------------------------------------------- check-config


def _section(section: s.Section, obj: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in section.keys:
        if isinstance(key.kind, kinds.Table):
            continue
        value = getattr(obj, key.attribute)
        if value is None:
            continue
        out[key.name] = key.kind.render(value)
        if key.secret_path:
            origin, rest = split_url(out[key.name])
            out[key.name] = f"{origin}/{REDACTED}" if rest.strip("/?#") else origin
    return out


def redacted(config: Config) -> dict[str, Any]:
    """The resolved configuration as TOML-ready data: every default filled in, secret file names, no secrets.

    It reads back (``parse_config``) into the same configuration, except that a capability
    URL (``[heartbeat] url``) keeps its scheme and host only.
    """
    data: dict[str, Any] = {"monitor": _section(s.MONITOR, config.monitor), "accounts": {}}
    for name, account in config.accounts.items():
        entry = _section(s.ACCOUNT, account)
        if account.smtp is not None:
            entry["smtp"] = _section(s.SMTP, account.smtp)
        if account.imap is not None:
            entry["imap"] = _section(s.IMAP, account.imap)
        data["accounts"][name] = entry
    data["routes"] = [_section(s.ROUTE, route) for route in config.routes]
    if config.ntfy is not None:
        data["alerts"] = {"ntfy": _section(s.NTFY, config.ntfy)}
    if config.metrics_textfile is not None:
        data["metrics"] = _section(s.METRICS, config)
    if config.domains:
        data["domains"] = [_section(s.DOMAIN, domain) for domain in config.domains]
    for name, section in (("blocklists", s.BLOCKLISTS), ("heartbeat", s.HEARTBEAT), ("reports", s.REPORTS),
                          ("postfix_queue", s.POSTFIX_QUEUE)):
        settings = getattr(config, name)
        if settings is not None:
            data[name] = _section(section, settings)
    return data


# --------------------------------------------------------------------------- init


def _toml_value(value: Any) -> str:
    """A TOML value on one line."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def example_config() -> str:
    """The annotated example ``init`` writes: it loads as is once its secret files exist."""
    out = ["# mail-monitor configuration. Every key: docs/configuration.md", ""]
    for section in s.SECTIONS:
        prefix = "" if section.in_example else "# "
        out.append(f"# {section.doc}")
        if not section.in_example:
            out.append("# (remove the leading '# ' to enable)")
        out.append(f"{prefix}{section.header}")
        for key in section.keys:
            if key.example is None:
                continue
            out.append(f"# {key.doc}".replace("`", "").replace("**", ""))
            out.append(f"{prefix}{key.name} = {_toml_value(key.example)}")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- docs

_BLOCK = re.compile(r"(<!-- keys: (?P<path>\S+) -->\n).*?(<!-- end keys -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_cell(key: s.Key) -> str:
    if key.required:
        return "required"
    if key.default_doc is not None:
        return key.default_doc
    if key.default is None:
        return "—"
    return f"`{_toml_value(key.default)}`"


def key_table(section: s.Section) -> str:
    """The Markdown table of one section's keys."""
    rows = ["| key | expects | default | meaning |", "|---|---|---|---|"]
    for key in section.keys:
        rows.append(f"| `{key.name}` | {_cell(key.kind.expected)} | {_cell(_default_cell(key))} | {_cell(key.doc)} |")
    return "\n".join(rows) + "\n"


def regenerate_docs(text: str) -> str:
    """``text`` with every ``<!-- keys: PATH -->`` block replaced by the current table; all sections present."""
    by_path = {section.path: section for section in s.SECTIONS}
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        path = match.group("path")
        if path not in by_path:
            raise ValueError(f"unknown section in docs marker: {path}")
        found.append(path)
        return match.group(1) + key_table(by_path[path]) + match.group(3)

    result = _BLOCK.sub(replace, text)
    missing = [path for path in by_path if path not in found]
    if missing:
        raise ValueError(f"no '<!-- keys: PATH -->' block for: {', '.join(missing)}")
    return result
