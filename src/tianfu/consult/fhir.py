"""A consultation as FHIR R4 resources (validated with the ``fhir.resources`` R4B models).

Pure: every function takes rows already read (and access already checked) and returns JSON-ready
dicts; no I/O, no clock unless passed in. The mapping follows ``consult-and-platform.md`` §4:

- **ServiceRequest** (id = consultation id): the order (``intent=order``); requester, performer (the
  invited institution, then the assigned consultant), ``reasonCode`` (事由, 目的), ``occurrence`` (the
  wanted time frame, or the scheduled time), ``supportingInfo`` → a contained DocumentReference with
  the 病历摘要 and the Consent resources. It completes once the inviting physician's decision is in.
- **Task** (same id): the fulfilment. ``status`` is the R4 task status, ``businessStatus`` the Chinese
  state with its code, ``restriction.period`` the response SLA (submitted → due), ``executionPeriod``
  from the start to the signed opinion, ``output`` → the latest opinion version.
- **Communication** per message (``partOf`` Task, ``basedOn`` ServiceRequest, ``inResponseTo``).
- **DiagnosticReport** per signed opinion version (``final``, amendments ``amended``), the canonical
  signed JSON as ``presentedForm``; **Provenance** per version holding the ECDSA signature, with the
  signed envelope and public key as extensions, so the signature is checked from the bundle alone
  (:func:`verify_bundle_signatures`). One more Provenance per state transition.
- **Consent**: ``treatment`` (知情同意书) and ``patient-privacy`` (PIPL art. 29); ``inactive`` once withdrawn.
- **AuditEvent** per audit record of the consultation (the kernel's BALP-style translator, its entity
  pointing at the Task).

Patient, Practitioner and Organization are referenced as the kernel's ``/fhir/R4`` serves them.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from tianfu.consult import signing
from tianfu.consult import workflow as wf
from tianfu.consult.tables import (
    Consultation,
    ConsultConsent,
    ConsultMessage,
    ConsultStatusChange,
    OpinionVersion,
)
from tianfu.core.audit.models import AuditRecord
from tianfu.core.fhir import translators

FHIR_BASE = "/fhir/R4"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"
BUSINESS_STATUS_SYSTEM = "urn:tianfu:consult-business-status"
ACTION_SYSTEM = "urn:tianfu:consult-action"
MODE_SYSTEM = "urn:tianfu:consult-mode"
OPINION_SYSTEM = "urn:tianfu:consult-opinion"
# Provenance.signature extensions: what signing.verify needs besides the signature bytes.
EXT_ENVELOPE = "urn:tianfu:fhir:StructureDefinition/signed-envelope"  # base64 canonical envelope
EXT_PUBLIC_KEY = "urn:tianfu:fhir:StructureDefinition/signer-public-key"  # base64 DER SPKI
SIG_FORMAT = "application/vnd.tianfu.ecdsa-p256-sha256"  # raw DER ECDSA over the canonical envelope
# Per algorithm: DER (r, s) over the canonical envelope; SM2 with SM3 and the Z_A preprocessing (default ID).
SIG_FORMATS = {"ecdsa-p256-sha256": SIG_FORMAT, "sm2-sm3": "application/vnd.tianfu.sm2-sm3"}
TARGET_FORMAT = "application/json"  # the canonical JSON envelope (RFC 8785 style)
OPINION_CODE = {"system": LOINC, "code": "11488-4", "display": "Consult note"}
CONSULT_CODE = {"system": SNOMED, "code": "11429006", "display": "Consultation"}
DECIDED = "decided"  # business-status code once the inviting physician's decision is in


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _ref(resource_type: str, resource_id: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        ref["display"] = display
    return ref


def _text(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def _period(start: datetime | None, end: datetime | None) -> dict[str, str] | None:
    period = {k: iso(v) for k, v in (("start", start), ("end", end)) if v is not None}
    return period or None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def business_status_code(row: Consultation) -> str:
    return DECIDED if row.status == wf.TaskStatus.COMPLETED and row.decided_at is not None else row.status


def service_request_status(row: Consultation) -> str:
    """The order's status: it completes once the decision is recorded (TC-08), not on the opinion."""
    status = wf.TaskStatus(row.status)
    if status is wf.TaskStatus.DRAFT:
        return "draft"
    if status is wf.TaskStatus.ENTERED_IN_ERROR:
        return "entered-in-error"
    if status in (wf.TaskStatus.REJECTED, wf.TaskStatus.CANCELLED, wf.TaskStatus.FAILED):
        return "revoked"
    if status is wf.TaskStatus.COMPLETED and row.decided_at is not None:
        return "completed"
    return "active"


