"""Password hashing and policy; TOTP codes."""

from __future__ import annotations

import contextlib
import time

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tianfu.core.identity import passwords, totp


def test_hash_is_argon2id_and_verifies() -> None:
    hashed = passwords.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "correct horse battery") == (True, None)
    assert passwords.verify_password(hashed, "wrong horse battery") == (False, None)


def test_unknown_user_costs_a_verification_but_never_matches() -> None:
    assert passwords.verify_password(None, "not-a-real-password-but-the-same-cost") == (False, None)


def test_outdated_parameters_are_rehashed_on_login() -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse battery")
    ok, upgraded = passwords.verify_password(weak, "correct horse battery")
    assert ok
    assert upgraded is not None
    assert upgraded != weak


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least"),
        ("password123", "too easy"),
        ("nurse.wang-2026", "too easy"),
        ("aaaaabbbbb", "more different"),
    ],
)
def test_policy_rejects_weak_passwords(password: str, reason: str) -> None:
    with pytest.raises(passwords.WeakPassword, match=reason):
        passwords.check_policy(password, username="nurse.wang")


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_policy_never_crashes(candidate: str) -> None:
    with contextlib.suppress(passwords.WeakPassword):
        passwords.check_policy(candidate, username="u")


def test_totp_code_accepted_once_and_with_one_step_of_drift() -> None:
    secret = totp.new_secret()
    now = time.time()
    code = pyotp.TOTP(secret).at(now)
    step = totp.matching_step(secret, code, last_step=0, at=now)
    assert step is not None
    assert totp.matching_step(secret, code, last_step=step, at=now) is None  # replay refused
    previous = pyotp.TOTP(secret).at(now - 30)
    assert totp.matching_step(secret, previous, last_step=0, at=now) is not None
    stale = pyotp.TOTP(secret).at(now - 120)
    assert totp.matching_step(secret, stale, last_step=0, at=now) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert totp.matching_step(totp.new_secret(), code, last_step=0) is None


def test_secret_box_round_trip_and_wrong_key() -> None:
    box = totp.SecretBox("k" * 48)
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        totp.SecretBox("other" * 10).open(sealed)


def test_provisioning_qr_is_an_inline_svg() -> None:
    svg = totp.qr_svg(totp.provisioning_uri(totp.new_secret(), "dr.zhang"))
    assert svg.startswith("<svg")
