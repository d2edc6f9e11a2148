"""SM2 signatures with SM3 (GB/T 32918.2-2016, GM/T 0003.2/0003.5; 商用密码) behind :mod:`signing`'s
protocols.

The elliptic-curve arithmetic is ``gmssl``'s (pure Python, optional: ``pip install 'tianfu[sm2]'``);
this module imports it only when an SM2 key is made or used, so the platform runs without it and ECDSA
stays the default. What this module does itself, not trusting ``gmssl`` for it:

* the **Z_A preprocessing** (GB/T 32918.2 §5.5): ``Z_A = SM3(ENTL_A ‖ ID_A ‖ a ‖ b ‖ x_G ‖ y_G ‖ x_A ‖ y_A)``
  with the default user ID ``1234567812345678`` (GM/T 0009), then ``e = SM3(Z_A ‖ M)``; SM3 comes from
  ``cryptography`` (OpenSSL), much faster than ``gmssl``'s;
* the **random k**, from :mod:`secrets` (``gmssl`` would draw it from :mod:`random`, which is predictable:
  a predictable k gives the private key away);
* the private key, drawn from :mod:`secrets` in ``[1, n-2]``; public keys are checked to lie on the curve;
* the **range checks** on r and s in ``[1, n-1]`` before verifying.

Encodings, fixed and used the same way by :meth:`Sm2Signer.sign` and :meth:`Sm2Sm3.verify`:

* public key: DER SubjectPublicKeyInfo, ``id-ecPublicKey`` with the named curve ``sm2p256v1``
  (1.2.156.10197.1.301) and the uncompressed point ``04 ‖ x ‖ y`` (GM/T 0009 §6, as OpenSSL writes it);
* signature: DER ``SEQUENCE { r INTEGER, s INTEGER }`` (GM/T 0009 §7.3 ``SM2Signature``), like ECDSA's;
* private key (only ever stored encrypted, see :func:`signing.seal_private_key`): the 32-byte big-endian d.
"""

from __future__ import annotations

import hmac
import importlib.util
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

__all__ = [
    "DEFAULT_USER_ID",
    "SM2_SM3",
    "Sm2Signer",
    "Sm2Sm3",
    "Sm2Unavailable",
    "available",
    "sm3",
    "z_a",
]

# The recommended 256-bit curve (GB/T 32918.5-2017 / GM/T 0003.5-2012).
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_USER_ID = b"1234567812345678"

# SEQUENCE { SEQUENCE { id-ecPublicKey, sm2p256v1 }, BIT STRING (04 ‖ x ‖ y) }: everything but the point.
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")


class Sm2Unavailable(RuntimeError):
    """SM2 was asked for but ``gmssl`` is not installed."""


def available() -> bool:
    """True when ``gmssl`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("gmssl") is not None


def _curve(private_hex: str = "", public_hex: str = "") -> Any:
    try:
        from gmssl import sm2 as gm  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - exercised only where gmssl is missing
        raise Sm2Unavailable(
            "SM2 signatures need the optional gmssl package: pip install 'tianfu[sm2]'"
        ) from None
    crypt = gm.CryptSM2(private_key=private_hex, public_key="")
    # Set after construction: CryptSM2 lstrip()s "04" characters off the key, which also eats a leading
    # 0 or 4 of x itself.
    crypt.public_key = public_hex
    return crypt


def _int32(value: int) -> bytes:
    return value.to_bytes(32, "big")


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _point(public_key: bytes) -> tuple[int, int]:
    """(x, y) of a DER SubjectPublicKeyInfo for sm2p256v1; ValueError when it is anything else."""
    if len(public_key) != len(_SPKI_PREFIX) + 64 or not public_key.startswith(_SPKI_PREFIX):
        raise ValueError("not an SM2 (sm2p256v1) SubjectPublicKeyInfo")
    x = int.from_bytes(public_key[-64:-32], "big")
    y = int.from_bytes(public_key[-32:], "big")
    if not _on_curve(x, y):
        raise ValueError("the point is not on the SM2 curve")
    return x, y


def _spki(x: int, y: int) -> bytes:
    return _SPKI_PREFIX + _int32(x) + _int32(y)


def z_a(public_key: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """``Z_A`` of GB/T 32918.2 §5.5 for the signer's public key and user ID."""
    x, y = _point(public_key)
    if len(user_id) * 8 > 0xFFFF:
        raise ValueError("the user ID is too long")
    entl = (len(user_id) * 8).to_bytes(2, "big")
    return sm3(entl + user_id + b"".join(_int32(v) for v in (A, B, GX, GY, x, y)))


