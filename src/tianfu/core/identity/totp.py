"""TOTP second factor (RFC 6238): secrets encrypted at rest, codes checked once each."""

from __future__ import annotations

import base64
import hashlib
import time

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

ISSUER = "Tianfu 天府智医"


class SecretBox:
    """Encrypts TOTP secrets with a key derived from the platform secret key."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"tianfu-totp-v1:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("TOTP secret cannot be decrypted with this secret key") from exc


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    return str(segno.make(uri, error="m").svg_inline(scale=5, dark="#0b3954"))


def matching_step(secret: str, code: str, *, last_step: int, at: float | None = None) -> int | None:
    """The time step the code belongs to (allowing one step of clock drift), or None.

    A step at or before ``last_step`` is refused, so an observed code cannot be replayed.
    """
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if at is None else at
    current = int(now // totp.interval)
    for step in (current, current - 1, current + 1):
        if step > last_step and totp.generate_otp(step) == code:
            return step
    return None
