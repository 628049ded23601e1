"""Shared pieces of the deliverability tests: DKIM keys made on the spot and a probe message."""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    record: bytes  # the TXT record publishing the public key


def new_key(bits: int = 1024) -> SigningKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))


def message(from_addr: str = "monitor@example.org", body: str = "probe body\r\n") -> bytes:
    return (
        f"From: Mail Monitor <{from_addr}>\r\nTo: inbox@example.net\r\nSubject: [mail-monitor] probe abc\r\n"
        f"Message-ID: <abc@example.org>\r\nX-Mail-Monitor-Token: abc\r\n\r\n{body}"
    ).encode()


def sign(raw: bytes, key: SigningKey, selector: str = "mail", domain: str = "example.org") -> bytes:
    import dkim

    return bytes(dkim.sign(raw, selector.encode(), domain.encode(), key.private_pem)) + raw
