"""TLS contexts, the peer certificate of an open session, and readable error messages."""

from __future__ import annotations

import errno
import imaplib
import smtplib
import socket
import ssl
from pathlib import Path

from mail_monitor.deadline import DeadlineExceeded
from mail_monitor.probes.bounded import ServerMisbehaved
from mail_monitor.results import Certificate

_CONTEXTS: dict[Path | None, ssl.SSLContext] = {}


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context; with ``ca_file`` only that CA is trusted."""
    context = _CONTEXTS.get(ca_file)
    if context is None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _CONTEXTS[ca_file] = context
    return context


def peer_certificate(sock: object, endpoint: str) -> Certificate | None:
    """Expiry and names of the verified certificate of an open TLS socket, and the TLS version."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    info = sock.getpeercert()
    if not info:
        return None
    not_after = ssl.cert_time_to_seconds(str(info["notAfter"]))
    return Certificate(
        endpoint=endpoint,
        not_after=float(not_after),
        subject=_name(info.get("subject", ())),
        issuer=_name(info.get("issuer", ())),
        tls_version=sock.version() or "",
    )


def negotiated_version(sock: object) -> str | None:
    """The TLS version of an open session ("TLSv1.3"), None without TLS."""
    return sock.version() if isinstance(sock, ssl.SSLSocket) else None


# OpenSSL's reasons when the two sides share no protocol version (the server is older
# than the TLS 1.2 the monitor insists on).
# (WRONG_VERSION_NUMBER is not one: it is what TLS to a plain-text port gives.)
_VERSION_REASONS = frozenset({"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE",
                              "WRONG_SSL_VERSION"})


def is_tls_failure(exc: BaseException) -> bool:
    """The TLS handshake itself failed: a bad certificate or no common protocol version."""
    return isinstance(exc, ssl.SSLError)


def _name(rdns: object) -> str:
    parts = []
    for rdn in rdns or ():  # type: ignore[attr-defined]
        for key, value in rdn:
            if key in ("commonName", "organizationName"):
                parts.append(f"{'CN' if key == 'commonName' else 'O'}={value}")
    return ", ".join(parts)


def is_certificate_error(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError)


def describe_error(exc: BaseException, timeout: float | None = None) -> str | None:
    """One line for a user, from the exception a network step raised; None if it is not one."""
    if isinstance(exc, (DeadlineExceeded, ServerMisbehaved)):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        hint = ""
        if exc.verify_code in (18, 19, 20, 21):  # self-signed, or an issuer we do not know
            hint = " (issued by a CA that is not trusted; set ca_file for a private CA)"
        elif exc.verify_code == 10:
            hint = " (the server's certificate has expired)"
        elif exc.verify_code == 62 or "mismatch" in reason.lower():
            hint = " (the certificate is not valid for this host name)"
        return f"TLS certificate verification failed: {reason}{hint}"
    if isinstance(exc, ssl.SSLError):
        if exc.reason in _VERSION_REASONS:
            return (f"TLS error: the server offers no TLS version the monitor accepts "
                    f"(TLS 1.2 or newer; {exc.reason})")
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:.1f}s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running and listening on this port?)"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name: {exc.strerror}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"server does not support this: {exc}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        return f"recipient refused: {refused}"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"sender refused: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"server said {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"server closed the connection: {exc}" if str(exc) else "server closed the connection"
    if isinstance(exc, smtplib.SMTPException):
        return f"SMTP error: {exc}"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"IMAP connection lost: {exc}"
    if isinstance(exc, imaplib.IMAP4.error):
        return f"IMAP error: {exc}"
    if isinstance(exc, OSError):
        if exc.errno == errno.EHOSTUNREACH:
            return "host unreachable"
        if exc.errno == errno.ENETUNREACH:
            return "network unreachable"
        return f"{exc.strerror or exc.__class__.__name__}"
    return None


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())
