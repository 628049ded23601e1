"""Command line: ``mail-monitor run | check-config | init | status | notify-test``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mail_monitor import __version__
from mail_monitor.config import (
    DEFAULT_CONFIG_PATH,
    TLS_MODES,
    Config,
    human_duration,
    load_config,
    parse_config,
    read_secrets,
)
from mail_monitor.errors import ConfigError, MonitorError, UsageError
from mail_monitor.logs import setup_logging
from mail_monitor.output import FORMATS
from mail_monitor.results import Outcome, Status, Subject

if TYPE_CHECKING:
    from mail_monitor.state import State

log = logging.getLogger("mail_monitor")

ADHOC_FLAGS = ("smtp_host", "imap_host", "username", "password_file")


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 3 (UNKNOWN), not argparse's 2, which means CRITICAL here."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(int(Status.UNKNOWN))


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path,
                        help=f"TOML configuration (default: $MAIL_MONITOR_CONFIG or {DEFAULT_CONFIG_PATH})")
    adhoc = parser.add_argument_group("ad-hoc check without a config file (one account mailing itself)")
    adhoc.add_argument("--smtp-host")
    adhoc.add_argument("--smtp-port", type=int)
    adhoc.add_argument("--smtp-tls", choices=TLS_MODES, default="starttls")
    adhoc.add_argument("--imap-host")
    adhoc.add_argument("--imap-port", type=int)
    adhoc.add_argument("--imap-tls", choices=TLS_MODES, default="implicit")
    adhoc.add_argument("--allow-plaintext", action="store_true",
                       help='log in over tls "none" without a warning (e.g. a loopback server)')
    adhoc.add_argument("--username", help="login name (also the sender address unless --address)")
    adhoc.add_argument("--address", help="sender address (default: --username)")
    adhoc.add_argument("--password-file", help="file holding the password (never pass it as a flag)")
    adhoc.add_argument("--test-recipient", help="send to this address instead (must reach the IMAP account)")
    adhoc.add_argument("--ca-file", help="trust this CA for both servers")
    adhoc.add_argument("--extra-folder", action="append", default=[], dest="extra_folders",
                       help="also look here (repeatable), e.g. Junk")
    adhoc.add_argument("--receive-timeout", default="60s")
    adhoc.add_argument("--deadline", default="3m")
    adhoc.add_argument("--state-file", help="remember results here (default: no state)")
    adhoc.add_argument("--metrics-textfile", help="write Prometheus metrics here (a .prom file)")
    adhoc.add_argument("--ntfy-topic")
    adhoc.add_argument("--ntfy-server", default="https://ntfy.sh")
    adhoc.add_argument("--ntfy-token-file")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mail-monitor",
        description="End-to-end monitor for your own mail server: IMAP, SMTP, delivery, TLS.",
        epilog="Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the monitor could not do its job).",
    )
    parser.add_argument("--version", action="version", version=f"mail-monitor {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run every check once")
    _config_arguments(run)
    run.add_argument("--format", choices=FORMATS, default="text")
    run.add_argument("--no-notify", action="store_true", help="send no alerts (still queued in state)")
    run.add_argument("--no-state", action="store_true", help="neither read nor write the state file")

    check = sub.add_parser("check-config", help="validate and print the resolved config (secrets redacted)")
    _config_arguments(check)

    status = sub.add_parser("status", help="what the last runs found (reads the state file)")
    _config_arguments(status)
    status.add_argument("--format", choices=("text", "json"), default="text")

    notify = sub.add_parser("notify-test", help="send a test notification to the configured ntfy topic")
    _config_arguments(notify)

    init = sub.add_parser("init", help="write an annotated example configuration")
    init.add_argument("path", nargs="?", type=Path, help="where to write it (default: stdout)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


# --------------------------------------------------------------------------- config


def _adhoc_requested(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in ADHOC_FLAGS)


def adhoc_config(args: argparse.Namespace) -> Config:
    """The single-account configuration from flags, validated by the same loader as files."""
    missing = [f"--{n.replace('_', '-')}" for n in ADHOC_FLAGS if not getattr(args, n)]
    if missing:
        raise ConfigError(f"<command line>: missing {', '.join(missing)} (or use --config FILE)")
    address = args.address or args.username
    smtp: dict[str, Any] = {"host": args.smtp_host, "tls": args.smtp_tls}
    imap: dict[str, Any] = {"host": args.imap_host, "tls": args.imap_tls,
                            "extra_folders": list(args.extra_folders)}
    for table, port in ((smtp, args.smtp_port), (imap, args.imap_port)):
        if port is not None:
            table["port"] = port
        if args.ca_file:
            table["ca_file"] = args.ca_file
        if args.allow_plaintext:
            table["allow_plaintext"] = True
    self_account = {"address": address, "username": args.username,
                    "password_file": args.password_file, "smtp": smtp, "imap": imap}
    accounts: dict[str, Any] = {"self": self_account}
    to = "self"
    if args.test_recipient and args.test_recipient != address:
        accounts["recipient"] = {"address": args.test_recipient, "username": args.username,
                                 "password_file": args.password_file, "imap": imap}
        to = "recipient"
    data: dict[str, Any] = {
        "monitor": {"deadline": args.deadline, "state_file": args.state_file or ""},
        "accounts": accounts,
        "routes": [{"name": "self", "from": "self", "to": to, "receive_timeout": args.receive_timeout}],
    }
    if not args.state_file:
        del data["monitor"]["state_file"]
    if args.metrics_textfile:
        data["metrics"] = {"textfile": args.metrics_textfile}
    if args.ntfy_topic:
        ntfy: dict[str, Any] = {"topic": args.ntfy_topic, "server": args.ntfy_server}
        if args.ntfy_token_file:
            ntfy["token_file"] = args.ntfy_token_file
        data["alerts"] = {"ntfy": ntfy}
    config = read_secrets(parse_config(data, "<command line>"))
    if not args.state_file:
        config = _without_state(config)
    return config


def _without_state(config: Config) -> Config:
    from dataclasses import replace

    return replace(config, monitor=replace(config.monitor, state_file=None))


def resolve_config(args: argparse.Namespace) -> Config:
    """The configuration from flags or file; its warnings (plain-text logins, ...) go to the log."""
    if _adhoc_requested(args):
        if args.config:
            raise ConfigError("<command line>: use either --config or the ad-hoc flags, not both")
        config = adhoc_config(args)
    else:
        config = load_config(args.config or Path(os.environ.get("MAIL_MONITOR_CONFIG") or DEFAULT_CONFIG_PATH))
    from mail_monitor.redact import scrub_handlers

    # From here on no log line can carry a secret, whoever wrote it (a server's echo too).
    scrub_handlers(config.scrubber())
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


# --------------------------------------------------------------------------- commands


def cmd_check_config(args: argparse.Namespace) -> int:
    import tomli_w

    from mail_monitor.config.render import redacted

    config = resolve_config(args)
    sys.stdout.write(f"# {config.source}: OK (secrets read and redacted)\n")
    sys.stdout.write(tomli_w.dumps(redacted(config)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from mail_monitor.config.render import example_config

    text = example_config()
    if args.path is None:
        sys.stdout.write(text)
        return 0
    path: Path = args.path
    if path.exists() and not args.force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from mail_monitor.files import write_atomic

        write_atomic(path, text.encode(), mode=0o600)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    print(f"wrote {path}; edit it, then: mail-monitor check-config -c {path}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mail_monitor.app import run_once

    config = resolve_config(args)
    return run_once(config, fmt=args.format, notify=not args.no_notify, use_state=not args.no_state)


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(then))
    return f"{stamp} ({human_duration(now - then)} ago)"


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from mail_monitor.state import StateStore, as_dict

    config = resolve_config(args)
    if config.monitor.state_file is None:
        raise UsageError("no state file configured (set monitor.state_file or --state-file)")
    path = config.monitor.state_file
    if not path.exists():
        raise UsageError(f"{path}: no state yet (no run has completed)")
    state = StateStore(path).load(read_only=True)
    code = int(state.status)
    if args.format == "json":
        sys.stdout.write(json.dumps(as_dict(state), indent=2) + "\n")
        return code
    now = time.time()
    lines = [f"status: {state.status.label} since {_ago(now, state.status_since)}",
             f"last run: {_ago(now, state.last_run)}; {state.runs_total} runs"]
    failing, warning = [], []
    for subject, checks in sorted(state.checks.items()):
        label = Subject.parse(subject).label
        for name, check in sorted(checks.items()):
            if not check.ok:
                failing.append(f"  {label}/{name}: failing since {_ago(now, check.since)}, "
                               f"{check.consecutive_failures} run(s) in a row: {check.last_error}")
            elif check.outcome is Outcome.WARNING:
                warning.append(f"  {label}/{name}: {check.last_error}")
    if failing:
        lines += ["failing:", *failing]
    if warning:
        lines += ["warnings:", *warning]
    if state.last_roundtrip:
        trips = ", ".join(f"{Subject.parse(subject).label} {seconds:.2f}s"
                          for subject, seconds in sorted(state.last_roundtrip.items()))
        lines.append(f"last roundtrip: {trips}")
    lines += _host_lines(state)
    if state.queue:
        lines.append(f"alerts waiting for delivery: {len(state.queue)}")
        for alert in state.queue:
            lines.append(f"  #{alert.id} {alert.kind} \"{alert.title}\" ({alert.attempts} attempt(s)"
                         + (f", last error: {alert.last_error})" if alert.last_error else ")"))
    sys.stdout.write("\n".join(lines) + "\n")
    return code


def _host_lines(state: State) -> list[str]:
    """The receivers' reports counted so far and the last look at the Postfix queue."""
    lines = []
    if state.reports:
        totals = state.report_totals()
        mails = sum(c.total for c in totals.dmarc.values())
        compliant = sum(c.compliant for c in totals.dmarc.values())
        share = f" ({compliant / mails:.1%} compliant)" if mails else ""
        reporters = len({key.reporter for key in totals.dmarc})
        sessions = sum(totals.tls.values())
        lines.append(f"reports: {mails} mails in DMARC reports from {reporters} reporter(s){share}; "
                     f"{sessions} TLS sessions; {totals.invalid} unreadable report mail(s)")
    queue = state.checks.get("host", {}).get("postfix_queue")
    if queue is not None and queue.message:
        lines.append(f"postfix queue: {queue.message}")
    return lines


