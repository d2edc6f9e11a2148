"""Required bindings that ``fhir.resources`` does not check (it accepts ``Task.status = "bogus"``).

Two kinds of rule: an element path (``Task.status``) bound to a value set, and a code system whose
codes are checked wherever a Coding names it. Only the value sets the consult export uses are listed;
an element or system that is not listed is not checked. Contained resources and Bundle entries are
checked under their own resource type. :func:`check` returns problems as ``path: message`` (empty:
valid).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


TASK_STATUS = _codes(
    "draft requested received accepted rejected ready cancelled in-progress on-hold failed completed "
    "entered-in-error"
)
TASK_INTENT = _codes(
    "unknown proposal plan order original-order reflex-order filler-order instance-order option"
)
REQUEST_INTENT = _codes(
    "proposal plan directive order original-order reflex-order filler-order instance-order option"
)
REQUEST_STATUS = _codes("draft active on-hold revoked completed entered-in-error unknown")
REQUEST_PRIORITY = _codes("routine urgent asap stat")
EVENT_STATUS = _codes("preparation in-progress not-done on-hold stopped completed entered-in-error unknown")
CONSENT_STATE = _codes("draft proposed active rejected inactive entered-in-error")
REPORT_STATUS = _codes(
    "registered partial preliminary final amended corrected appended cancelled entered-in-error unknown"
)
COMPOSITION_STATUS = _codes("preliminary final amended entered-in-error")
DOCUMENT_REFERENCE_STATUS = _codes("current superseded entered-in-error")
AUDIT_ACTION = _codes("C R U D E")
AUDIT_OUTCOME = _codes("0 4 8 12")
PROVENANCE_ENTITY_ROLE = _codes("derivation revision quotation source removal")
BUNDLE_TYPE = _codes(
    "document message transaction transaction-response batch batch-response history searchset collection"
)
SEARCH_MODE = _codes("match include outcome")
GENDER = _codes("male female other unknown")
MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*(\s*;.*)?$", re.IGNORECASE)

# Element path (resource type first, list indices left out) → allowed codes.
ELEMENTS: Mapping[str, frozenset[str]] = {
    "Task.status": TASK_STATUS,
    "Task.intent": TASK_INTENT,
    "Task.priority": REQUEST_PRIORITY,
    "ServiceRequest.status": REQUEST_STATUS,
    "ServiceRequest.intent": REQUEST_INTENT,
    "ServiceRequest.priority": REQUEST_PRIORITY,
    "Communication.status": EVENT_STATUS,
    "Communication.priority": REQUEST_PRIORITY,
    "Consent.status": CONSENT_STATE,
    "Consent.provision.type": frozenset({"deny", "permit"}),
    "DiagnosticReport.status": REPORT_STATUS,
    "Composition.status": COMPOSITION_STATUS,
    "DocumentReference.status": DOCUMENT_REFERENCE_STATUS,
    "AuditEvent.action": AUDIT_ACTION,
    "AuditEvent.outcome": AUDIT_OUTCOME,
    "AuditEvent.agent.network.type": _codes("1 2 3 4 5"),
    "Provenance.entity.role": PROVENANCE_ENTITY_ROLE,
    "Bundle.type": BUNDLE_TYPE,
    "Bundle.entry.search.mode": SEARCH_MODE,
    "Patient.gender": GENDER,
}
# Elements whose value must be a MIME type (BCP 13, a required binding).
MIME_ELEMENTS = frozenset(
    {
        "Provenance.signature.sigFormat",
        "Provenance.signature.targetFormat",
        "DiagnosticReport.presentedForm.contentType",
        "DocumentReference.content.attachment.contentType",
    }
)
# Code systems checked wherever a Coding names them.
SYSTEMS: Mapping[str, frozenset[str]] = {
    "http://terminology.hl7.org/CodeSystem/consentscope": frozenset(
        {"adr", "research", "patient-privacy", "treatment"}
    ),
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type": _codes(
        "enterer performer author verifier legal attester informant custodian assembler composer"
    ),
    "http://terminology.hl7.org/CodeSystem/v3-DataOperation": _codes(
        "OPERATE CREATE DELETE EXECUTE READ UPDATE APPEND NULLIFY"
    ),
    "http://terminology.hl7.org/CodeSystem/audit-entity-type": frozenset({"1", "2", "3", "4"}),
    "http://terminology.hl7.org/CodeSystem/security-source-type": _codes("1 2 3 4 5 6 7 8 9"),
    "http://terminology.hl7.org/CodeSystem/audit-event-type": frozenset({"rest"}),
    "urn:tianfu:consult-business-status": TASK_STATUS | {"decided"},
    "urn:tianfu:consult-action": _codes(
        "submit receive accept reject start hold resume complete fail cancel mark-entered-in-error "
        "record-decision"
    ),
    "urn:tianfu:consult-mode": frozenset({"store-and-forward", "synchronous"}),
}


def _walk(value: Any, path: str, where: str, problems: list[str]) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, path, f"{where}[{index}]", problems)
        return
    if isinstance(value, dict):
        if "resourceType" in value and isinstance(value["resourceType"], str):
            path = value["resourceType"]  # a resource (the root, contained, an entry's) starts afresh
        system = value.get("system")
        if isinstance(system, str) and system in SYSTEMS and value.get("code", "") not in SYSTEMS[system]:
            problems.append(f"{where}: code {value.get('code')!r} is not in {system}")
        for key, item in value.items():
            if key == "resourceType":
                continue
            _walk(item, f"{path}.{key}", f"{where}.{key}", problems)
        return
    if path in ELEMENTS and str(value) not in ELEMENTS[path]:
        problems.append(f"{where}: {value!r} is not a valid code for {path}")
    if path in MIME_ELEMENTS and not (isinstance(value, str) and MIME.match(value)):
        problems.append(f"{where}: {value!r} is not a MIME type")


def check(resource: Mapping[str, Any]) -> list[str]:
    """Problems with the required bindings of ``resource`` (a Bundle's entries included)."""
    problems: list[str] = []
    _walk(dict(resource), "", str(resource.get("resourceType", "")), problems)
    return problems
