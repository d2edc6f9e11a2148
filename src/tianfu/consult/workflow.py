"""The consultation (远程会诊) state machine: FHIR Task statuses, Chinese business statuses, every gate.

One institution invites another to give an expert opinion on its own patient (``consult-and-platform.md``
§1–§4). The states are FHIR R4 Task statuses; ``businessStatus`` carries the Chinese names of the
reference table (§4). **Every transition lives in one table**, :data:`TRANSITIONS`, keyed by (status,
action), each entry naming who may fire it, its gates and the side effects the adapters must carry
out; :func:`decide` is the one dispatcher.

How to use it: build a :class:`Consultation` snapshot (plain frozen dataclasses: the request, the
agreement, the consents, the assigned consultant, the signed opinion …) and a :class:`Command` (action,
actor, time, reason or payload), then call :func:`decide`. The :class:`Outcome` lists *every* failed
gate as a :class:`Refusal` (code, requirement id, English and Chinese message) and, when nothing
failed, the next snapshot and the :class:`Effect` list. A refusal is a normal answer and never raises;
only programming errors do (a time without a time zone).

Gates (requirement ids from the reference):

- submit: the inviting physician is licensed at the inviting institution; an agreement between the
  two institutions is active (TC-01); the clinical informed consent and the PIPL separate consent for
  sharing with the invited institution are both signed and not withdrawn (TC-02, PIPL art. 29); the
  invitation is complete — reason, purpose, time frame, case summary, wanted specialty and title (TC-03).
- consents are re-checked on every step that moves the patient's data forward (receive, accept,
  start, resume, complete): a withdrawn consent (PIPL art. 15) stops progress, while reject, cancel,
  fail and entered-in-error stay possible so the consultation can be closed.
- accept: the agreement is still active; the assigned consultant belongs to the invited institution,
  is licensed, has ≥ 3 years of independent practice on that day and practises the wanted specialty at
  the wanted title or above (TC-05, TC-03). reject: a reason (TC-04).
- start: in a synchronous consultation, a scheduled time and an accompanying licensed physician of the
  inviting institution (TC-06). hold: a reason (fall back to store-and-forward, TC-11).
- complete: a final opinion signed by the assigned consultant whose signature verified (TC-07, SEC-07),
  never an AI suggestion (TC-08, TC-15).
- record decision: only after completion, only by the inviting physician, never by the consultant,
  once (TC-08). Cancel, fail, entered-in-error: a reason; entered-in-error needs the records officer
  (privileged) and keeps the original.

Who acts is a :class:`Capacity` derived from the actor and the snapshot (SEC-01: role *and*
relationship to this consultation). Response deadlines (TC-04) are computed by
:func:`response_schedule` from an :class:`SlaPolicy`.

Pure: no I/O, no clock, no database, no framework. The adapters persist snapshots, write the
Provenance and AuditEvent of every transition, and carry out the effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from types import MappingProxyType

from tianfu.consult.signing import SignedVersion, Verification

__all__ = [
    "BUSINESS_STATUS",
    "CHINA_TIME",
    "DECIDED_BUSINESS_STATUS",
    "DEFAULT_SLA_POLICY",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "Action",
    "Actor",
    "Agreement",
    "AgreementStatus",
    "Capacity",
    "Clinician",
    "Command",
    "ConsentKind",
    "ConsentRecord",
    "ConsentSigner",
    "ConsultMode",
    "Consultation",
    "Decision",
    "Effect",
    "Invitation",
    "LiveSession",
    "OpinionOrigin",
    "OpinionRecord",
    "Outcome",
    "Priority",
    "ProfessionalTitle",
    "Refusal",
    "ReportStatus",
    "ResponseTimes",
    "SlaPolicy",
    "SlaSchedule",
    "SlaStage",
    "SlaState",
    "StaffRole",
    "StatusChange",
    "TaskStatus",
    "TimeFrame",
    "Transition",
    "available_actions",
    "business_status",
    "capacities",
    "check_consultant",
    "decide",
    "practice_years_completed",
    "response_schedule",
]

# China has one time zone and no daylight saving: "on that day" means the day in Beijing time.
CHINA_TIME = timezone(timedelta(hours=8), "CST")
MIN_INDEPENDENT_PRACTICE_YEARS = 3  # 互联网诊疗管理办法 art. 25 (TC-05)


# ---- vocabulary ----------------------------------------------------------------------------------


class TaskStatus(StrEnum):
    """FHIR R4 task-status codes in use (``ready`` is not: acceptance goes straight to scheduling)."""

    DRAFT = "draft"
    REQUESTED = "requested"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"


# Task.businessStatus per status (§4 table). Draft has no name there; 草稿 is ours.
BUSINESS_STATUS: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.DRAFT: "草稿",
        TaskStatus.REQUESTED: "已提交申请",
        TaskStatus.RECEIVED: "受邀方已接收/审核中",
        TaskStatus.ACCEPTED: "已接受/待排期",
        TaskStatus.REJECTED: "已拒绝",
        TaskStatus.IN_PROGRESS: "会诊中",
        TaskStatus.ON_HOLD: "暂停",
        TaskStatus.COMPLETED: "已出具意见",
        TaskStatus.FAILED: "会诊失败",
        TaskStatus.CANCELLED: "已取消",
        TaskStatus.ENTERED_IN_ERROR: "录入错误",
    }
)
# After completion, once the inviting physician recorded the decision (TC-08); ServiceRequest completes.
DECIDED_BUSINESS_STATUS = "邀请方已采纳/处理"

TERMINAL_STATUSES = frozenset(
    {
        TaskStatus.REJECTED,
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.ENTERED_IN_ERROR,
    }
)


class Action(StrEnum):
    SUBMIT = "submit"
    RECEIVE = "receive"
    ACCEPT = "accept"
    REJECT = "reject"
    START = "start"
    HOLD = "hold"
    RESUME = "resume"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    MARK_ENTERED_IN_ERROR = "mark-entered-in-error"
    RECORD_DECISION = "record-decision"

    @property
    def zh(self) -> str:
        return _ACTION_ZH[self]


_ACTION_ZH: Mapping[Action, str] = MappingProxyType(
    {
        Action.SUBMIT: "提交申请",
        Action.RECEIVE: "接收",
        Action.ACCEPT: "接受",
        Action.REJECT: "拒绝",
        Action.START: "开始会诊",
        Action.HOLD: "暂停",
        Action.RESUME: "恢复",
        Action.COMPLETE: "出具意见",
        Action.FAIL: "标记会诊失败",
        Action.CANCEL: "取消",
        Action.MARK_ENTERED_IN_ERROR: "标记为录入错误",
        Action.RECORD_DECISION: "记录处理决定",
    }
)


class Priority(StrEnum):
    """FHIR request-priority."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"
    STAT = "stat"


