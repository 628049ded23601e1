"""A dead man's switch: tell an outside service that a run started and how it ended.

healthchecks.io convention (``url``): ``GET url/start`` when a run begins and
``GET url/<exit code>`` when it ends, so the service alerts when the pings stop (the
timer died) and when a run fails. Push monitors with another shape (Uptime Kuma,
Gatus external endpoints) take a ``url_template`` instead, pinged once at the end.

A heartbeat never changes a run: it has a short timeout, never outlasts the run's
deadline, and a failure is logged, not reported. Its URL usually *is* the secret (a
check's UUID, a push token), so only the scheme and host are ever logged.
"""

from __future__ import annotations

import logging
import string
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mail_monitor import __version__
from mail_monitor.config.schema import HEARTBEAT, HEARTBEAT_PLACEHOLDERS
from mail_monitor.config.text import split_url
from mail_monitor.deadline import Deadline

if TYPE_CHECKING:
    from mail_monitor.config import Secret

log = logging.getLogger(__name__)

PLACEHOLDERS = HEARTBEAT_PLACEHOLDERS
METHODS = ("GET", "POST")
DOWN_FROM = 2  # exit codes from CRITICAL up are "down" for push monitors; a WARNING is still up
MESSAGE_MAX = 200
RETRY_PAUSE = 1.0


@dataclass(frozen=True)
class HeartbeatSettings:
    """``[heartbeat]``: either ``url`` (healthchecks.io style) or ``url_template``."""

    url: str | None = None
    url_template: str | None = None
    method: str = HEARTBEAT["method"].value  # Gatus external endpoints want POST
    token: Secret | None = field(default=None, repr=False)  # sent as a bearer token (Gatus)
    ca_file: Path | None = None
    timeout: float = HEARTBEAT["timeout"].value

    def __post_init__(self) -> None:
        if (self.url is None) == (self.url_template is None):
            raise ValueError("give exactly one of url and url_template")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.url_template is not None:
            check_template(self.url_template)
        if not self.timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")


def check_template(template: str) -> None:
    """Raise ValueError naming the placeholder that is not one of ``PLACEHOLDERS``."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"url_template: {exc} (write a literal brace as {{{{ or }}}})") from None
    for name in names:
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"url_template: unknown placeholder {{{name}}}; known: {known}")


def start_url(settings: HeartbeatSettings) -> str | None:
    """Only the healthchecks.io convention has a start signal; push monitors get the end only."""
    return settings.url.rstrip("/") + "/start" if settings.url else None


def end_url(settings: HeartbeatSettings, exit_code: int, message: str) -> str:
    if settings.url:
        return f"{settings.url.rstrip('/')}/{exit_code}"
    assert settings.url_template is not None
    up = exit_code < DOWN_FROM
    return settings.url_template.format(
        status="up" if up else "down",
        success="true" if up else "false",
        exit_code=exit_code,
        message=urllib.parse.quote(message[:MESSAGE_MAX], safe=""),
    )


def where(url: str) -> str:
    """What of a URL may be logged: scheme and host, never the path or query (the secret)."""
    return split_url(url)[0]


@dataclass(frozen=True)
class Problem:
    """Why a ping failed, phrased without the URL (it holds the secret)."""

    text: str
    retryable: bool = False

    def __str__(self) -> str:
        return self.text


Send = Callable[[str, float], "Problem | None"]


class Heartbeat:
    """One run's pings: ``begin`` sends the start ping beside the checks, ``end`` the result.

    Every request runs in a daemon thread that is waited for no longer than the deadline
    allows, so not even a server that trickles its answer byte by byte can hold the run.
    The start ping does not delay the checks; ``end`` waits for it first, so the service
    sees start before end.
    """

    def __init__(self, settings: HeartbeatSettings, deadline: Deadline, send: Send | None = None) -> None:
        self.settings = settings
        self.deadline = deadline
        self._send: Send = send or self._request
        self._started: threading.Thread | None = None

    def begin(self) -> None:
        url = start_url(self.settings)
        if url is not None:
            self._started = threading.Thread(target=self._ping, args=("start", url, 0), daemon=True,
                                             name="heartbeat-start")
            self._started.start()

    def end(self, exit_code: int, message: str) -> bool:
        """Send the end ping; True if the service accepted it. Never raises."""
        if self._started is not None:
            self._started.join(max(0.0, self.deadline.remaining()))
        return self._ping("end", end_url(self.settings, exit_code, message), retries=1)

    def _ping(self, kind: str, url: str, retries: int) -> bool:
        for attempt in range(retries + 1):
            left = self.deadline.remaining()
            if left <= 0.1:
                log.warning("heartbeat: %s ping to %s not sent: run deadline reached", kind, where(url))
                return False
            problem = self._bounded(url, min(self.settings.timeout, left))
            if problem is None:
                log.debug("heartbeat: %s ping to %s accepted", kind, where(url))
                return True
            retry = (attempt < retries and problem.retryable
                     and self.deadline.remaining() > RETRY_PAUSE + 0.5)
            log.warning("heartbeat: %s ping to %s failed: %s%s", kind, where(url), problem,
                        "; trying again" if retry else "")
            if not retry:
                return False
            time.sleep(RETRY_PAUSE)
        return False

    def _bounded(self, url: str, timeout: float) -> Problem | None:
        outcome: list[Problem | None] = []

        def attempt() -> None:
            try:
                outcome.append(self._send(url, timeout))
            except Exception as exc:  # noqa: BLE001 - a heartbeat must never break the run
                outcome.append(Problem(f"internal error: {exc.__class__.__name__}"))

        worker = threading.Thread(target=attempt, daemon=True, name="heartbeat-request")
        worker.start()
        worker.join(timeout + 0.5)
        return outcome[0] if outcome else Problem(f"no answer within {timeout:.1f}s")

    def _request(self, url: str, timeout: float) -> Problem | None:
        """One HTTP request; a Problem phrased without the URL, or None when accepted."""
        import requests

        settings = self.settings
        headers = {"User-Agent": f"mail-monitor/{__version__}"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.reveal()}"
        verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        try:
            with requests.request(settings.method, url, headers=headers, timeout=timeout, verify=verify,
                                  allow_redirects=False, stream=True) as response:
                status = response.status_code
        except requests.exceptions.SSLError:
            return Problem("TLS error (certificate not trusted? see ca_file)")
        except requests.exceptions.Timeout:
            return Problem(f"timed out after {timeout:.1f}s")
        except requests.exceptions.ConnectionError:
            return Problem("cannot connect", retryable=True)
        except requests.exceptions.RequestException as exc:
            return Problem(f"request failed ({exc.__class__.__name__})")
        if 200 <= status < 300:
            return None
        return Problem(f"HTTP {status}", retryable=status >= 500 or status in (408, 429))


def summary(status: str, failing: list[str]) -> str:
    """The ``{message}`` of a push: the status word and what failed, names only (no errors)."""
    text = status if not failing else f"{status}: {', '.join(failing)} failed"
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 3] + "..."
