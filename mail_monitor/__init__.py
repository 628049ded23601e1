"""End-to-end monitoring for a self-hosted mail server: IMAP, SMTP, delivery and TLS."""

__version__ = "0.1.0"
