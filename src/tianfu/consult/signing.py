"""Reliable electronic signatures on consultation opinion reports (SEC-07, TC-07; 电子签名法 art. 13).

What is signed: the report's **canonical serialisation** (:func:`canonical_json`), so the same report
always gives the same bytes whatever the key order, time zone or number spelling it was built with.
The signature covers an *envelope* that binds the content hash to the document id, version, previous
version's hash, signer, signing time and public-key fingerprint: changing any of them, the content or
the signature bytes makes :func:`verify` fail.

Amendments: a signed version is never edited. :func:`amend` makes version n+1 whose envelope carries
the hash of version n (:attr:`SignedVersion.version_hash`), so the versions form an immutable chain
that :func:`verify_chain` checks end to end (a dropped, reordered or rewritten version breaks it).

Algorithms sit behind one small interface, :class:`SignatureAlgorithm` (key generation, content hash,
verification) plus :class:`Signer` (holds the signature-creation data and signs). Two are
registered in :data:`ALGORITHMS`: ECDSA P-256 with SHA-256 from ``cryptography`` (``ecdsa-p256-sha256``),
and **SM2 with SM3** (``sm2-sm3``, 商用密码, what a licensed Chinese CA issues; ``consult-and-platform.md``
§5.3) from :mod:`tianfu.consult.sm2` when the optional ``gmssl`` package is installed. Records name their
algorithm, so old ECDSA signatures keep verifying after new keys switch to SM2. A :class:`Signer` may
equally wrap a USB key or an HSM: only ``sign`` and ``public_key`` are needed, the private key never
has to leave it.

Software keys are stored only sealed under a key derived from the signer's **signing PIN**
(:func:`seal_private_key`: scrypt, random salt, AES-256-GCM bound to the public key), so the server
cannot sign without the signer (电子签名法 art. 13).

Pure: no I/O, no clock (every time is passed in), no database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tianfu.consult import sm2

__all__ = [
    "ALGORITHMS",
    "ECDSA_P256_SHA256",
    "SM2_SM3",
    "CanonicalisationError",
    "ChainVerification",
    "EcdsaP256Sha256",
    "EcdsaP256Signer",
    "SignatureAlgorithm",
    "SignatureRecord",
    "SignedVersion",
    "Signer",
    "SoftwareSigner",
    "Verification",
    "WrongPin",
    "algorithm_named",
    "amend",
    "canonical_json",
    "canonical_timestamp",
    "content_hash",
    "key_fingerprint",
    "open_private_key",
    "seal_private_key",
    "sign",
    "verify",
    "verify_chain",
]

ENVELOPE_FORMAT = "tianfu-signed-document/1"


# ---- canonical serialisation ---------------------------------------------------------------------


class CanonicalisationError(ValueError):
    """The value cannot be serialised canonically (a naive time, NaN, a non-string key, an object)."""


def canonical_timestamp(moment: datetime) -> str:
    """UTC, ``Z`` suffix, fraction only when non-zero and without trailing zeros.

    One instant has exactly one spelling, so 16:00+08:00 and 08:00Z sign the same.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CanonicalisationError(f"timestamp without a time zone: {moment.isoformat()}")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _canonical_number(value: int | float | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalisationError(f"not a finite number: {value!r}")
        value = Decimal(repr(value))  # repr is the shortest spelling that reads back to the same float
    if not value.is_finite():
        raise CanonicalisationError(f"not a finite number: {value!r}")
    if value.is_zero():
        return "0"  # also -0 and 0.000
    normal = value.normalize()
    # Plain positional notation: 1.50, 1.5 and 15E-1 all become "1.5"; 1E+3 becomes "1000".
    return format(normal, "f")


def _utf16_order(key: str) -> bytes:
    # RFC 8785 (JCS) sorts member names by their UTF-16 code units; this differs from code-point order
    # only for characters outside the Basic Multilingual Plane.
    return key.encode("utf-16-be")


def _encode(value: Any, out: list[str]) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Enum):
        _encode(value.value, out)
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int | float | Decimal):
        out.append(_canonical_number(value))
    elif isinstance(value, datetime):
        out.append(json.dumps(canonical_timestamp(value)))
    elif isinstance(value, date):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalisationError(f"object keys must be strings, got {type(key).__name__}")
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_order)):
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalisationError(f"cannot serialise a {type(value).__name__} canonically")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, UTF-8, no insignificant whitespace, normalised numbers and times.

    Follows RFC 8785 (JCS) for key order and string escaping. Numbers: integers as digits; floats and
    ``Decimal`` in plain positional notation without trailing zeros (``1.0`` → ``1``, ``0.10`` →
    ``0.1``); NaN and infinities are refused. ``datetime`` must carry a time zone and is written in UTC
    (:func:`canonical_timestamp`); ``date`` as ``YYYY-MM-DD``; enums as their value; tuples as arrays.
    Strings are not Unicode-normalised: the signer signs exactly the text shown.
    """
    out: list[str] = []
    _encode(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate has no UTF-8 form
        raise CanonicalisationError(f"text that is not valid Unicode: {error.reason}") from None


# ---- the algorithm interface ---------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """Holds one signer's signature-creation data, which only that signer controls (电子签名法 art. 13).

    A software key, a USB key or an HSM: only ``sign`` and ``public_key`` are needed.
    """

    @property
    def algorithm(self) -> str: ...

    @property
    def public_key(self) -> bytes:
        """DER SubjectPublicKeyInfo."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class SignatureAlgorithm(Protocol):
    """One signature scheme. SM2/SM3 plugs in here (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def hash_name(self) -> str: ...

    def generate_signer(self) -> Signer: ...

    def digest(self, data: bytes) -> str:
        """Hex digest of ``data`` with the scheme's hash (SHA-256 here, SM3 for SM2)."""
        ...

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is valid over ``data``; False (never an exception) otherwise."""
        ...

    def load_signer(self, private_bytes: bytes) -> SoftwareSigner:
        """A software signer from what :meth:`SoftwareSigner.private_bytes` gave."""
        ...


@runtime_checkable
class SoftwareSigner(Signer, Protocol):
    """A signer whose key lives in software: it can be exported, and is only ever stored sealed."""

    def private_bytes(self) -> bytes: ...


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: what a key registry stores per signer."""
    return hashlib.sha256(public_key).hexdigest()


