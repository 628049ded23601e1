"""SASL XOAUTH2 (Google's and Microsoft's OAuth2 login for IMAP and SMTP), one shape for both."""

from __future__ import annotations

import base64
import binascii
import json

from mail_monitor.config import Secret


class XOAuth2:
    """The client side of XOAUTH2: the initial response, then an empty answer to any challenge.

    A server refusing the token sends a challenge holding a JSON error (``{"status":
    "invalid_token", ...}``) and waits for an empty line before its final NO / 535;
    answering it with the credentials again would only confuse the error. ``explain``
    turns that JSON into words for the message; the token is never part of it.
    """

    def __init__(self, username: str, token: Secret) -> None:
        self._response = f"user={username}\1auth=Bearer {token.reveal()}\1\1"
        self._sent = False
        self.error: str | None = None  # the server's JSON error status, when it gave one

    def __call__(self, challenge: bytes | None = None) -> str:
        if not self._sent:
            self._sent = True
            return self._response
        self.error = _error_status(challenge or b"")
        return ""

    def explain(self) -> str:
        return f" (OAuth2 status: {self.error})" if self.error else ""


def _error_status(challenge: bytes) -> str | None:
    """``status`` of a JSON error challenge, given raw (smtplib decodes) or base64 (imaplib does too)."""
    for candidate in (challenge, _b64decode(challenge)):
        try:
            data = json.loads(candidate)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("status"), str):
            return " ".join(data["status"].split())[:80] or None
    return None


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return b""