# ---- the order and the task ----------------------------------------------------------------------


def service_request(row: Consultation, consents: Sequence[ConsultConsent] = ()) -> dict[str, Any]:
    reasons = [
        {"text": text}
        for text in (_text(row.reason), _text(row.purpose) and f"会诊目的: {row.purpose.strip()}")
        if text
    ]
    performers = [_ref("Organization", row.invited_institution_id)]
    if row.assigned_consultant_id:
        performers.append(_ref("Practitioner", row.assigned_consultant_id))
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": row.id,
        "meta": {"lastUpdated": iso(row.updated_at)},
        "identifier": [{"system": "urn:tianfu:consultation", "value": row.id}],
        "status": service_request_status(row),
        "intent": "order",
        "category": [{"coding": [CONSULT_CODE], "text": "远程会诊"}],
        "priority": row.priority,
        "code": {"coding": [CONSULT_CODE], "text": "远程会诊 Remote consultation"},
        "orderDetail": [
            {
                "coding": [{"system": MODE_SYSTEM, "code": row.mode}],
                "text": "同步(实时)会诊" if row.mode == "synchronous" else "异步(存储转发)会诊",
            }
        ],
        "subject": _ref("Patient", row.patient_id),
        "authoredOn": iso(row.submitted_at or row.created_at),
        "requester": _ref("Practitioner", row.requester_id),
        "performer": performers,
    }
    if row.specialty:
        resource["performerType"] = {"text": row.specialty}
    if row.scheduled_at is not None:
        resource["occurrenceDateTime"] = iso(row.scheduled_at)
    elif row.time_frame_earliest is not None or row.time_frame_latest is not None:
        resource["occurrencePeriod"] = _period(row.time_frame_earliest, row.time_frame_latest)
    if reasons:
        resource["reasonCode"] = reasons
    supporting: list[dict[str, Any]] = []
    if _text(row.case_summary):
        resource["contained"] = [
            {
                "resourceType": "DocumentReference",
                "id": "case-summary",
                "status": "current",
                "type": {"text": "病历摘要 Case summary"},
                "subject": _ref("Patient", row.patient_id),
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain; charset=utf-8",
                            "language": "zh-CN",
                            "data": _b64(row.case_summary.encode("utf-8")),
                            "title": "病历摘要",
                        }
                    }
                ],
            }
        ]
        supporting.append({"reference": "#case-summary", "display": "病历摘要"})
    supporting.extend(_ref("Consent", c.id) for c in consents)
    if supporting:
        resource["supportingInfo"] = supporting
    if row.accompanying_physician_id:
        resource["extension"] = [
            {
                "url": "urn:tianfu:fhir:StructureDefinition/accompanying-physician",
                "valueReference": _ref("Practitioner", row.accompanying_physician_id),
            }
        ]
    if row.decided_at is not None and row.decided_by_id:
        resource["note"] = [
            {
                "authorReference": _ref("Practitioner", row.decided_by_id),
                "time": iso(row.decided_at),
                "text": f"邀请方处理意见: {row.decision_text or ''}",
            }
        ]
    return translators.dump(ServiceRequest.model_validate(resource))


def _started_at(history: Sequence[ConsultStatusChange]) -> datetime | None:
    return next((h.at for h in history if h.target == wf.TaskStatus.IN_PROGRESS), None)


def _ended_at(row: Consultation, history: Sequence[ConsultStatusChange]) -> datetime | None:
    if row.status not in {s.value for s in wf.TERMINAL_STATUSES}:
        return None
    return next((h.at for h in reversed(history) if h.target == row.status), None)