class ConsultMode(StrEnum):
    STORE_AND_FORWARD = "store-and-forward"  # messages and documents only (TC-11 fallback)
    SYNCHRONOUS = "synchronous"  # a scheduled live session (Encounter class VR)


class ProfessionalTitle(IntEnum):
    """技术职务 (clinical professional title), ordered by seniority."""

    RESIDENT = 1  # 住院医师
    ATTENDING = 2  # 主治医师
    ASSOCIATE_CHIEF = 3  # 副主任医师
    CHIEF = 4  # 主任医师

    @property
    def zh(self) -> str:
        return ("住院医师", "主治医师", "副主任医师", "主任医师")[self.value - 1]


class ConsentKind(StrEnum):
    """The two consents of a consultation, named by their FHIR R4 ``Consent.scope`` code."""

    TREATMENT = "treatment"  # 远程医疗服务知情同意书 (TC-02)
    DATA_SHARING = "patient-privacy"  # PIPL separate consent to share with the invited institution

    @property
    def key(self) -> str:
        return "treatment" if self is ConsentKind.TREATMENT else "data_sharing"


class ConsentSigner(StrEnum):
    PATIENT = "patient"
    GUARDIAN = "guardian"  # minors under 14 (PIPL art. 31) and patients without capacity
    CLOSE_RELATIVE = "close-relative"  # when telling the patient is inappropriate (TC-02)


class AgreementStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class StaffRole(StrEnum):
    """What a person does in consultations; adapters map kernel roles onto these."""

    PHYSICIAN = "physician"  # may invite for his own patients
    CONSULTANT = "consultant"  # may be invited, accept for himself, write and sign opinions
    COORDINATOR = "coordinator"  # 会诊管理员 of an institution: receives, assigns, accepts, rejects
    RECORDS_OFFICER = "records-officer"  # 医务科/病案: the privileged role for entered-in-error


class Capacity(StrEnum):
    """The capacity in which an actor acts on one consultation: role and relationship (SEC-01)."""

    REQUESTER = "requester"  # the inviting physician who owns the request
    INVITED_COORDINATOR = "invited-coordinator"
    INVITED_CONSULTANT = "invited-consultant"  # any consultant of the invited institution
    ASSIGNED_CONSULTANT = "assigned-consultant"
    RECORDS_OFFICER = "records-officer"  # of either participating institution


class ReportStatus(StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"


class OpinionOrigin(StrEnum):
    CLINICIAN = "clinician"
    AI_SUGGESTION = "ai-suggestion"  # a model's output: shown as such, never the signed opinion


class Effect(StrEnum):
    """What the adapters must do after a transition (besides its Provenance and AuditEvent)."""

    NOTIFY_INVITING_SIDE = "notify-inviting-side"
    NOTIFY_INVITED_SIDE = "notify-invited-side"
    NOTIFY_ASSIGNED_CONSULTANT = "notify-assigned-consultant"
    NOTIFY_PLATFORM = "notify-platform"  # only when a 第三方平台 matched the request (TC-04)
    SCHEDULE_RESPONSE_TIMERS = "schedule-response-timers"  # (re)arm from response_schedule (TC-04)
    CANCEL_RESPONSE_TIMERS = "cancel-response-timers"
    FALL_BACK_TO_STORE_AND_FORWARD = "fall-back-to-store-and-forward"  # TC-11
    ARCHIVE_BOTH_SIDES = "archive-both-sides"  # signed report and consents to both stores (TC-09)
    COMPLETE_SERVICE_REQUEST = "complete-service-request"  # after the inviting side's decision (§4)


# ---- the snapshot --------------------------------------------------------------------------------


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry a time zone, got {moment.isoformat()}")


def _day(moment: datetime) -> date:
    return moment.astimezone(CHINA_TIME).date()


def practice_years_completed(since: date, years: int, on: date) -> bool:
    """True when ``years`` full years of practice since ``since`` are complete on ``on``.

    The anniversary of 29 February in a common year is 1 March: the period is never shortened.
    """
    try:
        anniversary = since.replace(year=since.year + years)
    except ValueError:  # 29 February → no such day that year
        anniversary = date(since.year + years, 3, 1)
    return on >= anniversary


@dataclass(frozen=True)
class Clinician:
    """A physician as the qualification checks see him (Practitioner.qualification, PractitionerRole)."""

    practitioner_id: str
    institution_id: str
    licence_number: str = ""  # 医师执业证书编号; blank means not licensed
    licence_valid_until: date | None = None  # None: no expiry on record
    licence_suspended: bool = False
    independent_practice_since: date | None = None  # first day of independent clinical work
    specialties: frozenset[str] = frozenset()  # registered practice scope (执业范围), codes
    title: ProfessionalTitle | None = None

    def licensed_on(self, day: date) -> bool:
        return (
            bool(self.licence_number.strip())
            and not self.licence_suspended
            and (self.licence_valid_until is None or day <= self.licence_valid_until)
        )


@dataclass(frozen=True)
class Agreement:
    """A cooperation agreement (TC-01, FHIR Contract); a 第三方平台 may be one more party."""

    agreement_id: str
    institution_ids: frozenset[str]
    status: AgreementStatus
    valid_from: datetime
    valid_until: datetime | None = None  # exclusive; None: open-ended

    def in_force_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)