def cmd_notify_test(args: argparse.Namespace) -> int:
    from mail_monitor.app import ntfy_card
    from mail_monitor.deadline import Deadline
    from mail_monitor.ntfy import notify_test

    config = resolve_config(args)
    if config.ntfy is None:
        raise UsageError(f"{config.source}: alerts.ntfy: not configured; nothing to test")
    deadline = Deadline(max(config.ntfy.timeout * (config.ntfy.retries + 1) + 10, 30), config.ntfy.timeout)
    delivery = notify_test(config.ntfy, config.monitor.instance, deadline, card=ntfy_card(config))
    target = f"{config.ntfy.server}/{config.ntfy.topic}"
    if delivery.ok:
        print(f"sent a test notification to {target}: server answered {delivery.status}")
        return 0
    print(f"mail-monitor: could not notify {target}: {delivery.detail}", file=sys.stderr)
    return int(Status.UNKNOWN)


COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "init": cmd_init, "status": cmd_status,
            "notify-test": cmd_notify_test}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.command is None:
        parser.print_help(sys.stderr)
        return int(Status.UNKNOWN)
    try:
        return COMMANDS[args.command](args)
    except MonitorError as exc:
        print(f"mail-monitor: {exc}", file=sys.stderr)
        return int(Status.UNKNOWN)
    except KeyboardInterrupt:
        print("mail-monitor: interrupted", file=sys.stderr)
        return int(Status.UNKNOWN)


def entry_point() -> NoReturn:
    """The console script: ``main``, then leave without tearing the interpreter down.

    A run is a short-lived process that a timer starts every few minutes. Once its
    output is flushed and its files are renamed into place (each fsynced and closed)
    there is nothing left to clean up, and the interpreter's teardown would still cost
    ~20 ms of CPU, a tenth of a run. Threads left on a hung server end with the process.
    """
    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the reader went away; the exit code still tells the truth
        pass
    os._exit(code)