def message_digest(public_key: bytes, data: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """``e = SM3(Z_A ‖ M)``: what the SM2 signature is computed over."""
    return sm3(z_a(public_key, user_id) + data)


class Sm2Signer:
    """A software SM2 key. Serialise it only encrypted (:func:`signing.seal_private_key`)."""

    def __init__(self, private_value: int, user_id: bytes = DEFAULT_USER_ID) -> None:
        if not 1 <= private_value <= N - 2:
            raise ValueError("an SM2 private key lies in [1, n-2]")
        self._d = private_value
        self._user_id = user_id
        public_hex = _curve()._kg(private_value, f"{GX:064x}{GY:064x}")
        self._public_key = _spki(int(public_hex[:64], 16), int(public_hex[64:], 16))

    @classmethod
    def generate(cls) -> Sm2Signer:
        return cls(secrets.randbelow(N - 2) + 1)

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Sm2Signer:
        if len(data) != 32:
            raise ValueError("an SM2 private key is 32 bytes")
        return cls(int.from_bytes(data, "big"))

    def private_bytes(self) -> bytes:
        """The raw private key: hand it only to :func:`signing.seal_private_key`."""
        return _int32(self._d)

    @property
    def algorithm(self) -> str:
        return Sm2Sm3.NAME

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, e: bytes, k: int) -> tuple[int, int] | None:
        """Steps A4-A6 of GB/T 32918.2 §6.1 with a given k; None when k must be drawn again."""
        crypt = _curve(f"{self._d:064x}", self._public_key[-64:].hex())
        signature = crypt.sign(e, f"{k:064x}")
        if signature is None:
            return None
        return int(signature[:64], 16), int(signature[64:], 16)

    def sign(self, data: bytes) -> bytes:
        e = message_digest(self._public_key, data, self._user_id)
        while True:
            rs = self.sign_digest(e, secrets.randbelow(N - 1) + 1)
            if rs is not None:
                return encode_dss_signature(*rs)

    def __repr__(self) -> str:  # never print key material
        return f"Sm2Signer(public_key={self._public_key[-64:-48].hex()}…)"


class Sm2Sm3:
    """SM2 signature with SM3 and the Z_A preprocessing (default ID); signatures DER-encoded (r, s)."""

    NAME = "sm2-sm3"

    def __init__(self, user_id: bytes = DEFAULT_USER_ID) -> None:
        self._user_id = user_id

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def hash_name(self) -> str:
        return "sm3"

    def generate_signer(self) -> Sm2Signer:
        return Sm2Signer.generate()

    def load_signer(self, private_bytes: bytes) -> Sm2Signer:
        return Sm2Signer.from_private_bytes(private_bytes)

    def digest(self, data: bytes) -> str:
        return sm3(data).hex()

    def verify_digest(self, public_key: bytes, e: bytes, r: int, s: int) -> bool:
        """Steps B3-B7 of GB/T 32918.2 §7.1 for a precomputed ``e``."""
        if not (1 <= r < N and 1 <= s < N) or (r + s) % N == 0:
            return False
        try:
            crypt = _curve(public_hex=public_key[-64:].hex())
            return bool(crypt.verify(f"{r:064x}{s:064x}", e))
        except (TypeError, ValueError):  # the point at infinity: gmssl has no value for it
            return False

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        try:
            e = message_digest(public_key, data, self._user_id)
            r, s = decode_dss_signature(signature)
        except ValueError:
            return False
        # Only the one DER spelling of (r, s) is accepted, so a signature has one byte form.
        if not hmac.compare_digest(encode_dss_signature(r, s), signature):
            return False
        return self.verify_digest(public_key, e, r, s)


SM2_SM3 = Sm2Sm3()