def task(
    row: Consultation,
    history: Sequence[ConsultStatusChange],
    latest_opinion: OpinionVersion | None = None,
    *,
    patient_reference: Mapping[str, Any] | None = None,
    minimised: bool = False,
    extensions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The Task. ``minimised``: the regulator's view, without statusReason (free text) and without the
    ServiceRequest links (the order, with its clinical text, is not exported to the regulator)."""
    code = business_status_code(row)
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": row.id,
        "meta": {"lastUpdated": iso(row.updated_at)},
        "identifier": [{"system": "urn:tianfu:consultation", "value": row.id}],
        "status": row.status,
        "businessStatus": {
            "coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code, "display": row.business_status}],
            "text": row.business_status,
        },
        "intent": "order",
        "priority": row.priority,
        "code": {"coding": [CONSULT_CODE], "text": "远程会诊"},
        "for": dict(patient_reference) if patient_reference else _ref("Patient", row.patient_id),
        "authoredOn": iso(row.submitted_at or row.created_at),
        "lastModified": iso(row.updated_at),
        "requester": _ref("Practitioner", row.requester_id),
        "owner": _ref("Practitioner", row.assigned_consultant_id)
        if row.assigned_consultant_id
        else _ref("Organization", row.invited_institution_id),
    }
    if not minimised:
        resource["basedOn"] = [_ref("ServiceRequest", row.id)]
        resource["focus"] = _ref("ServiceRequest", row.id)
    if not minimised and _text(row.status_reason):
        resource["statusReason"] = {"text": row.status_reason}
    if row.response_due_at is not None or row.submitted_at is not None:
        resource["restriction"] = {"period": _period(row.submitted_at, row.response_due_at)}
    execution = _period(_started_at(history), _ended_at(row, history))
    if execution:
        resource["executionPeriod"] = execution
    if latest_opinion is not None:
        resource["output"] = [
            {
                "type": {"coding": [OPINION_CODE], "text": "会诊意见"},
                "valueReference": _ref("DiagnosticReport", latest_opinion.id),
            }
        ]
    if extensions:
        resource["extension"] = list(extensions)
    return translators.dump(Task.model_validate(resource))


# ---- discussion ----------------------------------------------------------------------------------


def communication(row: Consultation, message: ConsultMessage) -> dict[str, Any]:
    inviting = message.author_institution_id == row.inviting_institution_id
    recipient = row.invited_institution_id if inviting else row.inviting_institution_id
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": message.id,
        "basedOn": [_ref("ServiceRequest", row.id)],
        "partOf": [_ref("Task", row.id)],
        "status": "completed",
        "subject": _ref("Patient", row.patient_id),
        "sent": iso(message.sent_at),
        "sender": _ref("Practitioner", message.author_id),
        "recipient": [_ref("Organization", recipient)],
        "payload": [{"contentString": message.body}],
    }
    if message.in_response_to_id:
        resource["inResponseTo"] = [_ref("Communication", message.in_response_to_id)]
    return translators.dump(Communication.model_validate(resource))


# ---- consents ------------------------------------------------------------------------------------

_SIGNER_ROLE = {
    "guardian": ("GUARD", "guardian"),
    "close-relative": ("FAMMEMB", "family member"),
}


def consent(row: Consultation, c: ConsultConsent) -> dict[str, Any]:
    treatment = c.kind == wf.ConsentKind.TREATMENT
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": c.id,
        "status": "inactive" if c.withdrawn_at is not None else "active",
        "scope": {
            "coding": [
                {
                    "system": CONSENT_SCOPE,
                    "code": c.kind,
                    "display": "Treatment" if treatment else "Privacy Consent",
                }
            ],
            "text": "远程会诊知情同意书" if treatment else "个人信息跨机构提供同意(个人信息保护法第二十九条)",
        },
        "category": [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": _ref("Patient", c.patient_id),
        "dateTime": iso(c.granted_at),
        "organization": [_ref("Organization", row.inviting_institution_id)],
        "policyRule": {
            "coding": [{"system": ACT_CODE, "code": "OPTIN", "display": "opt-in"}],
            "text": "远程医疗服务管理规范: 知情同意" if treatment else "个人信息保护法 第十四条、第二十九条",
        },
    }
    if c.signed_form_ref:
        resource["sourceAttachment"] = {"url": c.signed_form_ref, "title": "签署的书面同意书"}
    if c.signed_by in _SIGNER_ROLE:
        code, display = _SIGNER_ROLE[c.signed_by]
        resource["contained"] = [
            {
                "resourceType": "RelatedPerson",
                "id": "signer",
                "patient": _ref("Patient", c.patient_id),
                "relationship": [{"coding": [{"system": ROLE_CODE, "code": code, "display": display}]}],
                **({"name": [{"text": c.signer_name}]} if c.signer_name else {}),
            }
        ]
        resource["performer"] = [{"reference": "#signer"}]
    else:
        resource["performer"] = [_ref("Patient", c.patient_id)]
    provision: dict[str, Any] = {
        "type": "permit",
        "period": _period(c.granted_at, c.withdrawn_at),
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
    }
    if c.recipient_institution_id:
        provision["actor"] = [
            {
                "role": {
                    "coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]
                },
                "reference": _ref("Organization", c.recipient_institution_id),
            }
        ]
    resource["provision"] = provision
    return translators.dump(Consent.model_validate(resource))


# ---- the signed opinion --------------------------------------------------------------------------


def _content(version: OpinionVersion) -> dict[str, Any]:
    try:
        content = json.loads(version.canonical_content)
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def opinion_report(
    row: Consultation, version: OpinionVersion, *, with_content: bool = True
) -> dict[str, Any]:
    """One signed version. ``with_content=False``: the report exists and who signed it, no clinical text."""
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": version.id,
        "identifier": [{"system": OPINION_SYSTEM, "value": f"{version.document_id}|{version.version}"}],
        "basedOn": [_ref("ServiceRequest", row.id)],
        "status": "final" if version.version == 1 else "amended",
        "category": [{"coding": [CONSULT_CODE], "text": "会诊意见"}],
        "code": {"coding": [OPINION_CODE], "text": "远程会诊意见 Consultation opinion"},
        "subject": _ref("Patient", row.patient_id),
        "issued": iso(version.signed_at),
        "performer": [_ref("Organization", row.invited_institution_id)],
        "resultsInterpreter": [_ref("Practitioner", version.signer_id)],
    }
    if with_content:
        content = _content(version)
        conclusion = "\n".join(
            f"{label}: {content[key]}"
            for key, label in (
                ("findings", "所见"),
                ("diagnosis", "诊断"),
                ("opinion", "诊疗意见"),
                ("recommendations", "建议"),
            )
            if isinstance(content.get(key), str) and content[key].strip()
        )
        if conclusion:
            resource["conclusion"] = conclusion
        if isinstance(content.get("diagnosis"), str) and content["diagnosis"].strip():
            resource["conclusionCode"] = [{"text": content["diagnosis"]}]
        resource["presentedForm"] = [
            {
                "contentType": "application/json",
                "language": "zh-CN",
                "data": _b64(version.canonical_content.encode("utf-8")),
                "title": f"会诊意见 第{version.version}版 (签名的规范化JSON)",
                "creation": iso(version.signed_at),
            }
        ]
    return translators.dump(DiagnosticReport.model_validate(resource))


def _envelope(version: OpinionVersion) -> bytes:
    return version.as_signed_version().envelope()


def signature_provenance(
    row: Consultation, version: OpinionVersion, previous: OpinionVersion | None
) -> dict[str, Any]:
    """Who signed which version, when, and the signature itself (SEC-07)."""
    signer = _ref("Practitioner", version.signer_id)
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": f"sig-{version.id}",
        "target": [_ref("DiagnosticReport", version.id)],
        "occurredDateTime": iso(version.signed_at),
        "recorded": iso(version.recorded_at),
        "activity": {
            "coding": [
                {"system": DATA_OPERATION, "code": "CREATE", "display": "create"}
                if previous is None
                else {"system": DATA_OPERATION, "code": "UPDATE", "display": "revise"}
            ],
            "text": "签署会诊意见" if previous is None else "修订会诊意见",
        },
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT, "code": "attester", "display": "Attester"}]},
                "who": signer,
                "onBehalfOf": _ref("Organization", row.invited_institution_id),
            }
        ],
        "signature": [
            {
                "type": [
                    {
                        "system": SIGNATURE_TYPE,
                        "code": "1.2.840.10065.1.12.1.1",
                        "display": "Author's Signature",
                    }
                ],
                "when": iso(version.signed_at),
                "who": signer,
                "targetFormat": TARGET_FORMAT,
                "sigFormat": SIG_FORMATS.get(version.algorithm, SIG_FORMAT),
                "data": version.signature,
                "extension": [
                    {"url": EXT_ENVELOPE, "valueBase64Binary": _b64(_envelope(version))},
                    {"url": EXT_PUBLIC_KEY, "valueBase64Binary": version.public_key},
                ],
            }
        ],
    }
    if previous is not None:
        resource["entity"] = [{"role": "revision", "what": _ref("DiagnosticReport", previous.id)}]
    if version.amendment_reason:
        resource["reason"] = [{"text": version.amendment_reason}]
    return translators.dump(Provenance.model_validate(resource))


def transition_provenance(
    row: Consultation, change: ConsultStatusChange, *, minimised: bool = False
) -> dict[str, Any]:
    action = wf.Action(change.action)
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": change.id,
        "target": [_ref("Task", row.id)],
        "occurredDateTime": iso(change.at),
        "recorded": iso(change.at),
        "activity": {
            "coding": [{"system": ACTION_SYSTEM, "code": action.value, "display": action.zh}],
            "text": f"{change.source} → {change.target}",
        },
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author", "display": "Author"}]},
                "who": _ref("Practitioner", change.actor_id),
            }
        ],
    }
    if not minimised and _text(change.reason):
        resource["reason"] = [{"text": change.reason}]
    return translators.dump(Provenance.model_validate(resource))


# ---- audit ---------------------------------------------------------------------------------------


def audit_event(
    row: Consultation, record: AuditRecord, *, patient_reference: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The kernel's AuditEvent, its consultation entity pointing at the Task (and, for the regulator,
    the patient entity at the pseudonymous Patient, without network address or detail)."""
    event = translators.audit_event(record)
    entities = []
    for entity in event.get("entity", []):
        what = entity.get("what", {})
        if what.get("display") == f"Consultation/{row.id}":
            entities.append(
                {
                    "what": _ref("Task", row.id),
                    "type": {
                        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                        "code": "2",
                        "display": "System Object",
                    },
                    "role": {
                        "system": "http://terminology.hl7.org/CodeSystem/object-role",
                        "code": "3",
                        "display": "Report",
                    },
                }
            )
        elif what.get("reference", "").startswith("Patient/") and patient_reference is not None:
            entities.append({**entity, "what": dict(patient_reference)})
        else:
            entities.append(entity)
    if entities:
        event["entity"] = entities
    if patient_reference is not None:
        for agent in event.get("agent", []):
            agent.pop("network", None)
    return translators.dump(AuditEvent.model_validate(event))


# ---- the bundle ----------------------------------------------------------------------------------


@dataclass
class ConsultationRecord:
    """Everything about one consultation, read by the caller."""

    row: Consultation
    history: Sequence[ConsultStatusChange]
    messages: Sequence[ConsultMessage]
    consents: Sequence[ConsultConsent]
    opinions: Sequence[OpinionVersion]
    audit: Sequence[AuditRecord]
    directory: Sequence[dict[str, Any]] = field(default_factory=list)  # Practitioner, Organization


def consultation_resources(record: ConsultationRecord) -> list[dict[str, Any]]:
    row = record.row
    resources = [
        service_request(row, record.consents),
        task(row, record.history, record.opinions[-1] if record.opinions else None),
    ]
    resources += [consent(row, c) for c in record.consents]
    resources += [communication(row, m) for m in record.messages]
    previous: OpinionVersion | None = None
    for version in record.opinions:
        resources.append(opinion_report(row, version))
        resources.append(signature_provenance(row, version, previous))
        previous = version
    resources += [transition_provenance(row, h) for h in record.history]
    resources += [audit_event(row, r) for r in record.audit]
    resources += record.directory
    return resources


def bundle(
    base_url: str,
    resources: Iterable[dict[str, Any]],
    *,
    now: datetime,
    bundle_type: str = "collection",
    total: int | None = None,
    links: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """A Bundle whose entries' fullUrls are ``{base}/fhir/R4/{type}/{id}``: relative references resolve
    inside it (FHIR's bundle resolution rules)."""
    base = base_url.rstrip("/") + FHIR_BASE
    entries = []
    for resource in resources:
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource,
        }
        if bundle_type == "searchset":
            entry["search"] = {"mode": "match" if resource["resourceType"] == "Task" else "include"}
        entries.append(entry)
    data: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": bundle_type,
        "timestamp": iso(now),
        "entry": entries,
    }
    if total is not None:
        data["total"] = total
    if links:
        data["link"] = list(links)
    return translators.dump(Bundle.model_validate(data))


