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
verification) plus :class:`Signer` (holds the signature-creation data and signs). Today's one
implementation is ECDSA P-256 with SHA-256 from ``cryptography``. **SM2 with SM3** (商用密码, what a
licensed Chinese CA issues; ``consult-and-platform.md`` §5.3) replaces it by implementing the same two
protocols and registering under its own name in :data:`ALGORITHMS`; records name their algorithm, so
old ECDSA signatures keep verifying after the switch. A :class:`Signer` may equally wrap a USB key or
an HSM: only ``sign`` and ``public_key`` are needed, the private key never has to leave it.

Pure: no I/O, no clock (every time is passed in), no database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ALGORITHMS",
    "ECDSA_P256_SHA256",
    "CanonicalisationError",
    "ChainVerification",
    "EcdsaP256Sha256",
    "EcdsaP256Signer",
    "SignatureAlgorithm",
    "SignatureRecord",
    "SignedVersion",
    "Signer",
    "Verification",
    "amend",
    "canonical_json",
    "canonical_timestamp",
    "content_hash",
    "key_fingerprint",
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

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        try:
            key = serialization.load_der_public_key(public_key)
        except ValueError:
            return False
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            return False
        try:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


ECDSA_P256_SHA256 = EcdsaP256Sha256()

# Verification looks the algorithm up by the name the record carries; SM2 registers here later.
ALGORITHMS: Mapping[str, SignatureAlgorithm] = {ECDSA_P256_SHA256.name: ECDSA_P256_SHA256}


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
    try:
        return ALGORITHMS[signer.algorithm]
    except KeyError:
        raise ValueError(f"unknown signature algorithm {signer.algorithm!r}") from None


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


def verify_chain(versions: Sequence[SignedVersion], *, trusted: Mapping[str, str]) -> ChainVerification:
    """Verify versions 1..n of one document, each against ``trusted[signer_id]`` (its key fingerprint).

    Beyond each version's own checks: numbered 1..n without gaps, one document id, and every version's
    ``previous_hash`` equal to its predecessor's :attr:`SignedVersion.version_hash`.
    """
    if not versions:
        return ChainVerification(False, (), ("chain: empty",))
    problems: list[str] = []
    results: list[Verification] = []
    for index, version in enumerate(versions):
        label = f"v{index + 1}"
        fingerprint = trusted.get(version.signature.signer_id)
        if fingerprint is None:
            problems.append(f"{label}: unknown_signer")
            fingerprint = ""
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
