"""The negotiated TLS version: reported on the session, and a TLS 1.0-only server refused by name."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from pathlib import Path

import pytest
from mailstack import CertificateAuthority, MailStack

from mail_monitor.config import Endpoint, ImapEndpoint
from mail_monitor.deadline import Deadline
from mail_monitor.probes.imap import ImapSession
from mail_monitor.probes.smtp import SmtpSession
from mail_monitor.probes.tls import describe_error, is_certificate_error, is_tls_failure


def test_a_tls_1_0_only_server_is_refused_with_a_message_that_says_why(tmp_path: Path):
    authority = CertificateAuthority(tmp_path)
    cert, key = authority.issue("old")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point of this server
        server_context.minimum_version = server_context.maximum_version = ssl.TLSVersion.TLSv1
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        client, _ = listener.accept()
        try:
            server_context.wrap_socket(client, server_side=True).sendall(b"* OK old server\r\n")
        except (ssl.SSLError, OSError):
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    endpoint = ImapEndpoint("localhost", listener.getsockname()[1], "implicit", authority.ca_file)
    with pytest.raises(ssl.SSLError) as caught:
        ImapSession(endpoint, Deadline(10))
    listener.close()
    assert is_tls_failure(caught.value) and not is_certificate_error(caught.value)
    assert describe_error(caught.value).startswith(
        "TLS error: the server offers no TLS version the monitor accepts (TLS 1.2 or newer; "), \
        describe_error(caught.value)


@pytest.mark.mailstack
def test_the_sessions_report_the_negotiated_version(stack: MailStack):
    imap = ImapSession(ImapEndpoint(stack.host, stack.imaps_port, "implicit", stack.ca.ca_file), Deadline(30))
    smtp = SmtpSession(Endpoint(stack.host, stack.submission_port, "starttls", stack.ca.ca_file), Deadline(30),
                       "client.test")
    plain = SmtpSession(Endpoint(stack.host, stack.plain_port, "none"), Deadline(30), "client.test")
    try:
        assert imap.tls_version in ("TLSv1.2", "TLSv1.3")
        assert smtp.tls_version == imap.tls_version  # the same OpenSSL on both daemons
        assert plain.tls_version is None
        # The version the output reports comes with the certificate (below TLS 1.2 never connects).
        assert imap.certificate is not None and imap.certificate.tls_version == imap.tls_version
        assert smtp.certificate is not None and smtp.certificate.tls_version == smtp.tls_version
    finally:
        for session in (imap, smtp, plain):
            session.close()
