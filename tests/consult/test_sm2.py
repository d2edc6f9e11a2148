"""SM2 with SM3 (GB/T 32918.2, GM/T 0003.5): the published example, an independent verifier, tampering,
and a consultation signed with SM2 verifying through the API and the FHIR export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tianfu.consult import signing, sm2
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.fhir import verify_bundle_signatures
from tianfu.consult.tables import SignerKey
from tianfu.consult.timers import ConsultSettings, get_consult_settings
from tianfu.core.kernel import Kernel

pytestmark = pytest.mark.skipif(not sm2.available(), reason="gmssl (the sm2 extra) is not installed")

# GM/T 0003.5-2012 (= GB/T 32918.5-2017) Appendix A: a signature on the recommended curve, default ID.
KAT_D = int("3945208F 7B2144B1 3F36E38A C6D39F95 88939369 2860B51A 42FB81EF 4DF7C5B8".replace(" ", ""), 16)
KAT_X = "09F9DF31 1E5421A1 50DD7D16 1E4BC5C6 72179FAD 1833FC07 6BB08FF3 56F35020"
KAT_Y = "CCEA490C E26775A5 2DC6EA71 8CC1AA60 0AED05FB F35E084A 6632F607 2DA9AD13"
KAT_MESSAGE = b"message digest"
KAT_E = "F0B43E94 BA45ACCA ACE692ED 534382EB 17E6AB5A 19CE7B31 F4486FDF C0D28640"
KAT_K = int("59276E27 D506861A 16680F3A D9C02DCC EF3CC1FA 3CDBE4CE 6D54B80D EAC1BC21".replace(" ", ""), 16)
KAT_R = int("F5A03B06 48D2C463 0EEAC513 E1BB81A1 5944DA38 27D5B741 43AC7EAC EEE720B3".replace(" ", ""), 16)
KAT_S = int("B1B6AA29 DF212FD8 763182BC 0D421CA1 BB9038FD 1F7F42D4 840B69C4 85BBC1AA".replace(" ", ""), 16)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


KAT_PUBLIC = sm2._SPKI_PREFIX + _hex(KAT_X) + _hex(KAT_Y)


# ---- an independent verifier, written from GB/T 32918.2 §7 (affine coordinates, no gmssl) ----------

_Point = tuple[int, int] | None


def _add(p1: _Point, p2: _Point) -> _Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % sm2.P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + sm2.A) * pow(2 * y1, -1, sm2.P) % sm2.P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, sm2.P) % sm2.P
    x3 = (slope * slope - x1 - x2) % sm2.P
    return x3, (slope * (x1 - x3) - y1) % sm2.P


def _mul(k: int, point: _Point) -> _Point:
    result: _Point = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def reference_verify(
    x: int, y: int, message: bytes, r: int, s: int, user_id: bytes = b"1234567812345678"
) -> bool:
    if not (1 <= r < sm2.N and 1 <= s < sm2.N):
        return False
    entl = (len(user_id) * 8).to_bytes(2, "big")
    fields = b"".join(v.to_bytes(32, "big") for v in (sm2.A, sm2.B, sm2.GX, sm2.GY, x, y))
    z = sm2.sm3(entl + user_id + fields)
    e = int.from_bytes(sm2.sm3(z + message), "big")
    t = (r + s) % sm2.N
    if t == 0:
        return False
    point = _add(_mul(s, (sm2.GX, sm2.GY)), _mul(t, (x, y)))
    return point is not None and (e + point[0]) % sm2.N == r


# ---- the published example ----------------------------------------------------------------------


def test_sm3_of_abc_is_the_published_value() -> None:
    # GB/T 32905-2016 Appendix A, example 1.
    assert sm2.sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_published_example_key_digest_and_signature() -> None:
    signer = sm2.Sm2Signer(KAT_D)
    assert signer.public_key == KAT_PUBLIC  # d·G is the published public key
    e = sm2.message_digest(signer.public_key, KAT_MESSAGE)
    assert e == _hex(KAT_E)  # Z_A with the default ID, then SM3(Z_A ‖ M)
    assert signer.sign_digest(e, KAT_K) == (KAT_R, KAT_S)  # the published (r, s) for the published k
    der = encode_dss_signature(KAT_R, KAT_S)
    assert sm2.SM2_SM3.verify(KAT_PUBLIC, KAT_MESSAGE, der)
    assert reference_verify(
        int(KAT_X.replace(" ", ""), 16), int(KAT_Y.replace(" ", ""), 16), KAT_MESSAGE, KAT_R, KAT_S
    )
    assert not sm2.SM2_SM3.verify(KAT_PUBLIC, b"message digesT", der)
    assert not sm2.SM2_SM3.verify(KAT_PUBLIC, KAT_MESSAGE, encode_dss_signature(KAT_R, KAT_S ^ 1))


# ---- sign, verify, tamper -----------------------------------------------------------------------


def test_roundtrip_and_independent_verifier() -> None:
    signer = sm2.SM2_SM3.generate_signer()
    x, y = sm2._point(signer.public_key)
    for message in (b"", b"hello", "会诊意见".encode() * 100):
        der = signer.sign(message)
        r, s = decode_dss_signature(der)
        assert sm2.SM2_SM3.verify(signer.public_key, message, der)
        assert reference_verify(x, y, message, r, s)  # a second, independent implementation agrees
        assert not reference_verify(x, y, message + b"!", r, s)
    # A fresh k each time: two signatures of one message differ, both verify.
    assert signer.sign(b"same") != signer.sign(b"same")


def test_tampered_content_signature_or_key_fail() -> None:
    signer, other = sm2.SM2_SM3.generate_signer(), sm2.SM2_SM3.generate_signer()
    der = signer.sign(b"report")
    r, s = decode_dss_signature(der)
    assert not sm2.SM2_SM3.verify(signer.public_key, b"reporT", der)
    assert not sm2.SM2_SM3.verify(other.public_key, b"report", der)
    assert not sm2.SM2_SM3.verify(signer.public_key, b"report", encode_dss_signature(r, (s + 1) % sm2.N))
    assert not sm2.SM2_SM3.verify(signer.public_key, b"report", der[:-1])
    assert not sm2.SM2_SM3.verify(signer.public_key, b"report", der + b"\x00")  # one DER spelling only
    assert not sm2.SM2_SM3.verify(signer.public_key, b"report", encode_dss_signature(0, s))
    assert not sm2.SM2_SM3.verify(signer.public_key, b"report", encode_dss_signature(r, sm2.N))
    assert not sm2.SM2_SM3.verify(signer.public_key[:-1] + b"\x00", b"report", der)  # off the curve
    ecdsa = signing.ECDSA_P256_SHA256.generate_signer()
    assert not sm2.SM2_SM3.verify(ecdsa.public_key, b"report", der)  # not an SM2 key at all
    assert not signing.ECDSA_P256_SHA256.verify(signer.public_key, b"report", der)


def test_signed_versions_and_chain_with_sm2() -> None:
    signer = signing.SM2_SM3.generate_signer()
    at = datetime(2026, 11, 30, 8, tzinfo=UTC)
    v1 = signing.sign(
        {"opinion": "考虑心绞痛"}, document_id="d", signer=signer, signer_id="zhao", signed_at=at
    )
    assert (v1.signature.algorithm, v1.signature.hash_algorithm) == ("sm2-sm3", "sm3")
    assert v1.signature.content_hash == sm2.sm3(v1.canonical_content).hex()
    v2 = signing.amend(v1, {"opinion": "补充"}, reason="补充", signer=signer, signer_id="zhao", signed_at=at)
    trusted = {"zhao": signing.key_fingerprint(signer.public_key)}
    assert signing.verify_chain([v1, v2], trusted=trusted).valid
    forged = signing.SignedVersion.from_dict({**v1.to_dict(), "canonical_content": '{"opinion":"建议手术"}'})
    assert "content_changed" in signing.verify(forged, trusted_fingerprint=trusted["zhao"]).problems
    # An ECDSA record still verifies next to SM2 ones: each record names its algorithm.
    ecdsa = signing.ECDSA_P256_SHA256.generate_signer()
    v3 = signing.amend(v2, {"opinion": "再补充"}, reason="再补充", signer=ecdsa, signer_id="li", signed_at=at)
    both = {**trusted, "li": signing.key_fingerprint(ecdsa.public_key)}
    assert signing.verify_chain([v1, v2, v3], trusted=both).valid


def test_sealed_sm2_key_opens_only_with_its_pin() -> None:
    signer = signing.SM2_SM3.generate_signer()
    assert isinstance(signer, signing.SoftwareSigner)
    sealed = signing.seal_private_key(signer, "246810")
    assert signing.open_private_key(sealed, "246810").public_key == signer.public_key
    with pytest.raises(signing.WrongPin):
        signing.open_private_key(sealed, "246811")


def test_setting_chooses_sm2_and_refuses_it_without_gmssl(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConsultSettings().signature_algorithm == "ecdsa-p256-sha256"
    monkeypatch.setenv("TIANFU_CONSULT_SIGNATURE_ALGORITHM", "sm2-sm3")
    assert ConsultSettings().signature_algorithm == "sm2-sm3"
    monkeypatch.setattr(sm2, "available", lambda: False)
    with pytest.raises(ValueError, match="gmssl"):
        ConsultSettings()
    with pytest.raises(sm2.Sm2Unavailable):
        signing.algorithm_named("sm2-sm3")


# ---- a consultation signed with SM2, end to end ---------------------------------------------------


@pytest.fixture
def sm2_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TIANFU_CONSULT_SIGNATURE_ALGORITHM", "sm2-sm3")
    get_consult_settings.cache_clear()
    yield
    get_consult_settings.cache_clear()


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def test_opinion_chain_signed_with_sm2_verifies_via_api_and_fhir(
    client: TestClient, db: Session, demo: Demo, network: None, sm2_keys: None
) -> None:
    from tests.consult.test_fhir import FHIR, run_full_consultation

    cid, huang = run_full_consultation(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    opinion = client.get(f"/api/v1/consult/consultations/{cid}/opinion", headers=zhao).json()
    assert opinion["valid"], opinion["problems"]
    assert [v["algorithm"] for v in opinion["versions"]] == ["sm2-sm3", "sm2-sm3"]
    key = db.scalars(select(SignerKey).where(SignerKey.user_id == demo.user("consult.zhao").id)).one()
    assert key.algorithm == "sm2-sm3"
    trusted = {key.user_id: key.fingerprint}
    db.rollback()  # end the read before the server writes (SQLite)

    bundle = client.get(f"{FHIR}/Task/{cid}/$everything", headers=huang).json()
    provenances = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
    signatures = [p for p in provenances if p.get("signature")]
    assert {p["signature"][0]["sigFormat"] for p in signatures} == {"application/vnd.tianfu.sm2-sm3"}
    assert verify_bundle_signatures(bundle, trusted=trusted) == {p["id"]: [] for p in signatures}