class EcdsaP256Signer:
    """A software ECDSA P-256 key. Serialise it only encrypted (:meth:`private_key_pem`)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError(f"expected a P-256 key, got {private_key.curve.name}")
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def algorithm(self) -> str:
        return EcdsaP256Sha256.NAME

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    def private_bytes(self) -> bytes:
        """Unencrypted PKCS#8 DER: hand it only to :func:`seal_private_key`."""
        return self._private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def private_key_pem(self, password: bytes) -> bytes:
        """PKCS#8 PEM encrypted with ``password``: the key never leaves in clear."""
        if not password:
            raise ValueError("a password is required to export a signing key")
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes) -> EcdsaP256Signer:
        key = serialization.load_pem_private_key(pem, password=password)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an elliptic-curve private key")
        return cls(key)

    def __repr__(self) -> str:  # never print key material
        return f"EcdsaP256Signer(fingerprint={key_fingerprint(self._public_key)[:16]}…)"


class EcdsaP256Sha256:
    """ECDSA over NIST P-256 with SHA-256; signatures DER-encoded (r, s)."""

    NAME = "ecdsa-p256-sha256"

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def hash_name(self) -> str:
        return "sha-256"

    def generate_signer(self) -> EcdsaP256Signer:
        return EcdsaP256Signer(ec.generate_private_key(ec.SECP256R1()))

    def digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def load_signer(self, private_bytes: bytes) -> EcdsaP256Signer:
        key = serialization.load_der_private_key(private_bytes, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an elliptic-curve private key")
        return EcdsaP256Signer(key)

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        try:
            key = serialization.load_der_public_key(public_key)
        except (ValueError, UnsupportedAlgorithm):  # not a key, or one on a curve OpenSSL lacks (SM2)
            return False
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            return False
        try:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


ECDSA_P256_SHA256 = EcdsaP256Sha256()
SM2_SM3: SignatureAlgorithm = sm2.SM2_SM3

# Verification looks the algorithm up by the name the record carries. SM2 is there only where gmssl is
# installed; elsewhere an SM2 record reports ``unknown_algorithm`` rather than a false "invalid".
ALGORITHMS: Mapping[str, SignatureAlgorithm] = {
    ECDSA_P256_SHA256.name: ECDSA_P256_SHA256,
    **({SM2_SM3.name: SM2_SM3} if sm2.available() else {}),
}


def algorithm_named(name: str) -> SignatureAlgorithm:
    """The registered algorithm ``name``; ValueError naming what is missing otherwise."""
    if name == SM2_SM3.name and not sm2.available():
        raise sm2.Sm2Unavailable("SM2 signatures need the optional gmssl package: pip install 'tianfu[sm2]'")
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown signature algorithm {name!r}") from None


# ---- PIN-protected software keys -----------------------------------------------------------------


class WrongPin(ValueError):
    """The PIN does not open the sealed key (or the sealed key was altered)."""


SEALED_KEY_FORMAT = "tianfu-pin-sealed-key/1"
# scrypt cost: about 32 MiB and a tenth of a second per try; stored with each key, so it can be raised.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


def _pin_key(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(pin.encode("utf-8"))


def _sealed_aad(algorithm: str, public_key: bytes) -> bytes:
    return canonical_json(
        {"format": SEALED_KEY_FORMAT, "algorithm": algorithm, "fingerprint": key_fingerprint(public_key)}
    )


def seal_private_key(signer: SoftwareSigner, pin: str) -> dict[str, Any]:
    """The signer's private key encrypted under a key derived from ``pin`` (scrypt, random salt).

    AES-256-GCM with the algorithm and public-key fingerprint as associated data, so a sealed key cannot
    be swapped under another key's record. JSON-ready; the scrypt parameters travel with it.
    """
    if not pin:
        raise ValueError("a PIN is required to seal a signing key")
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _pin_key(pin, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(
        nonce, signer.private_bytes(), _sealed_aad(signer.algorithm, signer.public_key)
    )

    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    return {
        "format": SEALED_KEY_FORMAT,
        "algorithm": signer.algorithm,
        "public_key": b64(signer.public_key),
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64(salt)},
        "cipher": "aes-256-gcm",
        "nonce": b64(nonce),
        "ciphertext": b64(ciphertext),
    }


def open_private_key(sealed: Mapping[str, Any], pin: str) -> SoftwareSigner:
    """The signer sealed by :func:`seal_private_key`; :class:`WrongPin` when ``pin`` does not open it."""
    if sealed.get("format") != SEALED_KEY_FORMAT or sealed.get("cipher") != "aes-256-gcm":
        raise ValueError("not a PIN-sealed signing key")
    kdf = sealed["kdf"]
    if kdf.get("name") != "scrypt":
        raise ValueError(f"unknown key-derivation function {kdf.get('name')!r}")
    algorithm = algorithm_named(sealed["algorithm"])
    public_key = base64.b64decode(sealed["public_key"], validate=True)
    key = _pin_key(pin, base64.b64decode(kdf["salt"], validate=True), kdf["n"], kdf["r"], kdf["p"])
    try:
        private = AESGCM(key).decrypt(
            base64.b64decode(sealed["nonce"], validate=True),
            base64.b64decode(sealed["ciphertext"], validate=True),
            _sealed_aad(algorithm.name, public_key),
        )
    except InvalidTag:
        raise WrongPin("the signing PIN is wrong") from None
    signer = algorithm.load_signer(private)
    if signer.public_key != public_key:
        raise ValueError("the sealed key does not match its public key")
    return signer


def content_hash(content: Mapping[str, Any], algorithm: SignatureAlgorithm = ECDSA_P256_SHA256) -> str:
    """The hash of a report's canonical serialisation, as a signature record carries it."""
    return algorithm.digest(canonical_json(content))


# ---- signed versions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureRecord:
    """Who signed what, when, with which key (FHIR ``Provenance.signature`` is built from it)."""

    algorithm: str
    hash_algorithm: str
    signer_id: str
    signed_at: datetime
    content_hash: str  # hex digest of the canonical content
    public_key: bytes  # DER SubjectPublicKeyInfo
    public_key_fingerprint: str
    signature: bytes  # over the canonical envelope (SignedVersion.envelope)


@dataclass(frozen=True)
class SignedVersion:
    """One immutable, signed version of a document. Content is kept as its canonical bytes."""

    document_id: str
    version: int  # 1, 2, … ; version n > 1 amends version n - 1
    canonical_content: bytes
    previous_hash: str | None  # version_hash of version n - 1; None for version 1
    amendment_reason: str | None  # why version n > 1 replaces its predecessor
    signature: SignatureRecord

    def content(self) -> Any:
        """The signed report as JSON values; times are canonical strings, fractions ``Decimal`` (exact)."""
        return json.loads(self.canonical_content, parse_float=Decimal)

    def envelope(self) -> bytes:
        """The canonical bytes the signature is computed over: everything except the signature."""
        record = self.signature
        return canonical_json(
            {
                "format": ENVELOPE_FORMAT,
                "document_id": self.document_id,
                "version": self.version,
                "previous_hash": self.previous_hash,
                "amendment_reason": self.amendment_reason,
                "content_hash": record.content_hash,
                "hash_algorithm": record.hash_algorithm,
                "algorithm": record.algorithm,
                "signer_id": record.signer_id,
                "signed_at": record.signed_at,
                "public_key_fingerprint": record.public_key_fingerprint,
            }
        )

    @property
    def version_hash(self) -> str:
        """SHA-256 over envelope and signature: what the next version references."""
        return hashlib.sha256(self.envelope() + b"\x00" + self.signature.signature).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for storage (bytes in base64, times canonical)."""
        record = self.signature
        return {
            "document_id": self.document_id,
            "version": self.version,
            "canonical_content": self.canonical_content.decode("utf-8"),
            "previous_hash": self.previous_hash,
            "amendment_reason": self.amendment_reason,
            "signature": {
                "algorithm": record.algorithm,
                "hash_algorithm": record.hash_algorithm,
                "signer_id": record.signer_id,
                "signed_at": canonical_timestamp(record.signed_at),
                "content_hash": record.content_hash,
                "public_key": base64.b64encode(record.public_key).decode("ascii"),
                "public_key_fingerprint": record.public_key_fingerprint,
                "signature": base64.b64encode(record.signature).decode("ascii"),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedVersion:
        record = data["signature"]
        return cls(
            document_id=data["document_id"],
            version=data["version"],
            canonical_content=data["canonical_content"].encode("utf-8"),
            previous_hash=data["previous_hash"],
            amendment_reason=data["amendment_reason"],
            signature=SignatureRecord(
                algorithm=record["algorithm"],
                hash_algorithm=record["hash_algorithm"],
                signer_id=record["signer_id"],
                signed_at=datetime.fromisoformat(record["signed_at"]),
                content_hash=record["content_hash"],
                public_key=base64.b64decode(record["public_key"], validate=True),
                public_key_fingerprint=record["public_key_fingerprint"],
                signature=base64.b64decode(record["signature"], validate=True),
            ),
        )


def _algorithm_for(signer: Signer) -> SignatureAlgorithm:
    return algorithm_named(signer.algorithm)


def _sign_version(
    *,
    document_id: str,
    version: int,
    content: Mapping[str, Any],
    previous_hash: str | None,
    amendment_reason: str | None,
    signer: Signer,
    signer_id: str,
    signed_at: datetime,
) -> SignedVersion:
    if not document_id.strip() or not signer_id.strip():
        raise ValueError("document_id and signer_id are required")
    algorithm = _algorithm_for(signer)
    canonical_timestamp(signed_at)  # refuses a naive time before anything is signed
    canonical = canonical_json(content)
    unsigned = SignatureRecord(
        algorithm=algorithm.name,
        hash_algorithm=algorithm.hash_name,
        signer_id=signer_id,
        signed_at=signed_at,
        content_hash=algorithm.digest(canonical),
        public_key=signer.public_key,
        public_key_fingerprint=key_fingerprint(signer.public_key),
        signature=b"",
    )
    draft = SignedVersion(document_id, version, canonical, previous_hash, amendment_reason, unsigned)
    signed = replace(unsigned, signature=signer.sign(draft.envelope()))
    return replace(draft, signature=signed)


def sign(
    content: Mapping[str, Any], *, document_id: str, signer: Signer, signer_id: str, signed_at: datetime
) -> SignedVersion:
    """Version 1 of a document, signed by ``signer_id`` with ``signer``."""
    return _sign_version(
        document_id=document_id,
        version=1,
        content=content,
        previous_hash=None,
        amendment_reason=None,
        signer=signer,
        signer_id=signer_id,
        signed_at=signed_at,
    )


def amend(
    previous: SignedVersion,
    content: Mapping[str, Any],
    *,
    reason: str,
    signer: Signer,
    signer_id: str,
    signed_at: datetime,
) -> SignedVersion:
    """A new signed version referencing ``previous`` by its hash; ``previous`` itself is untouched."""
    if not reason.strip():
        raise ValueError("an amendment needs a reason")
    if signed_at < previous.signature.signed_at:
        raise ValueError("an amendment cannot be signed before the version it amends")
    return _sign_version(
        document_id=previous.document_id,
        version=previous.version + 1,
        content=content,
        previous_hash=previous.version_hash,
        amendment_reason=reason,
        signer=signer,
        signer_id=signer_id,
        signed_at=signed_at,
    )


# ---- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying one version; ``problems`` are stable codes, empty when valid."""

    valid: bool
    signer_id: str
    content_hash: str
    problems: tuple[str, ...]


def verify(version: SignedVersion, *, trusted_fingerprint: str) -> Verification:
    """Check one signed version against the key the signer is known to hold.

    ``trusted_fingerprint`` comes from the signer's registered key or certificate, never from the record
    itself: otherwise anyone could re-sign altered content with a key of their own. Problem codes:
    ``unknown_algorithm``, ``content_not_canonical``, ``content_changed``, ``key_mismatch`` (the record's
    key does not match its fingerprint), ``untrusted_key`` (not the signer's key), ``signature_invalid``,
    ``bad_version_link`` (version 1 with a predecessor, or a later version without one or its reason).
    """
    record = version.signature
    problems: list[str] = []
    algorithm = ALGORITHMS.get(record.algorithm)
    if algorithm is None or algorithm.hash_name != record.hash_algorithm:
        problems.append("unknown_algorithm")
    try:
        recanonical = canonical_json(version.content())
    except (ValueError, CanonicalisationError):
        recanonical = b""
    if recanonical != version.canonical_content:
        problems.append("content_not_canonical")
    if algorithm is not None and algorithm.digest(version.canonical_content) != record.content_hash:
        problems.append("content_changed")
    if key_fingerprint(record.public_key) != record.public_key_fingerprint:
        problems.append("key_mismatch")
    if key_fingerprint(record.public_key) != trusted_fingerprint:
        problems.append("untrusted_key")
    try:
        envelope = version.envelope()
    except CanonicalisationError:
        envelope = b""
    if (
        algorithm is None
        or not envelope
        or not algorithm.verify(record.public_key, envelope, record.signature)
    ):
        problems.append("signature_invalid")
    first = version.version == 1
    if (
        version.version < 1
        or first != (version.previous_hash is None)
        or first != (version.amendment_reason is None)
    ):
        problems.append("bad_version_link")
    return Verification(not problems, record.signer_id, record.content_hash, tuple(problems))


@dataclass(frozen=True)
class ChainVerification:
    valid: bool
    versions: tuple[Verification, ...]
    problems: tuple[str, ...]  # "v<n>: <code>" for each problem, chain problems included


def verify_chain(
    versions: Sequence[SignedVersion], *, trusted: Mapping[str, str | frozenset[str]]
) -> ChainVerification:
    """Verify versions 1..n of one document, each against ``trusted[signer_id]``: the signer's key
    fingerprint, or the set of them when the signer has enrolled new keys over time.

    Beyond each version's own checks: numbered 1..n without gaps, one document id, and every version's
    ``previous_hash`` equal to its predecessor's :attr:`SignedVersion.version_hash`.
    """
    if not versions:
        return ChainVerification(False, (), ("chain: empty",))
    problems: list[str] = []
    results: list[Verification] = []
    for index, version in enumerate(versions):
        label = f"v{index + 1}"
        allowed = trusted.get(version.signature.signer_id)
        if isinstance(allowed, str):
            allowed = frozenset({allowed})
        if not allowed:
            problems.append(f"{label}: unknown_signer")
            fingerprint = ""
        else:
            own = key_fingerprint(version.signature.public_key)
            fingerprint = own if own in allowed else min(allowed)
        result = verify(version, trusted_fingerprint=fingerprint)
        results.append(result)
        # An unknown signer is reported once, not again as an untrusted key.
        codes = [code for code in result.problems if fingerprint or code != "untrusted_key"]
        problems.extend(f"{label}: {code}" for code in codes)
        if version.version != index + 1:
            problems.append(f"{label}: out_of_sequence")
        if version.document_id != versions[0].document_id:
            problems.append(f"{label}: other_document")
        if index and version.previous_hash != versions[index - 1].version_hash:
            problems.append(f"{label}: broken_link")
    return ChainVerification(not problems, tuple(results), tuple(problems))
