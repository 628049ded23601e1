"""Deliver alerts to an ntfy server: JSON publish to the server root, auth from files.

``requests`` is imported here only, and this module only when there is something to
send, so a healthy run never pays for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from mail_monitor import __version__
from mail_monitor.config import NtfySettings
from mail_monitor.deadline import Deadline
from mail_monitor.state import Alert

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What the ntfy server answered, phrased for the log and ``notify-test``."""

    ok: bool
    status: int | None
    detail: str


def payload(alert: Alert, settings: NtfySettings, instance: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "topic": settings.topic,
        "title": alert.title,
        "message": alert.message,
        "priority": alert.priority,
        "tags": alert.tags,
        # ntfy >= 2.16 replaces a notification with the same sequence id instead of adding
        # one, so the rare re-send after a crash (see docs/alerting.md) does not buzz twice.
        "sequence_id": f"mail-monitor-{_slug(instance)}-{alert.id}",
    }
    if settings.click:
        body["click"] = settings.click
    return body


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:40]


class NtfyClient:
    def __init__(self, settings: NtfySettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"mail-monitor/{__version__}"
        if settings.token is not None:
            self.session.headers["Authorization"] = f"Bearer {settings.token.reveal()}"
        elif settings.username and settings.password is not None:
            self.session.auth = (settings.username, settings.password.reveal())
        self.session.verify = str(settings.ca_file) if settings.ca_file else True

    def publish(self, body: dict[str, Any], timeout: float) -> Delivery:
        try:
            response = self.session.post(self.settings.server + "/", json=body, timeout=timeout)
        except requests.exceptions.SSLError as exc:
            return Delivery(False, None, f"TLS error: {_reason(exc)}")
        except requests.exceptions.Timeout:
            return Delivery(False, None, f"timed out after {timeout:.1f}s")
        except requests.exceptions.ConnectionError as exc:
            return Delivery(False, None, f"cannot connect: {_reason(exc)}")
        except requests.exceptions.RequestException as exc:
            return Delivery(False, None, f"request failed: {exc.__class__.__name__}")
        if 200 <= response.status_code < 300:
            return Delivery(True, response.status_code, "accepted")
        return Delivery(False, response.status_code, f"HTTP {response.status_code}: {_error_text(response)}")

    def close(self) -> None:
        self.session.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Caused by ", "reason="):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(text.split())[:200]


def _error_text(response: requests.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])[:200]
    except ValueError:
        pass
    return (response.reason or "").strip()[:200]


def deliver(queue: list[Alert], settings: NtfySettings, instance: str, deadline: Deadline,
            sleep: Any = time.sleep) -> list[Alert]:
    """Send queued alerts in order; return those still undelivered (order kept).

    Stops at the first alert that cannot be delivered, so a later alert never
    overtakes an earlier one (a recovery must not arrive before its failure).
    """
    client = NtfyClient(settings)
    try:
        for index, alert in enumerate(queue):
            delivery = _with_retries(client, alert, settings, instance, deadline, sleep)
            if not delivery.ok:
                log.error("ntfy: alert %s (%s) not delivered: %s; kept for the next run",
                          alert.id, alert.kind, delivery.detail)
                return queue[index:]
            log.info("ntfy: delivered alert %s (%s)", alert.id, alert.kind)
        return []
    finally:
        client.close()


def _with_retries(client: NtfyClient, alert: Alert, settings: NtfySettings, instance: str,
                  deadline: Deadline, sleep: Any) -> Delivery:
    body = payload(alert, settings, instance)
    delivery = Delivery(False, None, "no time left before the run deadline")
    for attempt in range(settings.retries + 1):
        if deadline.remaining() <= 0.2:
            break
        alert.attempts += 1
        delivery = client.publish(body, timeout=min(settings.timeout, deadline.remaining()))
        alert.last_error = "" if delivery.ok else delivery.detail
        if delivery.ok or (delivery.status is not None and 400 <= delivery.status < 500
                           and delivery.status not in (408, 429)):
            return delivery  # success, or a client error that retrying will not fix
        pause = min(2.0**attempt, 30.0)
        if deadline.remaining() <= pause + 0.5 or attempt == settings.retries:
            break
        sleep(pause)
    return delivery


def notify_test(settings: NtfySettings, instance: str, deadline: Deadline) -> Delivery:
    alert = Alert(id=f"test-{int(time.time())}", kind="test", title=f"mail-monitor test from {instance}",
                  message="If you can read this, alerts from mail-monitor reach you.", priority=3,
                  tags=["white_check_mark"], created=time.time())
    client = NtfyClient(settings)
    try:
        return _with_retries(client, alert, settings, instance, deadline, time.sleep)
    finally:
        client.close()
