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
    code: int | None = None  # ntfy's own error code (40001: e-mail not enabled), if it sent one


@dataclass(frozen=True)
class CardSettings:
    """What each notification carries besides the alert: buttons and an e-mail copy."""

    dashboard_url: str | None = None  # a "Dashboard" button; also opened on tap unless ``click`` is set
    runbook_url: str | None = None  # a "Runbook" button
    email: str | None = None  # ntfy mails a copy: reaches you when your own mail is down


SEQUENCE_ID_MAX = 64  # ntfy's limit for message and sequence ids (characters of [-_A-Za-z0-9])
EMAIL_REFUSED = (40001, 42902)  # e-mail not enabled on this server; e-mail quota used up


def sequence_id(alert: Alert, instance: str) -> str | None:
    """The incident's card: failure, updates, reminders and recovery replace one notification.

    Built from the incident's random id, which is stored with the alert, so a re-send
    after a crash lands on the same card and a new incident (also after a state reset)
    never lands on an old one. Alerts queued by an older version carry no incident id
    and get no sequence id: ntfy then gives them a card of their own.
    """
    if not alert.sequence_id:
        return None
    text = f"mail-monitor-{_slug(instance)[:32]}-{_slug(alert.sequence_id)}"
    return text[:SEQUENCE_ID_MAX]


def payload(alert: Alert, settings: NtfySettings, instance: str,
            card: CardSettings = CardSettings()) -> dict[str, Any]:
    """The JSON ntfy's publish API takes; fields an older server does not know it ignores."""
    body: dict[str, Any] = {
        "topic": settings.topic,
        "title": alert.title,
        "message": alert.message,
        "priority": alert.priority,
        "tags": alert.tags,
    }
    if alert.markdown:
        body["markdown"] = True
    sequence = sequence_id(alert, instance)
    if sequence is not None:
        body["sequence_id"] = sequence
    click = settings.click or card.dashboard_url
    if click:
        body["click"] = click
    actions = [{"action": "view", "label": label, "url": url}
               for label, url in (("Dashboard", card.dashboard_url), ("Runbook", card.runbook_url)) if url]
    if actions:
        body["actions"] = actions
    if card.email:
        body["email"] = card.email
    return body


def _slug(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in text)


class NtfyClient:
    def __init__(self, settings: NtfySettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"mail-monitor/{__version__}"
        if settings.token is not None:
            self.session.headers["Authorization"] = f"Bearer {settings.token.reveal()}"
        elif settings.username and settings.password is not None:
            self.session.auth = (settings.username, settings.password.reveal())
        # Passed with every request, not set on the session: requests lets
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's verify, but not a
        # request's. Proxies from the environment keep working (trust_env stays on).
        self.verify: str | bool = str(settings.ca_file) if settings.ca_file else True

    def publish(self, body: dict[str, Any], timeout: float) -> Delivery:
        try:
            response = self.session.post(self.settings.server + "/", json=body, timeout=timeout,
                                         verify=self.verify)
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
        text, code = _error(response)
        return Delivery(False, response.status_code, f"HTTP {response.status_code}: {text}", code)

    def close(self) -> None:
        self.session.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Caused by ", "reason="):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(text.split())[:200]


def _error(response: requests.Response) -> tuple[str, int | None]:
    """ntfy's error text and code (``{"code": 40001, "http": 400, "error": "..."}``)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        code = data.get("code")
        return str(data["error"])[:200], code if isinstance(code, int) else None
    return (response.reason or "").strip()[:200], None


def deliver(queue: list[Alert], settings: NtfySettings, instance: str, deadline: Deadline,
            sleep: Any = time.sleep, card: CardSettings = CardSettings()) -> list[Alert]:
    """Send queued alerts in order; return those still undelivered (order kept).

    Stops at the first alert that cannot be delivered, so a later alert never
    overtakes an earlier one (a recovery must not arrive before its failure).
    """
    client = NtfyClient(settings)
    try:
        for index, alert in enumerate(queue):
            delivery = _with_retries(client, payload(alert, settings, instance, card), alert, settings,
                                     deadline, sleep)
            if not delivery.ok:
                log.error("ntfy: alert %s (%s) not delivered: %s; kept for the next run",
                          alert.id, alert.kind, delivery.detail)
                return queue[index:]
            log.info("ntfy: delivered alert %s (%s)", alert.id, alert.kind)
        return []
    finally:
        client.close()


def _retryable(delivery: Delivery) -> bool:
    """Server errors, timeouts, 408 and 429 may pass on a later try; other 4xx answers will not."""
    return delivery.status is None or not 400 <= delivery.status < 500 or delivery.status in (408, 429)


def _with_retries(client: NtfyClient, body: dict[str, Any], alert: Alert, settings: NtfySettings,
                  deadline: Deadline, sleep: Any) -> Delivery:
    delivery = Delivery(False, None, "no time left before the run deadline")
    attempt = 0
    while attempt <= settings.retries:
        if deadline.remaining() <= 0.2:
            break
        alert.attempts += 1
        delivery = client.publish(body, timeout=min(settings.timeout, deadline.remaining()))
        alert.last_error = "" if delivery.ok else delivery.detail
        if not delivery.ok and "email" in body and delivery.code in EMAIL_REFUSED:
            # The e-mail copy is a fallback: a server that cannot mail must still buzz the phone.
            log.warning("ntfy: server refused the e-mail copy (%s); sending without it", delivery.detail)
            body = {k: v for k, v in body.items() if k != "email"}
            continue
        if delivery.ok or not _retryable(delivery):
            return delivery
        pause = min(2.0**attempt, 30.0)
        if deadline.remaining() <= pause + 0.5 or attempt == settings.retries:
            break
        sleep(pause)
        attempt += 1
    return delivery


def notify_test(settings: NtfySettings, instance: str, deadline: Deadline,
                card: CardSettings = CardSettings()) -> Delivery:
    alert = Alert(id=f"test-{int(time.time())}", kind="test", title=f"mail-monitor test from {instance}",
                  message="If you can read this, alerts from mail-monitor reach you.", priority=3,
                  tags=["white_check_mark"], created=time.time())
    client = NtfyClient(settings)
    try:
        return _with_retries(client, payload(alert, settings, instance, card), alert, settings, deadline,
                             time.sleep)
    finally:
        client.close()