@dataclass(frozen=True)
class ConsentRecord:
    kind: ConsentKind
    patient_id: str
    granted_at: datetime
    signed_form_ref: str  # the written, signed form (scan or e-signed document); blank = not written
    signed_by: ConsentSigner = ConsentSigner.PATIENT
    recipient_institution_id: str | None = None  # DATA_SHARING: the institution that may receive the data
    withdrawn_at: datetime | None = None

    def withdrawn_by(self, moment: datetime) -> bool:
        return self.withdrawn_at is not None and self.withdrawn_at <= moment


@dataclass(frozen=True)
class TimeFrame:
    """时间安排: when the inviting side needs the consultation to happen or the opinion to arrive."""

    earliest: datetime
    latest: datetime


@dataclass(frozen=True)
class Invitation:
    """The mandated invitation content (TC-03). Blank text counts as missing, so drafts may be partial."""

    reason: str = ""  # 邀请事由
    purpose: str = ""  # 目的
    case_summary: str = ""  # 患者相关病历摘要: a summary, not the whole chart (SEC-09)
    specialty: str = ""  # wanted specialty, a code matching Clinician.specialties
    title: ProfessionalTitle | None = None  # wanted 技术职务任职资格 (minimum)
    time_frame: TimeFrame | None = None  # 时间安排
    priority: Priority = Priority.ROUTINE


@dataclass(frozen=True)
class LiveSession:
    """The synchronous part: an Appointment and who accompanies the patient (TC-06)."""

    scheduled_at: datetime | None = None
    accompanying_physician: Clinician | None = None


@dataclass(frozen=True)
class OpinionRecord:
    """The opinion report as the completion gate sees it; the adapter verifies it on read (SEC-07)."""

    document_id: str
    version: int
    content_hash: str
    status: ReportStatus
    origin: OpinionOrigin
    signer_id: str | None  # None: not signed
    signature_verified: bool

    @classmethod
    def from_signed(
        cls,
        signed: SignedVersion,
        verification: Verification,
        *,
        status: ReportStatus = ReportStatus.FINAL,
        origin: OpinionOrigin = OpinionOrigin.CLINICIAN,
    ) -> OpinionRecord:
        """Build from a signed version and its verification (which must be of this very version)."""
        matches = (
            verification.content_hash == signed.signature.content_hash
            and verification.signer_id == signed.signature.signer_id
        )
        return cls(
            document_id=signed.document_id,
            version=signed.version,
            content_hash=signed.signature.content_hash,
            status=status,
            origin=origin,
            signer_id=signed.signature.signer_id,
            signature_verified=verification.valid and matches,
        )


@dataclass(frozen=True)
class Decision:
    """The inviting physician's own decision, referring to the opinion (TC-08)."""

    decided_by: str
    decided_at: datetime
    text: str


@dataclass(frozen=True)
class StatusChange:
    action: Action
    source: TaskStatus
    target: TaskStatus
    actor_id: str
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class Consultation:
    """Everything the gates read: a plain, immutable snapshot built by the adapters."""

    consultation_id: str
    patient_id: str
    inviting_institution_id: str
    invited_institution_id: str
    requester: Clinician  # the inviting physician
    created_at: datetime
    invitation: Invitation = field(default_factory=Invitation)
    status: TaskStatus = TaskStatus.DRAFT
    mode: ConsultMode = ConsultMode.STORE_AND_FORWARD
    agreement: Agreement | None = None
    consents: tuple[ConsentRecord, ...] = ()
    platform_id: str | None = None  # the 第三方平台 that matched the request, if any
    assigned_consultant: Clinician | None = None
    live_session: LiveSession | None = None
    opinion: OpinionRecord | None = None
    decision: Decision | None = None
    status_reason: str | None = None  # Task.statusReason of the latest transition that needs one
    submitted_at: datetime | None = None
    received_at: datetime | None = None
    responded_at: datetime | None = None  # accepted or rejected
    history: tuple[StatusChange, ...] = ()


def business_status(consultation: Consultation) -> str:
    """Task.businessStatus: the Chinese name of the state, 邀请方已采纳/处理 once the decision is in."""
    if consultation.status is TaskStatus.COMPLETED and consultation.decision is not None:
        return DECIDED_BUSINESS_STATUS
    return BUSINESS_STATUS[consultation.status]


# ---- commands, refusals, outcomes ----------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    user_id: str  # the practitioner id for clinicians
    institution_id: str
    roles: frozenset[StaffRole]


@dataclass(frozen=True)
class Command:
    action: Action
    actor: Actor
    at: datetime
    reason: str | None = None  # reject, hold, fail, cancel, entered-in-error
    consultant: Clinician | None = None  # accept: whom the invited side assigns
    decision: str | None = None  # record-decision: the inviting physician's decision


@dataclass(frozen=True)
class Refusal:
    """One failed gate: a stable code for programs, the requirement it enforces, and both messages."""

    code: str
    requirement: str
    message_en: str
    message_zh: str


