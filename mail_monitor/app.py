"""One monitoring run end to end: checks, then state and alerts, metrics, and output.

Data flows one way: config -> engine -> results -> (state + alerts, metrics, output).
The output comes last so that its status word, the JSON status, the status metric and
the exit code always agree, also when the monitor itself failed (state, metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mail_monitor.checks import needs_history, run_checks
from mail_monitor.config import Config
from mail_monitor.deadline import Deadline
from mail_monitor.errors import StateError, StateUnavailable
from mail_monitor.output import render
from mail_monitor.results import RunResult

if TYPE_CHECKING:
    from mail_monitor.alerts import AlertPolicy
    from mail_monitor.heartbeat import Heartbeat, HeartbeatSettings
    from mail_monitor.ntfy import CardSettings
    from mail_monitor.state import State, StateStore

log = logging.getLogger(__name__)


def run_once(config: Config, fmt: str = "text", notify: bool = True, use_state: bool = True) -> int:
    deadline = Deadline(config.monitor.deadline, config.monitor.timeout)
    heartbeat = _heartbeat(config, deadline)
    if heartbeat is not None:
        heartbeat.begin()
    config = _with_oauth2_tokens(config, deadline)
    final = _run(config, deadline, fmt, notify, use_state)
    if heartbeat is not None:
        from mail_monitor.heartbeat import summary

        heartbeat.end(int(final.status), summary(final.status.label, [c.label for c in final.failing()]))
    return int(final.status)


def _run(config: Config, deadline: Deadline, fmt: str, notify: bool, use_state: bool) -> RunResult:
    from mail_monitor.state import StateStore

    store = StateStore(config.monitor.state_file) if use_state and config.monitor.state_file else None
    previous = _previous(config, store)
    result = run_checks(config, deadline, carried=previous.last_results(), history=previous.history(),
                        scrub=config.scrubber())
    errors: list[str] = []
    try:
        state = record(config, result, store, deadline, notify)
    except StateError as exc:
        log.error("%s", exc)
        errors.append(str(exc))
        state = None
    if config.metrics_textfile is not None:
        from mail_monitor.alerts import AlertPolicy, evaluate
        from mail_monitor.metrics import write_textfile
        from mail_monitor.state import State

        if state is None:
            state, _ = evaluate(State(), result, AlertPolicy(enabled=False), time.time())
        try:
            write_textfile(config.metrics_textfile, dataclasses.replace(result, errors=tuple(errors)), state)
        except OSError as exc:
            message = f"{config.metrics_textfile}: cannot write metrics: {exc.strerror or exc}"
            log.error("%s", message)
            errors.append(message)
    final = dataclasses.replace(result, errors=tuple(errors))
    sys.stdout.write(render(final, fmt))
    sys.stdout.flush()
    return final


def _with_oauth2_tokens(config: Config, deadline: Deadline) -> Config:
    """Run the token commands now, before anything could echo a token: the run's scrubber
    (built from the config) and the log handlers then know these tokens too.

    At most half of what is left of the run goes to them, so the checks still report.
    """
    if not any(e is not None and e.oauth2_token_command is not None
               for a in config.accounts.values() for e in (a.smtp, a.imap)):
        return config
    from mail_monitor.config import resolve_token_commands
    from mail_monitor.redact import Scrubber, scrub_handlers

    config, learned = resolve_token_commands(config, deadline.remaining() / 2)
    if learned:
        scrub_handlers(Scrubber(learned))
    return config


def _heartbeat(config: Config, deadline: Deadline) -> Heartbeat | None:
    settings = heartbeat_settings(config)
    if settings is None:
        return None
    from mail_monitor.heartbeat import Heartbeat

    return Heartbeat(settings, deadline)


def _previous(config: Config, store: StateStore | None) -> State:
    """What earlier runs left for this one's checks; read without the lock, best effort.

    The state is read again under the lock once the checks are done: what is counted
    (a probe found, lost) is counted against that copy, so concurrent runs count once.
    """
    from mail_monitor.state import State

    if store is None or not needs_history(config):
        return State()
    try:
        return store.load(read_only=True)
    except StateError as exc:
        log.warning("%s; this run starts without earlier results", exc)
        return State()


@contextlib.contextmanager
def _maybe_locked(store: StateStore | None, timeout: float) -> Iterator[None]:
    if store is None:
        yield
    else:
        with store.locked(timeout):
            yield


def record(config: Config, result: RunResult, store: StateStore | None, deadline: Deadline,
           notify: bool) -> State:
    """Update the state, then deliver alerts. Raises StateError after doing what it could.

    Order: the state, with any new alert queued, is saved *before* the alert is sent,
    and saved again once the server accepted it. A crash in between can re-send one
    alert on the next run (same sequence id); it can never lose one.

    A state that cannot be locked, read or saved (its directory not writable, a full
    disk, a file from a newer version after a rollback) must not silence an outage:
    nothing this run counts would be kept, so the run decides without counting
    (:func:`_uncounted`); the StateError still makes the run UNKNOWN.
    """
    from mail_monitor.alerts import AlertPolicy
    from mail_monitor.state import State

    ntfy = config.ntfy
    policy = AlertPolicy(enabled=ntfy is not None,
                         after_failures=ntfy.after_failures if ntfy else 1,
                         remind_every=ntfy.remind_every if ntfy else 0.0)
    try:
        with _maybe_locked(store, max(1.0, deadline.remaining())):
            previous = store.load() if store else State()
            return _decide_and_deliver(config, result, store, previous, policy, deadline, notify)
    except StateUnavailable as exc:
        log.error("%s; alerting without the state: every failing check alerts, nothing is counted", exc)
        _decide_and_deliver(config, result, None, State(), _uncounted(policy), deadline, notify)
        raise


def _uncounted(policy: AlertPolicy) -> AlertPolicy:
    """For a run whose counts cannot be kept: ``after_failures`` would never be reached, and
    an outage must reach the phone, so every failing check alerts at once."""
    return dataclasses.replace(policy, after_failures=1)


def _decide_and_deliver(config: Config, result: RunResult, store: StateStore | None, previous: State,
                        policy: AlertPolicy, deadline: Deadline, notify: bool) -> State:
    from mail_monitor.alerts import evaluate

    ntfy = config.ntfy
    now = time.time()
    state, new_alerts = evaluate(previous, result, policy, now)
    save_error: StateError | None = None
    if store is not None:
        try:
            store.save(state)
        except StateError as exc:  # a full disk, a read-only file system
            save_error = exc  # what this run counts is lost with the save
            state, new_alerts = evaluate(previous, result, _uncounted(policy), now)
    for alert in new_alerts:
        log.warning("alert %s (%s): %s", alert.id, alert.kind, alert.title)
    if notify and ntfy is not None and state.queue:
        from mail_monitor.ntfy import deliver

        before = len(state.queue)
        state.queue = deliver(state.queue, ntfy, result.instance, deadline, card=ntfy_card(config))
        state.alerts_sent_total += before - len(state.queue)
        if store is not None and save_error is None:
            try:
                store.save(state)
            except StateError as exc:
                save_error = exc
    if save_error is not None:
        raise save_error
    return state


# --------------------------------------------------------------------------- settings


def ntfy_card(config: Config) -> CardSettings:
    """How an alert's card looks beyond its text: buttons and the e-mail copy."""
    from mail_monitor.ntfy import CardSettings

    ntfy = config.ntfy
    if ntfy is None:
        return CardSettings()
    return CardSettings(dashboard_url=ntfy.dashboard_url, runbook_url=ntfy.runbook_url, email=ntfy.email)


def heartbeat_settings(config: Config) -> HeartbeatSettings | None:
    """``[heartbeat]`` for the pinger; its requests are bounded by the run's deadline too."""
    if config.heartbeat is None:
        return None
    from mail_monitor.heartbeat import HeartbeatSettings

    beat = config.heartbeat
    return HeartbeatSettings(url=beat.url, url_template=beat.url_template, method=beat.method, token=beat.token,
                             ca_file=beat.ca_file, timeout=beat.timeout)
