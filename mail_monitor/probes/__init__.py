"""Network probes. They speak IMAP, SMTP and TLS and know nothing of state, alerts or files."""