# code: (requirement, English, Chinese). Placeholders are filled by _refuse.
_MESSAGES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "transition.not_allowed": (
            "§4",
            "Cannot {action} a consultation that is {status}.",
            "会诊当前为「{status_zh}」，不能{action_zh}。",
        ),
        "actor.not_permitted": (
            "SEC-01",
            "You may not {action} this consultation.",
            "您无权对此会诊执行「{action_zh}」。",
        ),
        "requester.unlicensed": (
            "§4",
            "The inviting physician has no valid practising licence.",
            "邀请医师无有效执业证书。",
        ),
        "requester.other_institution": (
            "§4",
            "The inviting physician does not belong to the inviting institution.",
            "邀请医师不属于邀请方机构。",
        ),
        "institutions.same": (
            "TC-01",
            "The inviting and the invited institution must differ.",
            "邀请方与受邀方不能是同一机构。",
        ),
        "agreement.missing": (
            "TC-01",
            "There is no cooperation agreement between the two institutions.",
            "两家机构之间没有远程医疗合作协议。",
        ),
        "agreement.other_parties": (
            "TC-01",
            "The cooperation agreement does not cover both institutions.",
            "合作协议未涵盖双方机构。",
        ),
        "agreement.not_active": (
            "TC-01",
            "The cooperation agreement is {agreement_status}.",
            "合作协议状态为「{agreement_status}」，不可用。",
        ),
        "agreement.not_in_force": (
            "TC-01",
            "The cooperation agreement is not in force on this date.",
            "合作协议在当前日期不在有效期内。",
        ),
        "consent.treatment.missing": (
            "TC-02",
            "The patient's informed consent to remote services is missing.",
            "缺少患者的远程医疗服务知情同意书。",
        ),
        "consent.treatment.withdrawn": (
            "TC-02",
            "The patient has withdrawn the informed consent to remote services.",
            "患者已撤回远程医疗服务知情同意。",
        ),
        "consent.treatment.unsigned": (
            "TC-02",
            "The informed consent has no signed written form.",
            "知情同意书没有签署的书面文件。",
        ),
        "consent.data_sharing.missing": (
            "TC-02",
            "The patient's separate consent to share health data with the invited institution is missing.",
            "缺少患者向受邀方机构提供健康信息的单独同意。",
        ),
        "consent.data_sharing.withdrawn": (
            "TC-02",
            "The patient has withdrawn the consent to share health data with the invited institution.",
            "患者已撤回向受邀方机构提供健康信息的同意。",
        ),
        "consent.data_sharing.unsigned": (
            "TC-02",
            "The data-sharing consent has no signed written form.",
            "健康信息共享同意没有签署的书面文件。",
        ),
        "invitation.reason_missing": ("TC-03", "The reason for the invitation is missing.", "缺少邀请事由。"),
        "invitation.purpose_missing": ("TC-03", "The purpose is missing.", "缺少会诊目的。"),
        "invitation.case_summary_missing": ("TC-03", "The case summary is missing.", "缺少患者病历摘要。"),
        "invitation.specialty_missing": (
            "TC-03",
            "The wanted specialty is missing.",
            "缺少拟邀请医师的专业。",
        ),
        "invitation.title_missing": (
            "TC-03",
            "The wanted professional title is missing.",
            "缺少拟邀请医师的技术职务任职资格。",
        ),
        "invitation.time_frame_missing": ("TC-03", "The time frame is missing.", "缺少时间安排。"),
        "invitation.time_frame_invalid": (
            "TC-03",
            "The time frame ends before it begins.",
            "时间安排的结束时间早于开始时间。",
        ),
        "invitation.time_frame_past": (
            "TC-03",
            "The time frame has already ended.",
            "时间安排已过期。",
        ),
        "reason.missing": (
            "{requirement}",
            "A reason is required to {action}.",
            "{action_zh}须填写原因。",
        ),
        "consultant.missing": (
            "TC-05",
            "Accepting needs a consultant to be assigned.",
            "接受会诊须指定会诊医师。",
        ),
        "consultant.not_self": (
            "SEC-01",
            "A consultant may accept only for himself; a coordinator assigns others.",
            "会诊医师只能为本人接受会诊，指派他人须由会诊管理员操作。",
        ),
        "consultant.is_requester": (
            "TC-08",
            "The inviting physician cannot be the consultant on his own request.",
            "邀请医师不能担任本人申请的会诊医师。",
        ),
        "consultant.other_institution": (
            "TC-05",
            "The consultant does not belong to the invited institution.",
            "会诊医师不属于受邀方机构。",
        ),
        "consultant.unlicensed": (
            "TC-05",
            "The consultant has no valid practising licence on {day}.",
            "会诊医师在{day}无有效执业证书。",
        ),
        "consultant.experience_unknown": (
            "TC-05",
            "The consultant's start of independent practice is not on record.",
            "无会诊医师独立执业起始日期记录。",
        ),
        "consultant.experience_short": (
            "TC-05",
            "The consultant has less than {years} years of independent practice on {day}.",
            "会诊医师截至{day}独立执业不满{years}年。",
        ),
        "consultant.specialty_mismatch": (
            "TC-05",
            "The consultant does not practise the wanted specialty {specialty}.",
            "会诊医师的执业范围不包括所需专业「{specialty}」。",
        ),
        "consultant.title_below_requested": (
            "TC-03",
            "The consultant's title is below the wanted {title}.",
            "会诊医师职称低于要求的{title_zh}。",
        ),
        "session.not_scheduled": (
            "TC-06",
            "A synchronous consultation needs a scheduled time.",
            "同步会诊须先预约时间。",
        ),
        "session.no_accompanying_physician": (
            "TC-06",
            "A licensed physician of the inviting institution must accompany the patient.",
            "须有邀请方的执业医师陪同患者。",
        ),
        "session.accompanying_physician_invalid": (
            "TC-06",
            "The accompanying physician must be a licensed physician of the inviting institution.",
            "陪同医师须为邀请方机构的执业医师。",
        ),
        "opinion.missing": ("TC-07", "There is no opinion report.", "尚无会诊意见报告。"),
        "opinion.not_final": ("TC-07", "The opinion report is not final.", "会诊意见报告尚未定稿。"),
        "opinion.unsigned": ("TC-07", "The opinion report is not signed.", "会诊意见报告尚未签名。"),
        "opinion.signed_by_other": (
            "TC-07",
            "The opinion report must be signed by the assigned consultant.",
            "会诊意见报告须由指定的会诊医师签名。",
        ),
        "opinion.signature_invalid": (
            "SEC-07",
            "The opinion report's electronic signature does not verify.",
            "会诊意见报告的电子签名验证失败。",
        ),
        "opinion.ai_suggestion": (
            "TC-08",
            "An AI suggestion can never be the signed opinion (TC-08, TC-15).",
            "AI建议不能作为签名的会诊意见（TC-08、TC-15）。",
        ),
        "decision.text_missing": (
            "TC-08",
            "The decision taken is missing.",
            "缺少邀请方医师的处理决定。",
        ),
        "decision.already_recorded": (
            "TC-08",
            "The decision has already been recorded.",
            "处理决定已记录。",
        ),
        "decision.by_consultant": (
            "TC-08",
            "The consultant cannot record the inviting physician's decision.",
            "会诊医师不能代替邀请方医师记录处理决定。",
        ),
    }
)

