"""Roles and what each may do: the one table every route's permission check reads.

Permissions say what kind of action a role may take; whether it may take it for a given patient is a
separate question, answered by :mod:`tianfu.core.security.access` (the care relationship).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    NURSE = "nurse"
    PHYSICIAN = "physician"
    RADIOLOGIST = "radiologist"
    CONSULTANT = "consultant"
    ADMIN = "admin"
    AUDITOR = "auditor"
    PATIENT = "patient"
    REGULATOR = "regulator"  # the provincial supervision platform (省级监管平台): one export, nothing else


CLINICAL_ROLES = frozenset({Role.NURSE, Role.PHYSICIAN, Role.RADIOLOGIST, Role.CONSULTANT})


class Permission(StrEnum):
    PATIENT_READ = "patient.read"  # demographics and encounters of related patients
    PATIENT_WRITE = "patient.write"  # register and edit demographics
    ENCOUNTER_WRITE = "encounter.write"  # admit, transfer, discharge
    CLINICAL_READ = "clinical.read"  # module data: vital signs, triage, images, consultations
    CLINICAL_WRITE = "clinical.write"
    BREAK_GLASS = "patient.break_glass"  # emergency access with a stated reason
    OWN_RECORD_READ = "own_record.read"  # a patient's own record and its access log
    DIRECTORY_READ = "directory.read"  # institutions, wards, beds, staff directory
    USER_READ = "user.read"
    USER_MANAGE = "user.manage"
    AUDIT_READ = "audit.read"
    AI_OUTPUT_READ = "ai_output.read"  # individual outputs: patient data
    AI_FEEDBACK = "ai_output.feedback"
    AI_USAGE_READ = "ai_output.usage"  # per-model volume and agreement, no patient data
    AI_MODEL_MANAGE = "ai_model.manage"  # register, validate, activate and roll back model versions
    AI_INFER = "ai.infer"  # call a model through the inference API (EMR, PACS, front ends)
    DEAD_LETTER_MANAGE = "dead_letter.manage"
    DEVICE_MANAGE = "device.manage"  # register bedside devices and place them at beds
    ACCOUNT_SELF = "account.self"  # change one's own password and second factor
    TRIAGE = "triage.use"  # a triage interview: a patient for herself, a clinician at the desk
    # A consultation's whole record as FHIR: its participants (checked per consultation) and auditors.
    CONSULT_RECORD_READ = "consult.record.read"
    # The regulator's read-only, minimised export of consultations and their audit trail (TC-12, SEC-10).
    CONSULT_REGULATOR_EXPORT = "consult.regulator_export"


_CLINICIAN = {
    Permission.PATIENT_READ,
    Permission.CLINICAL_READ,
    Permission.CLINICAL_WRITE,
    Permission.BREAK_GLASS,
    Permission.DIRECTORY_READ,
    Permission.AI_OUTPUT_READ,
    Permission.AI_FEEDBACK,
    Permission.AI_USAGE_READ,
    Permission.AI_INFER,
    Permission.ACCOUNT_SELF,
    Permission.TRIAGE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.NURSE: frozenset(_CLINICIAN | {Permission.ENCOUNTER_WRITE, Permission.DEVICE_MANAGE}),
    Role.PHYSICIAN: frozenset(
        _CLINICIAN | {Permission.PATIENT_WRITE, Permission.ENCOUNTER_WRITE, Permission.CONSULT_RECORD_READ}
    ),
    Role.RADIOLOGIST: frozenset(_CLINICIAN),
    Role.CONSULTANT: frozenset(_CLINICIAN - {Permission.BREAK_GLASS} | {Permission.CONSULT_RECORD_READ}),
    # Admin runs the institution's registration and IT: demographics, admissions, accounts; no charts.
    Role.ADMIN: frozenset(
        {
            Permission.PATIENT_READ,
            Permission.PATIENT_WRITE,
            Permission.ENCOUNTER_WRITE,
            Permission.DIRECTORY_READ,
            Permission.USER_READ,
            Permission.USER_MANAGE,
            Permission.DEAD_LETTER_MANAGE,
            Permission.DEVICE_MANAGE,
            Permission.AI_USAGE_READ,
            Permission.AI_MODEL_MANAGE,
            Permission.ACCOUNT_SELF,
        }
    ),
    # Auditor sees the audit trail and who the users are, never the charts themselves.
    Role.AUDITOR: frozenset(
        {
            Permission.AUDIT_READ,
            Permission.USER_READ,
            Permission.DIRECTORY_READ,
            Permission.AI_USAGE_READ,
            Permission.ACCOUNT_SELF,
            Permission.CONSULT_RECORD_READ,
        }
    ),
    # The regulator's own credentials reach the export only: no charts, no directory, no audit trail.
    # ACCOUNT_SELF (as every role) lets it rotate its own password and second factor and revoke a token.
    Role.REGULATOR: frozenset({Permission.CONSULT_REGULATOR_EXPORT, Permission.ACCOUNT_SELF}),
    # A patient reads her own record (the care relationship allows only herself) and its access log.
    Role.PATIENT: frozenset(
        {Permission.PATIENT_READ, Permission.OWN_RECORD_READ, Permission.ACCOUNT_SELF, Permission.TRIAGE}
    ),
}


def has_permission(role: str, permission: Permission) -> bool:
    try:
        return permission in ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False


# HL7 v3 PurposeOfUse codes written into every audit record.
PURPOSE_BY_ROLE: dict[str, str] = {
    Role.NURSE: "TREAT",
    Role.PHYSICIAN: "TREAT",
    Role.RADIOLOGIST: "TREAT",
    Role.CONSULTANT: "TREAT",
    Role.ADMIN: "HOPERAT",
    Role.AUDITOR: "HSYSADMIN",
    Role.PATIENT: "PATRQT",
    Role.REGULATOR: "HCOMPL",  # health compliance: supervision by the health authority
}
PURPOSE_EMERGENCY = "ETREAT"
