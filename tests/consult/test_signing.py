"""Signatures on opinion reports (SEC-07): canonical JSON, sign and verify, tampering, keys, amendments."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from tianfu.consult.signing import (
    ALGORITHMS,
    ECDSA_P256_SHA256,
    CanonicalisationError,
    EcdsaP256Signer,
    SignedVersion,
    Signer,
    amend,
    canonical_json,
    canonical_timestamp,
    content_hash,
    key_fingerprint,
    sign,
    verify,
    verify_chain,
)

BEIJING = timezone(timedelta(hours=8))
SIGNED_AT = datetime(2025, 3, 10, 14, 30, tzinfo=BEIJING)
SIGNER = ECDSA_P256_SHA256.generate_signer()
OTHER_SIGNER = ECDSA_P256_SHA256.generate_signer()
TRUSTED = key_fingerprint(SIGNER.public_key)
REPORT: dict[str, Any] = {
    "consultation_id": "con-1",
    "impression": "急性下壁心肌梗死可能",
    "recommendation": ["急诊PCI", "双联抗血小板"],
    "troponin_ng_l": Decimal("1520.0"),
    "examined_at": datetime(2025, 3, 10, 8, 0, tzinfo=BEIJING),
    "ai_suggestion": {"label": "AI suggestion (not the opinion)", "probability": 0.91},
}


def signed_report(content: dict[str, Any] | None = None) -> SignedVersion:
    return sign(
        content or REPORT, document_id="rep-1", signer=SIGNER, signer_id="dr-wang", signed_at=SIGNED_AT
    )


# ---- canonical serialisation ---------------------------------------------------------------------


def test_canonical_json_is_compact_sorted_utf8() -> None:
    text = canonical_json({"b": [1, {"d": None, "c": True}], "a": "心电图", "e": False})
    assert text == '{"a":"心电图","b":[1,{"c":true,"d":null}],"e":false}'.encode()


def test_key_order_follows_utf16_code_units_as_in_rfc_8785() -> None:
    # RFC 8785 §3.2.3's example: U+1F600 sorts before U+FB33 by UTF-16 code units.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    decoded = json.loads(canonical_json(dict.fromkeys(keys, 0)))
    assert list(decoded) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (1.0, "1"),
        (-0.0, "0"),
        (Decimal("0.000"), "0"),
        (Decimal("1.50"), "1.5"),
        (Decimal("15E-1"), "1.5"),
        (Decimal("1E+3"), "1000"),
        (0.1, "0.1"),
        (1e21, "1000000000000000000000"),
        (1e-7, "0.0000001"),
        (-2.5, "-2.5"),
        (10**30, "1" + "0" * 30),
        (True, "true"),
    ],
)
def test_numbers_are_normalised(value: Any, text: str) -> None:
    assert canonical_json(value) == text.encode()


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), Decimal("NaN"), Decimal("Infinity")]
)
def test_non_finite_numbers_are_refused(value: Any) -> None:
    with pytest.raises(CanonicalisationError, match="finite"):
        canonical_json(value)


def test_timestamps_have_one_spelling_per_instant() -> None:
    beijing = datetime(2025, 3, 10, 16, 0, tzinfo=BEIJING)
    utc = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
    assert canonical_json(beijing) == canonical_json(utc) == b'"2025-03-10T08:00:00Z"'
    assert canonical_timestamp(utc.replace(microsecond=120000)) == "2025-03-10T08:00:00.12Z"
    assert canonical_json(date(2025, 3, 10)) == b'"2025-03-10"'
    with pytest.raises(CanonicalisationError, match="time zone"):
        canonical_json({"at": datetime(2025, 3, 10, 8, 0)})  # noqa: DTZ001


def test_strings_escape_only_what_json_requires() -> None:
    assert canonical_json('a\nb\t\x1f"\\/é') == b'"a\\nb\\t\\u001f\\"\\\\/\xc3\xa9"'


def test_enums_and_tuples() -> None:
    class Colour(StrEnum):
        RED = "red"

    assert canonical_json({"c": Colour.RED, "t": (1, 2)}) == b'{"c":"red","t":[1,2]}'


@pytest.mark.parametrize("value", [{1: "a"}, {"a": {1, 2}}, object(), b"bytes", "\ud800"])
def test_what_cannot_be_canonical_is_refused(value: Any) -> None:
    with pytest.raises(CanonicalisationError):
        canonical_json(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


@settings(max_examples=100, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_canonical_form_is_stable_under_key_order(value: Any, rng: random.Random) -> None:
    assert canonical_json(_shuffled(value, rng)) == canonical_json(value)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_canonical_form_is_a_fixed_point_and_valid_json(value: Any) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text, parse_float=Decimal)) == text
    assert canonical_json(json.loads(text)) == text
    assert b"\n" not in text


# ---- sign and verify -----------------------------------------------------------------------------


def test_a_signed_report_verifies_and_carries_its_record() -> None:
    signed = signed_report()
    result = verify(signed, trusted_fingerprint=TRUSTED)
    assert result.valid
    assert result.problems == ()
    record = signed.signature
    assert record.algorithm == "ecdsa-p256-sha256"
    assert record.hash_algorithm == "sha-256"
    assert record.signer_id == result.signer_id == "dr-wang"
    assert record.signed_at == SIGNED_AT
    assert record.content_hash == content_hash(REPORT) == result.content_hash
    assert record.public_key == SIGNER.public_key
    assert record.public_key_fingerprint == TRUSTED
    assert (signed.version, signed.previous_hash, signed.amendment_reason) == (1, None, None)
    content = signed.content()
    assert content["troponin_ng_l"] == Decimal("1520")
    assert content["examined_at"] == "2025-03-10T00:00:00Z"


def test_the_same_report_built_differently_has_the_same_hash() -> None:
    rebuilt = dict(reversed(list(REPORT.items())))
    rebuilt["troponin_ng_l"] = 1520
    rebuilt["examined_at"] = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)
    assert content_hash(rebuilt) == content_hash(REPORT)
    assert verify(
        replace(signed_report(), canonical_content=canonical_json(rebuilt)), trusted_fingerprint=TRUSTED
    ).valid


def _tampered_content(signed: SignedVersion) -> SignedVersion:
    content = signed.content()
    content["recommendation"] = ["保守治疗"]
    return replace(signed, canonical_content=canonical_json(content))


def test_tampered_content_is_detected() -> None:
    signed = signed_report()
    assert verify(_tampered_content(signed), trusted_fingerprint=TRUSTED).problems == ("content_changed",)


def test_tampered_content_with_a_matching_hash_breaks_the_signature() -> None:
    forged = _tampered_content(signed_report())
    forged = replace(forged, signature=replace(forged.signature, content_hash=content_hash(forged.content())))
    assert verify(forged, trusted_fingerprint=TRUSTED).problems == ("signature_invalid",)


def test_one_flipped_byte_anywhere_in_the_content_is_detected() -> None:
    signed = signed_report({"impression": "normal", "n": 1})
    for index in range(len(signed.canonical_content)):
        data = bytearray(signed.canonical_content)
        data[index] ^= 0x01
        assert not verify(replace(signed, canonical_content=bytes(data)), trusted_fingerprint=TRUSTED).valid


@pytest.mark.parametrize(
    "field_change",
    [
        {"signer_id": "dr-chen"},
        {"signed_at": SIGNED_AT + timedelta(seconds=1)},
        {"signature": b"\x00" * 70},
    ],
)
def test_tampered_record_fields_break_the_signature(field_change: dict[str, Any]) -> None:
    signed = signed_report()
    forged = replace(signed, signature=replace(signed.signature, **field_change))
    assert verify(forged, trusted_fingerprint=TRUSTED).problems == ("signature_invalid",)


def test_flipped_signature_bit_and_changed_envelope_fields_are_detected() -> None:
    signed = signed_report()
    sig = bytearray(signed.signature.signature)
    sig[-1] ^= 0x01
    assert not verify(
        replace(signed, signature=replace(signed.signature, signature=bytes(sig))),
        trusted_fingerprint=TRUSTED,
    ).valid
    assert (
        "signature_invalid"
        in verify(replace(signed, document_id="rep-2"), trusted_fingerprint=TRUSTED).problems
    )


def test_the_wrong_key_is_detected() -> None:
    signed = signed_report()
    other = key_fingerprint(OTHER_SIGNER.public_key)
    assert verify(signed, trusted_fingerprint=other).problems == ("untrusted_key",)
    # Someone re-signs altered content with a key of his own and claims the consultant signed it.
    forged = sign(
        {**REPORT, "recommendation": ["出院"]},
        document_id="rep-1",
        signer=OTHER_SIGNER,
        signer_id="dr-wang",
        signed_at=SIGNED_AT,
    )
    assert verify(forged, trusted_fingerprint=TRUSTED).problems == ("untrusted_key",)


def test_a_swapped_public_key_is_detected() -> None:
    signed = signed_report()
    swapped = replace(signed, signature=replace(signed.signature, public_key=OTHER_SIGNER.public_key))
    assert verify(swapped, trusted_fingerprint=TRUSTED).problems == (
        "key_mismatch",
        "untrusted_key",
        "signature_invalid",
    )
    garbage = replace(signed, signature=replace(signed.signature, public_key=b"not a key"))
    assert "signature_invalid" in verify(garbage, trusted_fingerprint=TRUSTED).problems


def test_unknown_algorithm_and_non_canonical_content_are_reported() -> None:
    signed = signed_report()
    unknown = replace(signed, signature=replace(signed.signature, algorithm="rsa-pss-sha256"))
    assert verify(unknown, trusted_fingerprint=TRUSTED).problems == ("unknown_algorithm", "signature_invalid")
    spaced = signed.canonical_content.replace(b",", b", ")
    loose = replace(
        signed,
        canonical_content=spaced,
        signature=replace(signed.signature, content_hash=ECDSA_P256_SHA256.digest(spaced)),
    )
    assert "content_not_canonical" in verify(loose, trusted_fingerprint=TRUSTED).problems
    broken = replace(signed, canonical_content=b"{not json")
    assert "content_not_canonical" in verify(broken, trusted_fingerprint=TRUSTED).problems


def test_storage_round_trip() -> None:
    signed = signed_report()
    stored = json.loads(json.dumps(signed.to_dict()))
    restored = SignedVersion.from_dict(stored)
    assert restored == replace(
        signed, signature=replace(signed.signature, signed_at=restored.signature.signed_at)
    )
    assert restored.signature.signed_at == SIGNED_AT
    assert verify(restored, trusted_fingerprint=TRUSTED).valid
    assert restored.version_hash == signed.version_hash


def test_sign_refuses_misuse() -> None:
    with pytest.raises(CanonicalisationError, match="time zone"):
        sign(REPORT, document_id="rep-1", signer=SIGNER, signer_id="dr-wang", signed_at=datetime(2025, 3, 10))  # noqa: DTZ001
    with pytest.raises(ValueError, match="required"):
        sign(REPORT, document_id=" ", signer=SIGNER, signer_id="dr-wang", signed_at=SIGNED_AT)


class _ForeignSigner:
    algorithm = "rsa-pss-sha256"
    public_key = b""

    def sign(self, data: bytes) -> bytes:
        return b""


def test_an_unregistered_algorithm_cannot_sign() -> None:
    assert isinstance(_ForeignSigner(), Signer)
    assert "rsa-pss-sha256" not in ALGORITHMS
    with pytest.raises(ValueError, match="unknown signature algorithm"):
        sign(REPORT, document_id="rep-1", signer=_ForeignSigner(), signer_id="dr-wang", signed_at=SIGNED_AT)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_any_report_signs_and_verifies(content: dict[str, Any]) -> None:
    signed = sign(content, document_id="rep-x", signer=SIGNER, signer_id="dr-wang", signed_at=SIGNED_AT)
    assert verify(signed, trusted_fingerprint=TRUSTED).valid


# ---- keys ----------------------------------------------------------------------------------------


def test_keys_export_only_encrypted_and_reload() -> None:
    pem = SIGNER.private_key_pem(b"correct horse")
    assert b"ENCRYPTED" in pem
    reloaded = EcdsaP256Signer.from_pem(pem, b"correct horse")
    assert reloaded.public_key == SIGNER.public_key
    signed = sign(REPORT, document_id="rep-1", signer=reloaded, signer_id="dr-wang", signed_at=SIGNED_AT)
    assert verify(signed, trusted_fingerprint=TRUSTED).valid
    with pytest.raises(ValueError, match="password"):
        SIGNER.private_key_pem(b"")
    # Usually "Incorrect password"; about 1 in 300 keys decrypt to bytes that are not a key at all.
    with pytest.raises(ValueError, match=r"Incorrect password|Could not deserialize"):
        EcdsaP256Signer.from_pem(pem, b"wrong")
    assert "PRIVATE" not in repr(SIGNER)
    assert TRUSTED[:16] in repr(SIGNER)


def test_only_p256_keys() -> None:
    with pytest.raises(ValueError, match="P-256"):
        EcdsaP256Signer(ec.generate_private_key(ec.SECP384R1()))


def test_each_key_is_new() -> None:
    assert SIGNER.public_key != OTHER_SIGNER.public_key
    assert isinstance(SIGNER, Signer)


# ---- amendments ----------------------------------------------------------------------------------


def _chain() -> list[SignedVersion]:
    first = signed_report()
    second = amend(
        first,
        {**REPORT, "recommendation": ["急诊PCI", "术后心脏康复"]},
        reason="补充康复建议",
        signer=SIGNER,
        signer_id="dr-wang",
        signed_at=SIGNED_AT + timedelta(hours=1),
    )
    third = amend(
        second,
        {**REPORT, "recommendation": ["急诊PCI"]},
        reason="上级医师复核",
        signer=OTHER_SIGNER,
        signer_id="dr-chen",
        signed_at=SIGNED_AT + timedelta(hours=2),
    )
    return [first, second, third]


TRUSTED_KEYS = {"dr-wang": TRUSTED, "dr-chen": key_fingerprint(OTHER_SIGNER.public_key)}


def test_amendments_form_a_verified_chain() -> None:
    first, second, third = _chain()
    assert (second.version, second.previous_hash, second.amendment_reason) == (
        2,
        first.version_hash,
        "补充康复建议",
    )
    assert third.previous_hash == second.version_hash
    assert verify(first, trusted_fingerprint=TRUSTED).valid  # amending left version 1 as it was
    result = verify_chain([first, second, third], trusted=TRUSTED_KEYS)
    assert result.valid, result.problems
    assert [v.signer_id for v in result.versions] == ["dr-wang", "dr-wang", "dr-chen"]


def test_amendment_misuse_is_refused() -> None:
    first = signed_report()
    with pytest.raises(ValueError, match="reason"):
        amend(first, REPORT, reason=" ", signer=SIGNER, signer_id="dr-wang", signed_at=SIGNED_AT)
    with pytest.raises(ValueError, match="before"):
        amend(
            first, REPORT, reason="x", signer=SIGNER, signer_id="dr-wang", signed_at=SIGNED_AT - timedelta(1)
        )


def test_a_dropped_version_breaks_the_chain() -> None:
    first, _, third = _chain()
    problems = verify_chain([first, third], trusted=TRUSTED_KEYS).problems
    assert "v2: out_of_sequence" in problems
    assert "v2: broken_link" in problems


def test_reordered_versions_break_the_chain() -> None:
    first, second, third = _chain()
    assert not verify_chain([second, first, third], trusted=TRUSTED_KEYS).valid


def test_a_rewritten_earlier_version_breaks_the_link() -> None:
    _, second, third = _chain()
    # The legitimate signer silently re-signs version 1 with other content: valid alone, but v2 no longer
    # points at it.
    rewritten = signed_report({**REPORT, "impression": "正常"})
    assert verify(rewritten, trusted_fingerprint=TRUSTED).valid
    assert verify_chain([rewritten, second, third], trusted=TRUSTED_KEYS).problems == ("v2: broken_link",)


def test_tampered_content_in_the_chain_is_located() -> None:
    first, second, third = _chain()
    problems = verify_chain([first, _tampered_content(second), third], trusted=TRUSTED_KEYS).problems
    assert problems == ("v2: content_changed",)


def test_chain_checks_signers_documents_and_links() -> None:
    first, second, third = _chain()
    assert verify_chain([first, second, third], trusted={"dr-wang": TRUSTED}).problems == (
        "v3: unknown_signer",
    )
    assert verify_chain([], trusted=TRUSTED_KEYS).problems == ("chain: empty",)
    other_doc = replace(second, document_id="rep-9")
    assert "v2: other_document" in verify_chain([first, other_doc], trusted=TRUSTED_KEYS).problems
    no_link = replace(second, previous_hash=None)
    assert "v2: bad_version_link" in verify_chain([first, no_link], trusted=TRUSTED_KEYS).problems
    assert (
        "bad_version_link"
        in verify(replace(first, amendment_reason="x"), trusted_fingerprint=TRUSTED).problems
    )


def test_keys_of_other_kinds_are_refused_without_exceptions_on_verify() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    signed = signed_report()
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert not ECDSA_P256_SHA256.verify(p384, signed.envelope(), signed.signature.signature)
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ValueError, match="elliptic-curve"):
        EcdsaP256Signer.from_pem(rsa_pem, b"pw")


def test_a_record_with_a_naive_signing_time_fails_verification_instead_of_raising() -> None:
    signed = signed_report()
    naive = replace(signed, signature=replace(signed.signature, signed_at=datetime(2025, 3, 10)))  # noqa: DTZ001
    assert verify(naive, trusted_fingerprint=TRUSTED).problems == ("signature_invalid",)