# Which requirement a missing reason violates, per action.
_REASON_REQUIREMENT: Mapping[Action, str] = MappingProxyType(
    {
        Action.REJECT: "TC-04",
        Action.HOLD: "TC-11",
        Action.FAIL: "§4",
        Action.CANCEL: "§4",
        Action.MARK_ENTERED_IN_ERROR: "§4",
    }
)


def _refuse(code: str, **params: object) -> Refusal:
    requirement, english, chinese = _MESSAGES[code]
    values = {key: str(value) for key, value in params.items()}
    return Refusal(
        code=code,
        requirement=requirement.format(**values),
        message_en=english.format(**values),
        message_zh=chinese.format(**values),
    )


@dataclass(frozen=True)
class Outcome:
    """What :func:`decide` answers. ``consultation`` is the next snapshot when allowed, else unchanged."""

    action: Action
    source: TaskStatus
    target: TaskStatus | None  # None: no such transition from ``source``
    refusals: tuple[Refusal, ...]
    consultation: Consultation
    effects: tuple[Effect, ...]

    @property
    def allowed(self) -> bool:
        return not self.refusals

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(refusal.code for refusal in self.refusals)

    @property
    def business_status(self) -> str:
        return business_status(self.consultation)


# ---- capacities ----------------------------------------------------------------------------------


def capacities(consultation: Consultation, actor: Actor) -> frozenset[Capacity]:
    """The capacities in which ``actor`` may act on ``consultation`` (role and relationship, SEC-01)."""
    found: set[Capacity] = set()
    invited = actor.institution_id == consultation.invited_institution_id
    if (
        StaffRole.PHYSICIAN in actor.roles
        and actor.user_id == consultation.requester.practitioner_id
        and actor.institution_id == consultation.inviting_institution_id
    ):
        found.add(Capacity.REQUESTER)
    if invited and StaffRole.COORDINATOR in actor.roles:
        found.add(Capacity.INVITED_COORDINATOR)
    if invited and StaffRole.CONSULTANT in actor.roles:
        found.add(Capacity.INVITED_CONSULTANT)
        assigned = consultation.assigned_consultant
        if assigned is not None and actor.user_id == assigned.practitioner_id:
            found.add(Capacity.ASSIGNED_CONSULTANT)
    if StaffRole.RECORDS_OFFICER in actor.roles and actor.institution_id in (
        consultation.inviting_institution_id,
        consultation.invited_institution_id,
    ):
        found.add(Capacity.RECORDS_OFFICER)
    return frozenset(found)


# ---- gates ---------------------------------------------------------------------------------------

Gate = Callable[[Consultation, Command], list[Refusal]]


def _requester_licensed(consultation: Consultation, command: Command) -> list[Refusal]:
    requester = consultation.requester
    refusals = []
    if requester.institution_id != consultation.inviting_institution_id:
        refusals.append(_refuse("requester.other_institution"))
    if not requester.licensed_on(_day(command.at)):
        refusals.append(_refuse("requester.unlicensed"))
    return refusals


