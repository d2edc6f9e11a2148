"""Argon2id password hashing and the password policy."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile

MIN_LENGTH = 10
_COMMON = frozenset(
    {
        "password123",
        "1234567890",
        "123456789a",
        "qwertyuiop",
        "a123456789",
        "iloveyou12",
        "woaini1314",
        "1qaz2wsx3edc",
        "abcdefghij",
        "passw0rd12",
        "admin12345",
        "tianfu1234",
    }
)
# Verified against when the username is unknown, so that "no such user" takes as long as "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password-but-the-same-cost")


class WeakPassword(ValueError):
    pass


def check_policy(password: str, *, username: str = "") -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password must have at least {MIN_LENGTH} characters")
    if password.lower() in _COMMON or (username and username.lower() in password.lower()):
        raise WeakPassword("password is too easy to guess")
    if len(set(password)) < 5:
        raise WeakPassword("password needs more different characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> tuple[bool, str | None]:
    """(matches, new hash if the stored one should be upgraded to current parameters)."""
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if password_hash is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(password_hash) else None)
