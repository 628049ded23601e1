"""One monitoring run end to end: checks, then state, alerts, metrics and output."""

from __future__ import annotations

import logging
import sys

from mail_monitor.config import Config
from mail_monitor.output import render
from mail_monitor.runner import run_checks

log = logging.getLogger(__name__)


def run_once(config: Config, fmt: str = "text", notify: bool = True, use_state: bool = True) -> int:
    result = run_checks(config)
    sys.stdout.write(render(result, fmt))
    sys.stdout.flush()
    return int(result.status)