def _agreement_active(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-01: requests only between two institutions with an active cooperation agreement."""
    if consultation.inviting_institution_id == consultation.invited_institution_id:
        return [_refuse("institutions.same")]
    agreement = consultation.agreement
    if agreement is None:
        return [_refuse("agreement.missing")]
    refusals = []
    parties = {consultation.inviting_institution_id, consultation.invited_institution_id}
    if not parties <= agreement.institution_ids:
        refusals.append(_refuse("agreement.other_parties"))
    if agreement.status is not AgreementStatus.ACTIVE:
        refusals.append(_refuse("agreement.not_active", agreement_status=agreement.status.value))
    if not agreement.in_force_at(command.at):
        refusals.append(_refuse("agreement.not_in_force"))
    return refusals


def _consent_refusal(consultation: Consultation, kind: ConsentKind, at: datetime) -> Refusal | None:
    candidates = [
        consent
        for consent in consultation.consents
        if consent.kind is kind
        and consent.patient_id == consultation.patient_id
        and consent.granted_at <= at
        and (
            kind is not ConsentKind.DATA_SHARING
            or consent.recipient_institution_id == consultation.invited_institution_id
        )
    ]
    if any(c.signed_form_ref.strip() and not c.withdrawn_by(at) for c in candidates):
        return None
    if any(c.withdrawn_by(at) for c in candidates):
        return _refuse(f"consent.{kind.key}.withdrawn")
    if candidates:
        return _refuse(f"consent.{kind.key}.unsigned")
    return _refuse(f"consent.{kind.key}.missing")


def _consents_active(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-02 and PIPL art. 29: both consents signed in writing and not withdrawn (art. 15) at this time."""
    found = (_consent_refusal(consultation, kind, command.at) for kind in ConsentKind)
    return [refusal for refusal in found if refusal is not None]


def _invitation_complete(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-03: reason, purpose, time frame, case summary, wanted specialty and title."""
    invitation = consultation.invitation
    refusals = [
        _refuse(f"invitation.{name}_missing")
        for name, value in (
            ("reason", invitation.reason),
            ("purpose", invitation.purpose),
            ("case_summary", invitation.case_summary),
            ("specialty", invitation.specialty),
        )
        if not value.strip()
    ]
    if invitation.title is None:
        refusals.append(_refuse("invitation.title_missing"))
    frame = invitation.time_frame
    if frame is None:
        refusals.append(_refuse("invitation.time_frame_missing"))
    elif frame.latest <= frame.earliest:
        refusals.append(_refuse("invitation.time_frame_invalid"))
    elif frame.latest <= command.at:
        refusals.append(_refuse("invitation.time_frame_past"))
    return refusals


def _reason_given(consultation: Consultation, command: Command) -> list[Refusal]:
    if command.reason is not None and command.reason.strip():
        return []
    requirement = _REASON_REQUIREMENT.get(command.action, "§4")
    return [
        _refuse(
            "reason.missing",
            requirement=requirement,
            action=command.action.value,
            action_zh=command.action.zh,
        )
    ]


def check_consultant(
    consultant: Clinician, invitation: Invitation, invited_institution_id: str, on: date
) -> tuple[Refusal, ...]:
    """TC-05 (and the wanted title of TC-03): may ``consultant`` be assigned on day ``on``?

    Public so the adapters can offer only assignable consultants.
    """
    refusals = []
    if consultant.institution_id != invited_institution_id:
        refusals.append(_refuse("consultant.other_institution"))
    if not consultant.licensed_on(on):
        refusals.append(_refuse("consultant.unlicensed", day=on.isoformat()))
    since = consultant.independent_practice_since
    if since is None:
        refusals.append(_refuse("consultant.experience_unknown"))
    elif not practice_years_completed(since, MIN_INDEPENDENT_PRACTICE_YEARS, on):
        refusals.append(
            _refuse("consultant.experience_short", years=MIN_INDEPENDENT_PRACTICE_YEARS, day=on.isoformat())
        )
    wanted = invitation.specialty.strip()
    if wanted.casefold() not in {specialty.strip().casefold() for specialty in consultant.specialties}:
        refusals.append(_refuse("consultant.specialty_mismatch", specialty=wanted))
    if invitation.title is not None and (consultant.title is None or consultant.title < invitation.title):
        refusals.append(
            _refuse(
                "consultant.title_below_requested",
                title=invitation.title.name.lower().replace("_", " "),
                title_zh=invitation.title.zh,
            )
        )
    return tuple(refusals)


def _consultant_qualified(consultation: Consultation, command: Command) -> list[Refusal]:
    consultant = command.consultant
    if consultant is None:
        return [_refuse("consultant.missing")]
    refusals = []
    # A coordinator assigns anyone qualified; a consultant acting alone may only take it on himself.
    acting_as = capacities(consultation, command.actor)
    if Capacity.INVITED_COORDINATOR not in acting_as and consultant.practitioner_id != command.actor.user_id:
        refusals.append(_refuse("consultant.not_self"))
    # A physician working at both institutions (多点执业) cannot give the opinion on his own request.
    if consultant.practitioner_id == consultation.requester.practitioner_id:
        refusals.append(_refuse("consultant.is_requester"))
    refusals.extend(
        check_consultant(
            consultant, consultation.invitation, consultation.invited_institution_id, _day(command.at)
        )
    )
    return refusals


def _live_session_ready(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-06: a live session is booked and a licensed inviting-side physician accompanies the patient."""
    if consultation.mode is not ConsultMode.SYNCHRONOUS:
        return []  # store-and-forward needs neither (TC-11)
    session = consultation.live_session or LiveSession()
    refusals = []
    if session.scheduled_at is None:
        refusals.append(_refuse("session.not_scheduled"))
    companion = session.accompanying_physician
    if companion is None:
        refusals.append(_refuse("session.no_accompanying_physician"))
    elif companion.institution_id != consultation.inviting_institution_id or not companion.licensed_on(
        _day(command.at)
    ):
        refusals.append(_refuse("session.accompanying_physician_invalid"))
    return refusals


def _opinion_signed(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-07 / SEC-07: a final report signed by the assigned consultant, verified; TC-08/TC-15: not AI."""
    opinion = consultation.opinion
    if opinion is None:
        return [_refuse("opinion.missing")]
    refusals = []
    if opinion.origin is not OpinionOrigin.CLINICIAN:
        refusals.append(_refuse("opinion.ai_suggestion"))
    if opinion.status is not ReportStatus.FINAL:
        refusals.append(_refuse("opinion.not_final"))
    if opinion.signer_id is None:
        refusals.append(_refuse("opinion.unsigned"))
        return refusals
    assigned = consultation.assigned_consultant
    if assigned is None or opinion.signer_id != assigned.practitioner_id:
        refusals.append(_refuse("opinion.signed_by_other"))
    if not opinion.signature_verified:
        refusals.append(_refuse("opinion.signature_invalid"))
    return refusals


def _decision_recordable(consultation: Consultation, command: Command) -> list[Refusal]:
    """TC-08: the inviting physician's own act, once, never by the consultant."""
    refusals = []
    if command.decision is None or not command.decision.strip():
        refusals.append(_refuse("decision.text_missing"))
    if consultation.decision is not None:
        refusals.append(_refuse("decision.already_recorded"))
    assigned = consultation.assigned_consultant
    if assigned is not None and command.actor.user_id == assigned.practitioner_id:
        refusals.append(_refuse("decision.by_consultant"))
    return refusals


# ---- the transition table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    source: TaskStatus
    action: Action
    target: TaskStatus
    actors: frozenset[Capacity]
    gates: tuple[Gate, ...]
    effects: tuple[Effect, ...]


_REQUESTER = frozenset({Capacity.REQUESTER})
_INVITED = frozenset({Capacity.INVITED_COORDINATOR, Capacity.INVITED_CONSULTANT})
_PARTICIPANTS = frozenset({Capacity.REQUESTER, Capacity.ASSIGNED_CONSULTANT})
_CLOSING_EFFECTS = (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_INVITED_SIDE, Effect.CANCEL_RESPONSE_TIMERS)


def _transitions() -> tuple[Transition, ...]:
    table = [
        Transition(
            TaskStatus.DRAFT,
            Action.SUBMIT,
            TaskStatus.REQUESTED,
            _REQUESTER,
            (_requester_licensed, _agreement_active, _consents_active, _invitation_complete),
            (Effect.NOTIFY_INVITED_SIDE, Effect.NOTIFY_PLATFORM, Effect.SCHEDULE_RESPONSE_TIMERS),
        ),
        Transition(
            TaskStatus.REQUESTED,
            Action.RECEIVE,
            TaskStatus.RECEIVED,
            _INVITED,
            (_consents_active,),
            (Effect.NOTIFY_INVITING_SIDE, Effect.SCHEDULE_RESPONSE_TIMERS),
        ),
    ]
    for source in (TaskStatus.REQUESTED, TaskStatus.RECEIVED):
        table += [
            Transition(
                source,
                Action.ACCEPT,
                TaskStatus.ACCEPTED,
                _INVITED,
                (_agreement_active, _consents_active, _consultant_qualified),
                (
                    Effect.NOTIFY_INVITING_SIDE,
                    Effect.NOTIFY_ASSIGNED_CONSULTANT,
                    Effect.NOTIFY_PLATFORM,
                    Effect.CANCEL_RESPONSE_TIMERS,
                ),
            ),
            Transition(
                source,
                Action.REJECT,
                TaskStatus.REJECTED,
                _INVITED,
                (_reason_given,),
                (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_PLATFORM, Effect.CANCEL_RESPONSE_TIMERS),
            ),
        ]
    table += [
        Transition(
            TaskStatus.ACCEPTED,
            Action.START,
            TaskStatus.IN_PROGRESS,
            _PARTICIPANTS,
            (_consents_active, _live_session_ready),
            (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_INVITED_SIDE),
        ),
        Transition(
            TaskStatus.IN_PROGRESS,
            Action.HOLD,
            TaskStatus.ON_HOLD,
            _PARTICIPANTS,
            (_reason_given,),
            (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_INVITED_SIDE, Effect.FALL_BACK_TO_STORE_AND_FORWARD),
        ),
        Transition(
            TaskStatus.ON_HOLD,
            Action.RESUME,
            TaskStatus.IN_PROGRESS,
            _PARTICIPANTS,
            (_consents_active,),
            (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_INVITED_SIDE),
        ),
        Transition(
            TaskStatus.IN_PROGRESS,
            Action.COMPLETE,
            TaskStatus.COMPLETED,
            frozenset({Capacity.ASSIGNED_CONSULTANT}),
            (_consents_active, _opinion_signed),
            (Effect.NOTIFY_INVITING_SIDE, Effect.ARCHIVE_BOTH_SIDES),
        ),
        Transition(
            TaskStatus.COMPLETED,
            Action.RECORD_DECISION,
            TaskStatus.COMPLETED,
            _REQUESTER,
            (_decision_recordable,),
            (Effect.NOTIFY_INVITED_SIDE, Effect.COMPLETE_SERVICE_REQUEST),
        ),
    ]
    for source in (TaskStatus.IN_PROGRESS, TaskStatus.ON_HOLD):
        table.append(
            Transition(
                source,
                Action.FAIL,
                TaskStatus.FAILED,
                _PARTICIPANTS,
                (_reason_given,),
                (Effect.NOTIFY_INVITING_SIDE, Effect.NOTIFY_INVITED_SIDE),
            )
        )
    for source in (TaskStatus.DRAFT, TaskStatus.REQUESTED, TaskStatus.RECEIVED, TaskStatus.ACCEPTED):
        # Once accepted, the invited coordinator may also withdraw (the consultant fell ill, …).
        actors = _REQUESTER | {Capacity.INVITED_COORDINATOR} if source is TaskStatus.ACCEPTED else _REQUESTER
        effects = () if source is TaskStatus.DRAFT else (*_CLOSING_EFFECTS, Effect.NOTIFY_PLATFORM)
        table.append(
            Transition(source, Action.CANCEL, TaskStatus.CANCELLED, actors, (_reason_given,), effects)
        )
    for source in TaskStatus:
        if source is not TaskStatus.ENTERED_IN_ERROR:
            table.append(
                Transition(
                    source,
                    Action.MARK_ENTERED_IN_ERROR,
                    TaskStatus.ENTERED_IN_ERROR,
                    frozenset({Capacity.RECORDS_OFFICER}),
                    (_reason_given,),
                    () if source is TaskStatus.DRAFT else _CLOSING_EFFECTS,
                )
            )
    return tuple(table)


def _index(table: Iterable[Transition]) -> Mapping[tuple[TaskStatus, Action], Transition]:
    index: dict[tuple[TaskStatus, Action], Transition] = {}
    for transition in table:
        key = (transition.source, transition.action)
        if key in index:
            raise RuntimeError(f"two transitions for {key}")
        index[key] = transition
    return MappingProxyType(index)


# Every allowed (status, action) pair and nothing else: the one place the state machine is defined.
TRANSITIONS: Mapping[tuple[TaskStatus, Action], Transition] = _index(_transitions())


# ---- the dispatcher ------------------------------------------------------------------------------


def _apply(consultation: Consultation, transition: Transition, command: Command) -> Consultation:
    reason = command.reason.strip() if command.reason is not None and command.reason.strip() else None
    change = StatusChange(
        command.action, transition.source, transition.target, command.actor.user_id, command.at, reason
    )
    after = replace(consultation, status=transition.target, history=(*consultation.history, change))
    action = command.action
    if action is Action.SUBMIT:
        after = replace(after, submitted_at=command.at)
    elif action is Action.RECEIVE:
        after = replace(after, received_at=command.at)
    elif action is Action.ACCEPT:
        after = replace(after, assigned_consultant=command.consultant, responded_at=command.at)
    elif action is Action.REJECT:
        after = replace(after, responded_at=command.at)
    elif action is Action.RECORD_DECISION:
        decision = Decision(command.actor.user_id, command.at, (command.decision or "").strip())
        after = replace(after, decision=decision)
    if action in _REASON_REQUIREMENT:
        after = replace(after, status_reason=reason)
    elif action is Action.RESUME:
        after = replace(after, status_reason=None)
    return after


def decide(consultation: Consultation, command: Command) -> Outcome:
    """Check ``command`` against the table, the actor's capacity and every gate; never raises a refusal.

    Returns every failed gate at once so a page can show them all. An action that has no transition from
    the current status is refused with ``transition.not_allowed`` alone.
    """
    _require_aware(command.at, "the command time")
    source = consultation.status
    transition = TRANSITIONS.get((source, command.action))
    if transition is None:
        refusal = _refuse(
            "transition.not_allowed",
            action=command.action.value,
            action_zh=command.action.zh,
            status=source.value,
            status_zh=business_status(consultation),
        )
        return Outcome(command.action, source, None, (refusal,), consultation, ())
    refusals: list[Refusal] = []
    if not capacities(consultation, command.actor) & transition.actors:
        refusals.append(
            _refuse("actor.not_permitted", action=command.action.value, action_zh=command.action.zh)
        )
    for gate in transition.gates:
        refusals.extend(gate(consultation, command))
    if refusals:
        return Outcome(command.action, source, transition.target, tuple(refusals), consultation, ())
    effects = tuple(
        effect
        for effect in transition.effects
        if effect is not Effect.NOTIFY_PLATFORM or consultation.platform_id is not None
    )
    return Outcome(
        command.action, source, transition.target, (), _apply(consultation, transition, command), effects
    )


def available_actions(consultation: Consultation, actor: Actor) -> tuple[Action, ...]:
    """Actions with a transition from the current status that ``actor`` may fire (gates not yet run).

    For the pages' buttons; :func:`decide` still decides.
    """
    acting_as = capacities(consultation, actor)
    return tuple(
        action
        for action in Action
        if (transition := TRANSITIONS.get((consultation.status, action))) is not None
        and acting_as & transition.actors
    )


# ---- response deadlines (TC-04) ------------------------------------------------------------------


class SlaStage(StrEnum):
    ACKNOWLEDGE = "acknowledge"  # requested → received: the invited side opens the request
    DECIDE = "decide"  # received → accepted or rejected (TC-04)


class SlaState(StrEnum):
    ON_TIME = "on-time"
    REMINDER_DUE = "reminder-due"
    OVERDUE = "overdue"
    ESCALATION_DUE = "escalation-due"


@dataclass(frozen=True)
class ResponseTimes:
    acknowledge_within: timedelta
    decide_within: timedelta


@dataclass(frozen=True)
class SlaPolicy:
    """Response windows per priority; remind after a share of the window, escalate after the deadline.

    Escalation goes to the invited institution's department head or medical-affairs office (adapters).
    """

    times: Mapping[Priority, ResponseTimes]
    remind_after_share: float = 0.5  # of the window, 0 < share < 1
    escalate_after_deadline: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if not 0 < self.remind_after_share < 1:
            raise ValueError("remind_after_share must lie strictly between 0 and 1")
        if self.escalate_after_deadline < timedelta(0):
            raise ValueError("escalate_after_deadline cannot be negative")
        missing = set(Priority) - set(self.times)
        if missing:
            raise ValueError(f"no response times for {sorted(missing)}")
        for times in self.times.values():
            if times.acknowledge_within <= timedelta(0) or times.decide_within <= timedelta(0):
                raise ValueError("response windows must be positive")


# Placeholders until the hospitals agree their own: the reference gives no numbers (§2 TC-04).
DEFAULT_SLA_POLICY = SlaPolicy(
    times=MappingProxyType(
        {
            Priority.ROUTINE: ResponseTimes(timedelta(hours=4), timedelta(hours=24)),
            Priority.URGENT: ResponseTimes(timedelta(hours=1), timedelta(hours=4)),
            Priority.ASAP: ResponseTimes(timedelta(minutes=30), timedelta(hours=2)),
            Priority.STAT: ResponseTimes(timedelta(minutes=10), timedelta(minutes=30)),
        }
    )
)


@dataclass(frozen=True)
class SlaSchedule:
    stage: SlaStage
    started_at: datetime
    remind_at: datetime
    deadline: datetime
    escalate_at: datetime

    def state(self, now: datetime) -> SlaState:
        _require_aware(now, "now")
        if now >= self.escalate_at:
            return SlaState.ESCALATION_DUE
        if now >= self.deadline:
            return SlaState.OVERDUE
        if now >= self.remind_at:
            return SlaState.REMINDER_DUE
        return SlaState.ON_TIME


def response_schedule(
    consultation: Consultation, policy: SlaPolicy = DEFAULT_SLA_POLICY
) -> SlaSchedule | None:
    """The response timers the invited side is under now; None when it owes no response.

    The clock runs from submission until the request is received, then from receipt until accepted or
    rejected. A deadline never falls after the end of the inviting side's time frame: an answer after
    that is useless to them.
    """
    times = policy.times[consultation.invitation.priority]
    if consultation.status is TaskStatus.REQUESTED and consultation.submitted_at is not None:
        stage, started, window = SlaStage.ACKNOWLEDGE, consultation.submitted_at, times.acknowledge_within
    elif consultation.status is TaskStatus.RECEIVED and consultation.received_at is not None:
        stage, started, window = SlaStage.DECIDE, consultation.received_at, times.decide_within
    else:
        return None
    deadline = started + window
    frame = consultation.invitation.time_frame
    if frame is not None and started < frame.latest < deadline:
        deadline = frame.latest
    remind_at = started + (deadline - started) * policy.remind_after_share
    return SlaSchedule(stage, started, remind_at, deadline, deadline + policy.escalate_after_deadline)
