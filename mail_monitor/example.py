"""The annotated example configuration that ``mail-monitor init`` writes.

Values are serialised by tomli-w; the comments are ours, one block per key, so the
example always parses and always matches what the loader accepts.
"""

from __future__ import annotations

from typing import Any

import tomli_w

Entry = tuple[str, Any, str]  # key, value, comment

SECTIONS: list[tuple[str, str, list[Entry]]] = [
    ("monitor", "How a run behaves.", [
        ("state_file", "/var/lib/mail-monitor/state.json",
         "Remembers results between runs (alerts fire on changes only)."),
        ("deadline", "3m", "A run never lasts longer than this, whatever the servers do."),
        ("timeout", "30s", "Longest wait for any single network step."),
        ("subject_prefix", "[mail-monitor]",
         "Test mails carry this prefix; cleanup only ever touches mails with it AND the token header."),
        ("delete_test_mail", True, "Delete the test mail once it has been seen."),
        ("stale_after", "1h", "Delete monitor mails older than this left by earlier failed runs."),
        ("cleanup_window", "7d", "Look this far back for them (older mail is never searched)."),
        ("tls_warn_days", 14, "Warn when a certificate expires within this many days."),
    ]),
    ("accounts.self", "An account: where to log in. Add more as [accounts.NAME].", [
        ("address", "monitor@example.com", "The address test mails are sent from and to."),
        ("username", "monitor@example.com", "Login name; defaults to address."),
        ("password_file", "/run/secrets/mail-monitor",
         "A file holding only the password; \"$CREDENTIALS_DIRECTORY/NAME\" works under systemd."),
        ("smtp", {"host": "mail.example.com", "port": 587, "tls": "starttls"},
         'Submission server. tls: "starttls", "implicit" (port 465) or "none"; optional ca_file.'),
        ("imap", {"host": "mail.example.com", "port": 993, "tls": "implicit", "extra_folders": ["Junk"]},
         'IMAP server. extra_folders are searched too (mail found there is reported as spam).'),
    ]),
    ("[routes]", "A route: send from one account, expect the mail in another. Repeat for more.", [
        ("name", "self", "Shown in alerts, metrics (route label) and output."),
        ("from", "self", "Account that sends (needs smtp)."),
        ("to", "self", "Account that receives (needs imap)."),
        ("receive_timeout", "60s", "How long to wait for the mail before calling it lost."),
        ("slow_after", "30s", "A roundtrip above this is a warning."),
    ]),
    ("alerts.ntfy", "Push alerts to your phone with ntfy, only when something changes.", [
        ("server", "https://ntfy.sh", "Your ntfy server (self-hosted works, with ca_file if needed)."),
        ("topic", "my-mail-alerts", "Pick something hard to guess on a public server."),
        ("token_file", "/run/secrets/ntfy-token", "Optional access token; or username + password_file."),
        ("after_failures", 1, "Consecutive failed runs before the failure alert."),
        ("remind_every", "0", 'Re-alert while still failing, e.g. "6h"; "0" = never.'),
    ]),
    ("metrics", "Prometheus metrics for node_exporter's textfile collector.", [
        ("textfile", "/var/lib/prometheus-node-exporter/mail_monitor.prom",
         "Written atomically after every run; the name must end in .prom."),
    ]),
]


def _value(value: Any) -> str:
    """A TOML value; tables inline, so each account reads as one block."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def example_config() -> str:
    out = ["# mail-monitor configuration. Reference: docs/configuration.md", ""]
    for section, about, entries in SECTIONS:
        out.append(f"# {about}")
        out.append(f"[{section}]")
        for key, value, comment in entries:
            out.append(f"# {comment}")
            out.append(f"{key} = {_value(value)}")
        out.append("")
    return "\n".join(out)