# ---- verification from the bundle alone ----------------------------------------------------------


def _extension(element: Mapping[str, Any], url: str) -> str:
    return next(
        (e.get("valueBase64Binary", "") for e in element.get("extension", []) if e.get("url") == url), ""
    )


def _instant(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def verify_bundle_signatures(
    bundle_json: Mapping[str, Any], *, trusted: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Check every opinion Provenance's signature against the DiagnosticReport it targets.

    The signed envelope is rebuilt from the report's canonical JSON (``presentedForm``) and the
    envelope fields the Provenance carries, then :func:`signing.verify` checks hash, key and signature.
    ``trusted`` maps signer practitioner id → key fingerprint (from a registry the reader trusts);
    without it, the key in the bundle is trusted and only integrity is shown. Returns problems per
    Provenance id (an empty list: valid).
    """
    by_ref = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle_json.get("entry", [])
    }
    results: dict[str, list[str]] = {}
    for resource in by_ref.values():
        if resource["resourceType"] != "Provenance" or not resource.get("signature"):
            continue
        problems: list[str] = []
        sig = resource["signature"][0]
        report = by_ref.get(resource["target"][0]["reference"], {})
        forms = report.get("presentedForm") or [{}]
        try:
            content = base64.b64decode(forms[0].get("data", ""), validate=True)
            envelope = json.loads(base64.b64decode(_extension(sig, EXT_ENVELOPE), validate=True))
            public_key = base64.b64decode(_extension(sig, EXT_PUBLIC_KEY), validate=True)
            signature = base64.b64decode(sig.get("data", ""), validate=True)
            signed_at = datetime.fromisoformat(envelope["signed_at"].replace("Z", "+00:00"))
            version = signing.SignedVersion(
                document_id=envelope["document_id"],
                version=envelope["version"],
                canonical_content=content,
                previous_hash=envelope["previous_hash"],
                amendment_reason=envelope["amendment_reason"],
                signature=signing.SignatureRecord(
                    algorithm=envelope["algorithm"],
                    hash_algorithm=envelope["hash_algorithm"],
                    signer_id=envelope["signer_id"],
                    signed_at=signed_at,
                    content_hash=envelope["content_hash"],
                    public_key=public_key,
                    public_key_fingerprint=envelope["public_key_fingerprint"],
                    signature=signature,
                ),
            )
        except (ValueError, KeyError, TypeError) as error:
            results[resource["id"]] = [f"unreadable: {error}"]
            continue
        if sig.get("who", {}).get("reference") != f"Practitioner/{version.signature.signer_id}":
            problems.append("signer_mismatch")
        if _instant(sig.get("when")) != signed_at:
            problems.append("time_mismatch")
        fingerprint = (trusted or {}).get(
            version.signature.signer_id, version.signature.public_key_fingerprint
        )
        problems += list(signing.verify(version, trusted_fingerprint=fingerprint).problems)
        results[resource["id"]] = problems
    return results


def pseudonymous_patient(pseudonym: str, gender: str, age_band: tuple[int, int] | None) -> dict[str, Any]:
    """The regulator's view of a patient: a keyed pseudonym, sex and a ten-year age band, nothing else."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pseudonym,
        "identifier": [{"system": "urn:tianfu:regulator-pseudonym", "value": pseudonym}],
        "gender": gender,
    }
    if age_band is not None:
        low, high = age_band
        resource["extension"] = [
            {
                "url": "urn:tianfu:fhir:StructureDefinition/age-band",
                "valueRange": {
                    "low": {"value": low, "unit": "a", "system": UCUM, "code": "a"},
                    "high": {"value": high, "unit": "a", "system": UCUM, "code": "a"},
                },
            }
        ]
    return translators.dump(FhirPatient.model_validate(resource))
