"""One monitoring run end to end: checks, then output, state, alerts and metrics.

Data flows one way: config -> runner -> results -> (state + alerts, metrics, output).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mail_monitor.config import Config
from mail_monitor.deadline import Deadline
from mail_monitor.errors import StateError
from mail_monitor.output import render
from mail_monitor.results import RunResult, Status
from mail_monitor.runner import run_checks

if TYPE_CHECKING:
    from mail_monitor.state import State, StateStore

log = logging.getLogger(__name__)


LATER_PHASES = ("mail_monitor.state", "mail_monitor.alerts")


def _preload(modules: tuple[str, ...]) -> None:
    """Import what the run needs after the checks, while the test mails are in flight."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # reported properly when the module is really used
            return


def run_once(config: Config, fmt: str = "text", notify: bool = True, use_state: bool = True) -> int:
    deadline = Deadline(config.monitor.deadline, config.monitor.timeout)
    later = LATER_PHASES + (("mail_monitor.metrics",) if config.metrics_textfile else ())
    result = run_checks(config, deadline, while_waiting=lambda: _preload(later))
    from mail_monitor.alerts import AlertPolicy, evaluate
    from mail_monitor.state import State, StateStore

    # The checks are reported whatever happens to the state, alerts or metrics below.
    sys.stdout.write(render(result, fmt))
    sys.stdout.flush()
    exit_code = int(result.status)

    store = StateStore(config.monitor.state_file) if use_state and config.monitor.state_file else None
    try:
        state = record(config, result, store, deadline, notify)
    except StateError as exc:
        log.error("%s", exc)
        exit_code = int(Status.UNKNOWN)
        state = None
    if config.metrics_textfile is not None:
        from mail_monitor.metrics import write_textfile

        if state is None:
            state, _ = evaluate(State(), result, AlertPolicy(enabled=False), time.time())
        try:
            write_textfile(config.metrics_textfile, result, state)
        except OSError as exc:
            log.error("%s: cannot write metrics: %s", config.metrics_textfile, exc.strerror)
            exit_code = int(Status.UNKNOWN)
    return exit_code


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
    """
    from mail_monitor.alerts import AlertPolicy, evaluate
    from mail_monitor.state import State

    ntfy = config.ntfy
    policy = AlertPolicy(enabled=ntfy is not None,
                         after_failures=ntfy.after_failures if ntfy else 1,
                         remind_every=ntfy.remind_every if ntfy else 0.0)
    with _maybe_locked(store, max(1.0, deadline.remaining())):
        previous = store.load() if store else State()
        state, new_alerts = evaluate(previous, result, policy, time.time())
        for alert in new_alerts:
            log.warning("alert %s (%s): %s", alert.id, alert.kind, alert.title)
        save_error: StateError | None = None
        if store is not None:
            try:
                store.save(state)
            except StateError as exc:
                save_error = exc  # still try to deliver: an outage must reach the phone
        if notify and ntfy is not None and state.queue:
            from mail_monitor.ntfy import deliver

            before = len(state.queue)
            state.queue = deliver(state.queue, ntfy, result.instance, deadline)
            state.alerts_sent_total += before - len(state.queue)
            if store is not None and save_error is None:
                try:
                    store.save(state)
                except StateError as exc:
                    save_error = exc
        if save_error is not None:
            raise save_error
    return state
