"""SMTP submission: connect, TLS, AUTH, and send the tagged test mail on the same session."""

from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage

from mail_monitor.config import Endpoint, Secret
from mail_monitor.deadline import Deadline
from mail_monitor.probes.bounded import BoundedSMTP, BoundedSMTP_SSL
from mail_monitor.probes.sasl import XOAuth2
from mail_monitor.probes.tls import client_context, negotiated_version, peer_certificate
from mail_monitor.results import Certificate
from mail_monitor.testmail import build_message as build_message  # where runner finds it


class SmtpSession:
    """One submission session, kept open from AUTH through the send."""

    def __init__(self, endpoint: Endpoint, deadline: Deadline, local_hostname: str) -> None:
        self.endpoint = endpoint
        self.deadline = deadline
        self.certificate: Certificate | None = None
        self.tls_version: str | None = None  # "TLSv1.3"; None without TLS
        timeout = deadline.timeout()
        context = client_context(endpoint.ca_file)
        client: smtplib.SMTP
        if endpoint.tls == "implicit":
            client = BoundedSMTP_SSL(endpoint.host, endpoint.port, local_hostname=local_hostname,
                                     timeout=timeout, context=context, deadline=deadline)
        else:
            client = BoundedSMTP(endpoint.host, endpoint.port, local_hostname=local_hostname,
                                 timeout=timeout, deadline=deadline)
        self.client = client
        try:
            self._refresh_timeout()
            client.ehlo()
            if endpoint.tls == "starttls":
                if not client.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        "server does not offer STARTTLS (set tls = \"implicit\" or \"none\")"
                    )
                client.starttls(context=context)
                client.ehlo()
            self.certificate = peer_certificate(client.sock, endpoint.label)
            self.tls_version = negotiated_version(client.sock)
        except BaseException:
            self.close()
            raise

    def _refresh_timeout(self) -> None:
        sock = self.client.sock
        if isinstance(sock, socket.socket):
            sock.settimeout(self.deadline.timeout())

    def login(self, username: str, password: Secret) -> None:
        self._refresh_timeout()
        if not self.client.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("server offers no AUTH on this port")
        self.client.login(username, password.reveal())

    def login_oauth2(self, username: str, token: Secret) -> None:
        """AUTH XOAUTH2 with the token as initial response (RFC 4954), as Gmail expects."""
        self._refresh_timeout()
        if "XOAUTH2" not in self.client.esmtp_features.get("auth", "").upper().split():
            raise smtplib.SMTPNotSupportedError("server does not offer AUTH XOAUTH2 on this port")
        mechanism = XOAuth2(username, token)
        try:
            self.client.auth("XOAUTH2", mechanism, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            reply = exc.smtp_error if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error).encode()
            raise smtplib.SMTPAuthenticationError(exc.smtp_code, reply + mechanism.explain().encode()) from None

    def send(self, message: EmailMessage, sender: str, recipient: str) -> float:
        """Submit the message; return the monotonic time the submission started."""
        self._refresh_timeout()
        started = time.monotonic()
        self.client.send_message(message, from_addr=sender, to_addrs=[recipient])
        return started

    def close(self) -> None:
        try:
            self.client.quit()
        except (smtplib.SMTPException, OSError):
            self.client.close()
