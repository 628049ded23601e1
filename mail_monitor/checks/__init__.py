"""The check families. Adding a check: write its step(s), then list the family here.

A family turns the configuration into steps (see :mod:`mail_monitor.engine`); the
engine, outputs, state and alerts need nothing else to know about it. A family's
module is imported only when the configuration uses it: a run of routes alone does
not pay for the DNS, DKIM or report-parsing code (about 40 ms of a 1.2 s run).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mail_monitor.checks.routes import judges_probe
from mail_monitor.config import Config
from mail_monitor.deadline import Deadline
from mail_monitor.engine import Engine, Step
from mail_monitor.probes.tls import describe_error
from mail_monitor.results import CheckResult, History, RunResult

Steps = Callable[[Config, History], Iterable[Step]]


@dataclass(frozen=True)
class Family:
    """Where a family's steps come from, and whether a configuration has any of them."""

    module: str
    function: str
    configured: Callable[[Config], bool]

    def steps(self, config: Config, history: History) -> Iterable[Step]:
        if not self.configured(config):
            return ()
        build: Steps = getattr(importlib.import_module(self.module), self.function)
        return build(config, history)


FAMILIES: tuple[Family, ...] = (
    Family("mail_monitor.checks.routes", "route_steps", lambda config: bool(config.routes)),
    Family("mail_monitor.checks.deliverability", "deliverability_steps",
           lambda config: bool(config.domains) or config.blocklists is not None
           or any(judges_probe(route) for route in config.routes)),
    Family("mail_monitor.checks.reports", "host_steps",
           lambda config: config.reports is not None
           or (config.postfix_queue is not None and config.postfix_queue.enable)),
)
OUTPUT_RESERVE = 10.0  # seconds of the deadline kept for state, alerts and metrics


def all_steps(config: Config, history: History | None = None) -> list[Step]:
    history = history or History()
    return [step for family in FAMILIES for step in family.steps(config, history)]


def needs_history(config: Config) -> bool:
    """Whether a run must read the state before its checks (carried results, async probes, reports)."""
    return any(step.interval > 0 for step in all_steps(config)) or any(r.mode == "async" for r in config.routes) \
        or config.reports is not None


def run_checks(config: Config, deadline: Deadline | None = None,
               carried: Mapping[str, CheckResult] | None = None,
               scrub: Callable[[str], str] | None = None, history: History | None = None) -> RunResult:
    """One pass over every check of every subject. Returns by the deadline even if a server hangs."""
    monitor = config.monitor
    started_wall = time.time()
    overall = deadline or Deadline(monitor.deadline, monitor.timeout)
    reserve = min(OUTPUT_RESERVE, overall.seconds * 0.1)
    checks_deadline = overall.sub(overall.remaining() - reserve)
    engine = Engine(max_parallel=monitor.max_parallel, describe=describe_error)
    if scrub is not None:
        engine.scrub = scrub
    results = engine.run(all_steps(config, history), checks_deadline, carried)
    return RunResult(started_wall, time.monotonic() - overall.start, tuple(results), monitor.instance)
