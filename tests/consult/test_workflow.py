"""The consultation state machine: the table against the reference, who may act, every gate alone, SLA.

The expected table below is written from ``consult-and-platform.md`` §4, independently of the code, so
the test checks the code's one table against the reference rather than against itself.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tianfu.consult import signing
from tianfu.consult.workflow import (
    BUSINESS_STATUS,
    CHINA_TIME,
    DECIDED_BUSINESS_STATUS,
    DEFAULT_SLA_POLICY,
    TERMINAL_STATUSES,
    TRANSITIONS,
    Action,
    Actor,
    Agreement,
    AgreementStatus,
    Capacity,
    Clinician,
    Command,
    ConsentKind,
    ConsentRecord,
    Consultation,
    ConsultMode,
    Decision,
    Effect,
    Invitation,
    LiveSession,
    OpinionOrigin,
    OpinionRecord,
    Outcome,
    Priority,
    ProfessionalTitle,
    ReportStatus,
    ResponseTimes,
    SlaPolicy,
    SlaStage,
    SlaState,
    StaffRole,
    TaskStatus,
    TimeFrame,
    available_actions,
    business_status,
    capacities,
    check_consultant,
    decide,
    practice_years_completed,
    response_schedule,
)

S = TaskStatus
A = Action

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=CHINA_TIME)
INVITING = "org-community"
INVITED = "org-tertiary"

REQUESTER = Clinician(
    "dr-li",
    INVITING,
    licence_number="110510000123",
    independent_practice_since=date(2015, 1, 1),
    specialties=frozenset({"general-practice"}),
    title=ProfessionalTitle.ATTENDING,
)
CONSULTANT = Clinician(
    "dr-wang",
    INVITED,
    licence_number="110510000456",
    licence_valid_until=date(2030, 12, 31),
    independent_practice_since=date(2010, 7, 1),
    specialties=frozenset({"cardiology"}),
    title=ProfessionalTitle.CHIEF,
)
COMPANION = Clinician("dr-zhou", INVITING, licence_number="110510000789")

ACTORS: dict[str, Actor] = {
    "requester": Actor("dr-li", INVITING, frozenset({StaffRole.PHYSICIAN})),
    "inviting_colleague": Actor("dr-zhou", INVITING, frozenset({StaffRole.PHYSICIAN})),
    "coordinator": Actor("coord-zhao", INVITED, frozenset({StaffRole.COORDINATOR})),
    "assigned": Actor("dr-wang", INVITED, frozenset({StaffRole.CONSULTANT})),
    "other_consultant": Actor("dr-chen", INVITED, frozenset({StaffRole.CONSULTANT})),
    "records_inviting": Actor("ra-sun", INVITING, frozenset({StaffRole.RECORDS_OFFICER})),
    "records_invited": Actor("ra-qian", INVITED, frozenset({StaffRole.RECORDS_OFFICER})),
    "outsider": Actor("dr-wang", "org-elsewhere", frozenset(StaffRole)),  # same id, other institution
}

AGREEMENT = Agreement(
    "agr-1",
    frozenset({INVITING, INVITED}),
    AgreementStatus.ACTIVE,
    valid_from=datetime(2024, 1, 1, tzinfo=CHINA_TIME),
    valid_until=datetime(2027, 1, 1, tzinfo=CHINA_TIME),
)
TREATMENT_CONSENT = ConsentRecord(
    ConsentKind.TREATMENT, "pat-1", T0 - timedelta(days=30), signed_form_ref="doc-consent-1"
)
SHARING_CONSENT = ConsentRecord(
    ConsentKind.DATA_SHARING,
    "pat-1",
    T0 - timedelta(days=30),
    signed_form_ref="doc-consent-2",
    recipient_institution_id=INVITED,
)
INVITATION = Invitation(
    reason="胸痛待查，心电图ST段改变",
    purpose="明确诊断并指导治疗",
    case_summary="男，62岁，胸痛3小时……",
    specialty="cardiology",
    title=ProfessionalTitle.ASSOCIATE_CHIEF,
    time_frame=TimeFrame(T0, T0 + timedelta(days=3)),
)
SIGNED_OPINION = OpinionRecord(
    document_id="rep-1",
    version=1,
    content_hash="ab" * 32,
    status=ReportStatus.FINAL,
    origin=OpinionOrigin.CLINICIAN,
    signer_id="dr-wang",
    signature_verified=True,
)

DRAFT = Consultation(
    consultation_id="con-1",
    patient_id="pat-1",
    inviting_institution_id=INVITING,
    invited_institution_id=INVITED,
    requester=REQUESTER,
    created_at=T0 - timedelta(hours=2),
    invitation=INVITATION,
    agreement=AGREEMENT,
    consents=(TREATMENT_CONSENT, SHARING_CONSENT),
)

# The reference table (§4), written out by hand.
EXPECTED_TARGETS: dict[tuple[TaskStatus, Action], TaskStatus] = {
    (S.DRAFT, A.SUBMIT): S.REQUESTED,
    (S.REQUESTED, A.RECEIVE): S.RECEIVED,
    (S.REQUESTED, A.ACCEPT): S.ACCEPTED,
    (S.RECEIVED, A.ACCEPT): S.ACCEPTED,
    (S.REQUESTED, A.REJECT): S.REJECTED,
    (S.RECEIVED, A.REJECT): S.REJECTED,
    (S.ACCEPTED, A.START): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.HOLD): S.ON_HOLD,
    (S.ON_HOLD, A.RESUME): S.IN_PROGRESS,
    (S.IN_PROGRESS, A.COMPLETE): S.COMPLETED,
    (S.IN_PROGRESS, A.FAIL): S.FAILED,
    (S.ON_HOLD, A.FAIL): S.FAILED,
    (S.COMPLETED, A.RECORD_DECISION): S.COMPLETED,
    **{(source, A.CANCEL): S.CANCELLED for source in (S.DRAFT, S.REQUESTED, S.RECEIVED, S.ACCEPTED)},
    **{
        (source, A.MARK_ENTERED_IN_ERROR): S.ENTERED_IN_ERROR
        for source in S
        if source is not S.ENTERED_IN_ERROR
    },
}

# Who may fire each transition, by name in ACTORS.
_PARTICIPANTS = {"requester", "assigned"}
_INVITED_SIDE = {"coordinator", "assigned", "other_consultant"}
EXPECTED_ACTORS: dict[Action, set[str]] = {
    A.SUBMIT: {"requester"},
    A.RECEIVE: _INVITED_SIDE,
    A.ACCEPT: _INVITED_SIDE,
    A.REJECT: _INVITED_SIDE,
    A.START: _PARTICIPANTS,
    A.HOLD: _PARTICIPANTS,
    A.RESUME: _PARTICIPANTS,
    A.FAIL: _PARTICIPANTS,
    A.COMPLETE: {"assigned"},
    A.RECORD_DECISION: {"requester"},
    A.CANCEL: {"requester"},
    A.MARK_ENTERED_IN_ERROR: {"records_inviting", "records_invited"},
}

REQUIREMENT_ID = re.compile(r"^(TC-\d\d|SEC-\d\d|§4)$")


def in_status(status: TaskStatus, **changes: object) -> Consultation:
    """A snapshot in ``status`` that satisfies every gate of every action from it."""
    ready = replace(
        DRAFT,
        status=status,
        assigned_consultant=None if status in (S.DRAFT, S.REQUESTED, S.RECEIVED) else CONSULTANT,
        opinion=SIGNED_OPINION,
        submitted_at=None if status is S.DRAFT else T0 - timedelta(minutes=30),
    )
    return replace(ready, **changes)  # type: ignore[arg-type]


def command_for(action: Action, actor: str | None = None, **changes: object) -> Command:
    """The command a legitimate user would send for ``action``."""
    default_actor = {
        A.SUBMIT: "requester",
        A.RECEIVE: "coordinator",
        A.ACCEPT: "coordinator",
        A.REJECT: "coordinator",
        A.START: "assigned",
        A.HOLD: "assigned",
        A.RESUME: "requester",
        A.COMPLETE: "assigned",
        A.FAIL: "requester",
        A.CANCEL: "requester",
        A.MARK_ENTERED_IN_ERROR: "records_inviting",
        A.RECORD_DECISION: "requester",
    }[action]
    command = Command(
        action,
        ACTORS[actor or default_actor],
        T0,
        reason="网络中断"
        if action in (A.REJECT, A.HOLD, A.FAIL, A.CANCEL, A.MARK_ENTERED_IN_ERROR)
        else None,
        consultant=CONSULTANT if action is A.ACCEPT else None,
        decision="采纳会诊意见，转上级医院行冠脉造影" if action is A.RECORD_DECISION else None,
    )
    return replace(command, **changes)  # type: ignore[arg-type]


def wellformed(outcome: Outcome) -> Outcome:
    for refusal in outcome.refusals:
        assert REQUIREMENT_ID.match(refusal.requirement), refusal
        assert refusal.message_en
        assert refusal.message_zh
        assert "{" not in refusal.message_en + refusal.message_zh, refusal
    if outcome.allowed:
        assert outcome.consultation.status is outcome.target
    else:
        assert outcome.effects == ()
    return outcome


# ---- the table -----------------------------------------------------------------------------------


def test_the_table_is_the_reference_table() -> None:
    assert {key: t.target for key, t in TRANSITIONS.items()} == EXPECTED_TARGETS
    for (source, action), transition in TRANSITIONS.items():
        assert (transition.source, transition.action) == (source, action)


@pytest.mark.parametrize(("source", "action"), sorted(EXPECTED_TARGETS))
def test_every_allowed_transition(source: TaskStatus, action: Action) -> None:
    outcome = wellformed(decide(in_status(source), command_for(action)))
    assert outcome.allowed, outcome.refusals
    assert outcome.source is source
    assert outcome.consultation.status is EXPECTED_TARGETS[(source, action)]
    change = outcome.consultation.history[-1]
    assert (change.action, change.source, change.target, change.at) == (action, source, outcome.target, T0)


@pytest.mark.parametrize(
    ("source", "action"),
    [pair for pair in itertools.product(TaskStatus, Action) if pair not in EXPECTED_TARGETS],
)
def test_every_other_pair_is_refused(source: TaskStatus, action: Action) -> None:
    before = in_status(source)
    outcome = wellformed(decide(before, command_for(action)))
    assert outcome.codes == ("transition.not_allowed",)
    assert outcome.target is None
    assert outcome.consultation is before
    assert BUSINESS_STATUS[source] in outcome.refusals[0].message_zh


def test_the_table_refuses_a_second_transition_for_one_pair() -> None:
    from tianfu.consult.workflow import _index

    duplicate = TRANSITIONS[(S.DRAFT, A.SUBMIT)]
    with pytest.raises(RuntimeError, match="two transitions"):
        _index([duplicate, duplicate])


def test_terminal_statuses_only_allow_error_marking_and_the_decision() -> None:
    for status in TERMINAL_STATUSES:
        allowed = {action for (source, action) in TRANSITIONS if source is status}
        expected = {A.RECORD_DECISION} if status is S.COMPLETED else set()
        if status is not S.ENTERED_IN_ERROR:
            expected.add(A.MARK_ENTERED_IN_ERROR)
        assert allowed == expected


# ---- who may act ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "action"), sorted(EXPECTED_TARGETS))
@pytest.mark.parametrize("actor", sorted(ACTORS))
def test_who_may_fire_each_transition(source: TaskStatus, action: Action, actor: str) -> None:
    permitted = set(EXPECTED_ACTORS[action])
    if (source, action) == (S.ACCEPTED, A.CANCEL):
        permitted.add("coordinator")  # the invited side withdraws after accepting
    outcome = wellformed(decide(in_status(source), command_for(action, actor)))
    assert ("actor.not_permitted" in outcome.codes) == (actor not in permitted)
    if actor not in permitted:
        assert outcome.consultation.status is source


def test_the_consultant_may_accept_only_for_himself() -> None:
    received = in_status(S.RECEIVED)
    assert decide(received, command_for(A.ACCEPT, "assigned")).allowed
    outcome = wellformed(decide(received, command_for(A.ACCEPT, "other_consultant")))
    assert outcome.codes == ("consultant.not_self",)
    own = replace(CONSULTANT, practitioner_id="dr-chen")
    assert decide(received, command_for(A.ACCEPT, "other_consultant", consultant=own)).allowed


def test_capacities_need_role_and_relationship() -> None:
    assert capacities(in_status(S.ACCEPTED), ACTORS["assigned"]) == {
        Capacity.INVITED_CONSULTANT,
        Capacity.ASSIGNED_CONSULTANT,
    }
    assert capacities(in_status(S.ACCEPTED), ACTORS["outsider"]) == frozenset()
    no_role = Actor("dr-li", INVITING, frozenset())
    assert capacities(DRAFT, no_role) == frozenset()


def test_available_actions() -> None:
    assert available_actions(DRAFT, ACTORS["requester"]) == (A.SUBMIT, A.CANCEL)
    assert available_actions(in_status(S.REQUESTED), ACTORS["coordinator"]) == (A.RECEIVE, A.ACCEPT, A.REJECT)
    assert available_actions(in_status(S.ACCEPTED), ACTORS["coordinator"]) == (A.CANCEL,)
    assert available_actions(in_status(S.IN_PROGRESS), ACTORS["assigned"]) == (A.HOLD, A.COMPLETE, A.FAIL)
    assert available_actions(in_status(S.COMPLETED), ACTORS["requester"]) == (A.RECORD_DECISION,)
    assert available_actions(in_status(S.COMPLETED), ACTORS["records_invited"]) == (A.MARK_ENTERED_IN_ERROR,)
    assert available_actions(in_status(S.IN_PROGRESS), ACTORS["outsider"]) == ()


# ---- every gate failing alone --------------------------------------------------------------------

_WITHDRAWN = T0 - timedelta(minutes=5)
_NOT_LICENSED = replace(CONSULTANT, licence_number=" ")
GATE_CASES: list[tuple[str, TaskStatus, Action, dict[str, object], dict[str, object], tuple[str, ...]]] = [
    # (id, status, action, snapshot changes, command changes, expected codes)
    ("requester-unlicensed", S.DRAFT, A.SUBMIT, {"requester": replace(REQUESTER, licence_number="")}, {},
     ("requester.unlicensed",)),
    ("requester-suspended", S.DRAFT, A.SUBMIT, {"requester": replace(REQUESTER, licence_suspended=True)}, {},
     ("requester.unlicensed",)),
    ("requester-elsewhere", S.DRAFT, A.SUBMIT, {"requester": replace(REQUESTER, institution_id=INVITED)}, {},
     ("requester.other_institution",)),
    ("same-institution", S.DRAFT, A.SUBMIT, {"invited_institution_id": INVITING,
     "consents": (TREATMENT_CONSENT, replace(SHARING_CONSENT, recipient_institution_id=INVITING))}, {},
     ("institutions.same",)),
    ("no-agreement", S.DRAFT, A.SUBMIT, {"agreement": None}, {}, ("agreement.missing",)),
    ("agreement-other-parties", S.DRAFT, A.SUBMIT,
     {"agreement": replace(AGREEMENT, institution_ids=frozenset({INVITING, "org-x"}))}, {},
     ("agreement.other_parties",)),
    ("agreement-suspended", S.DRAFT, A.SUBMIT,
     {"agreement": replace(AGREEMENT, status=AgreementStatus.SUSPENDED)}, {}, ("agreement.not_active",)),
    ("agreement-terminated", S.DRAFT, A.SUBMIT,
     {"agreement": replace(AGREEMENT, status=AgreementStatus.TERMINATED)}, {}, ("agreement.not_active",)),
    ("agreement-expired", S.DRAFT, A.SUBMIT, {"agreement": replace(AGREEMENT, valid_until=T0)}, {},
     ("agreement.not_in_force",)),
    ("agreement-not-yet", S.DRAFT, A.SUBMIT,
     {"agreement": replace(AGREEMENT, valid_from=T0 + timedelta(1))}, {},
     ("agreement.not_in_force",)),
    ("agreement-lapsed-before-accept", S.RECEIVED, A.ACCEPT,
     {"agreement": replace(AGREEMENT, valid_until=T0)}, {}, ("agreement.not_in_force",)),
    ("no-treatment-consent", S.DRAFT, A.SUBMIT, {"consents": (SHARING_CONSENT,)}, {},
     ("consent.treatment.missing",)),
    ("no-sharing-consent", S.DRAFT, A.SUBMIT, {"consents": (TREATMENT_CONSENT,)}, {},
     ("consent.data_sharing.missing",)),
    ("no-consents", S.DRAFT, A.SUBMIT, {"consents": ()}, {},
     ("consent.treatment.missing", "consent.data_sharing.missing")),
    ("sharing-consent-for-another-recipient", S.DRAFT, A.SUBMIT,
     {"consents": (TREATMENT_CONSENT, replace(SHARING_CONSENT, recipient_institution_id="org-x"))}, {},
     ("consent.data_sharing.missing",)),
    ("consent-of-another-patient", S.DRAFT, A.SUBMIT,
     {"consents": (replace(TREATMENT_CONSENT, patient_id="pat-2"), SHARING_CONSENT)}, {},
     ("consent.treatment.missing",)),
    ("consent-granted-later", S.DRAFT, A.SUBMIT,
     {"consents": (replace(TREATMENT_CONSENT, granted_at=T0 + timedelta(minutes=1)), SHARING_CONSENT)}, {},
     ("consent.treatment.missing",)),
    ("consent-not-written", S.DRAFT, A.SUBMIT,
     {"consents": (replace(TREATMENT_CONSENT, signed_form_ref=""), SHARING_CONSENT)}, {},
     ("consent.treatment.unsigned",)),
    ("sharing-consent-not-written", S.DRAFT, A.SUBMIT,
     {"consents": (TREATMENT_CONSENT, replace(SHARING_CONSENT, signed_form_ref=" "))}, {},
     ("consent.data_sharing.unsigned",)),
    ("treatment-consent-withdrawn", S.DRAFT, A.SUBMIT,
     {"consents": (replace(TREATMENT_CONSENT, withdrawn_at=_WITHDRAWN), SHARING_CONSENT)}, {},
     ("consent.treatment.withdrawn",)),
    ("sharing-consent-withdrawn", S.DRAFT, A.SUBMIT,
     {"consents": (TREATMENT_CONSENT, replace(SHARING_CONSENT, withdrawn_at=_WITHDRAWN))}, {},
     ("consent.data_sharing.withdrawn",)),
    ("no-reason", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, reason="  ")}, {},
     ("invitation.reason_missing",)),
    ("no-purpose", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, purpose="")}, {},
     ("invitation.purpose_missing",)),
    ("no-summary", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, case_summary="")}, {},
     ("invitation.case_summary_missing",)),
    ("no-specialty", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, specialty="")}, {},
     ("invitation.specialty_missing",)),
    ("no-title", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, title=None)}, {},
     ("invitation.title_missing",)),
    ("no-time-frame", S.DRAFT, A.SUBMIT, {"invitation": replace(INVITATION, time_frame=None)}, {},
     ("invitation.time_frame_missing",)),
    ("time-frame-backwards", S.DRAFT, A.SUBMIT,
     {"invitation": replace(INVITATION, time_frame=TimeFrame(T0 + timedelta(1), T0 + timedelta(1)))}, {},
     ("invitation.time_frame_invalid",)),
    ("time-frame-over", S.DRAFT, A.SUBMIT,
     {"invitation": replace(INVITATION, time_frame=TimeFrame(T0 - timedelta(2), T0))}, {},
     ("invitation.time_frame_past",)),
    ("reject-without-reason", S.RECEIVED, A.REJECT, {}, {"reason": None}, ("reason.missing",)),
    ("reject-blank-reason", S.REQUESTED, A.REJECT, {}, {"reason": "   "}, ("reason.missing",)),
    ("hold-without-reason", S.IN_PROGRESS, A.HOLD, {}, {"reason": ""}, ("reason.missing",)),
    ("fail-without-reason", S.ON_HOLD, A.FAIL, {}, {"reason": None}, ("reason.missing",)),
    ("cancel-without-reason", S.ACCEPTED, A.CANCEL, {}, {"reason": None}, ("reason.missing",)),
    ("error-without-reason", S.COMPLETED, A.MARK_ENTERED_IN_ERROR, {}, {"reason": None}, ("reason.missing",)),
    ("accept-without-consultant", S.RECEIVED, A.ACCEPT, {}, {"consultant": None}, ("consultant.missing",)),
    ("consultant-elsewhere", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, institution_id="org-x")},
     ("consultant.other_institution",)),
    ("consultant-unlicensed", S.RECEIVED, A.ACCEPT, {}, {"consultant": _NOT_LICENSED},
     ("consultant.unlicensed",)),
    ("consultant-licence-expired", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, licence_valid_until=date(2025, 3, 9))}, ("consultant.unlicensed",)),
    ("consultant-experience-unknown", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, independent_practice_since=None)},
     ("consultant.experience_unknown",)),
    ("consultant-too-junior", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, independent_practice_since=date(2022, 3, 11))},
     ("consultant.experience_short",)),
    ("consultant-other-specialty", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, specialties=frozenset({"neurology"}))},
     ("consultant.specialty_mismatch",)),
    ("consultant-title-below", S.RECEIVED, A.ACCEPT, {},
     {"consultant": replace(CONSULTANT, title=ProfessionalTitle.ATTENDING)},
     ("consultant.title_below_requested",)),
    ("consultant-title-unknown", S.RECEIVED, A.ACCEPT, {}, {"consultant": replace(CONSULTANT, title=None)},
     ("consultant.title_below_requested",)),
    ("live-not-scheduled", S.ACCEPTED, A.START,
     {"mode": ConsultMode.SYNCHRONOUS, "live_session": LiveSession(None, COMPANION)}, {},
     ("session.not_scheduled",)),
    ("live-no-session", S.ACCEPTED, A.START, {"mode": ConsultMode.SYNCHRONOUS}, {},
     ("session.not_scheduled", "session.no_accompanying_physician")),
    ("live-unaccompanied", S.ACCEPTED, A.START,
     {"mode": ConsultMode.SYNCHRONOUS, "live_session": LiveSession(T0, None)}, {},
     ("session.no_accompanying_physician",)),
    ("live-companion-unlicensed", S.ACCEPTED, A.START,
     {"mode": ConsultMode.SYNCHRONOUS,
      "live_session": LiveSession(T0, replace(COMPANION, licence_number=""))}, {},
     ("session.accompanying_physician_invalid",)),
    ("live-companion-elsewhere", S.ACCEPTED, A.START,
     {"mode": ConsultMode.SYNCHRONOUS,
      "live_session": LiveSession(T0, replace(COMPANION, institution_id=INVITED))},
     {}, ("session.accompanying_physician_invalid",)),
    ("no-opinion", S.IN_PROGRESS, A.COMPLETE, {"opinion": None}, {}, ("opinion.missing",)),
    ("opinion-preliminary", S.IN_PROGRESS, A.COMPLETE,
     {"opinion": replace(SIGNED_OPINION, status=ReportStatus.PRELIMINARY)}, {}, ("opinion.not_final",)),
    ("opinion-unsigned", S.IN_PROGRESS, A.COMPLETE,
     {"opinion": replace(SIGNED_OPINION, signer_id=None, signature_verified=False)}, {},
     ("opinion.unsigned",)),
    ("opinion-signed-by-other", S.IN_PROGRESS, A.COMPLETE,
     {"opinion": replace(SIGNED_OPINION, signer_id="dr-chen")},
     {}, ("opinion.signed_by_other",)),
    ("opinion-signature-fails", S.IN_PROGRESS, A.COMPLETE,
     {"opinion": replace(SIGNED_OPINION, signature_verified=False)}, {}, ("opinion.signature_invalid",)),
    ("opinion-is-ai", S.IN_PROGRESS, A.COMPLETE,
     {"opinion": replace(SIGNED_OPINION, origin=OpinionOrigin.AI_SUGGESTION)}, {},
     ("opinion.ai_suggestion",)),
    ("decision-empty", S.COMPLETED, A.RECORD_DECISION, {}, {"decision": " "}, ("decision.text_missing",)),
    ("decision-twice", S.COMPLETED, A.RECORD_DECISION, {"decision": Decision("dr-li", T0, "已处理")}, {},
     ("decision.already_recorded",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "action", "snapshot_changes", "command_changes", "codes"),
    [case[1:] for case in GATE_CASES],
    ids=[case[0] for case in GATE_CASES],
)
def test_each_gate_fails_alone(
    status: TaskStatus,
    action: Action,
    snapshot_changes: dict[str, object],
    command_changes: dict[str, object],
    codes: tuple[str, ...],
) -> None:
    before = in_status(status, **snapshot_changes)
    outcome = wellformed(decide(before, command_for(action, None, **command_changes)))
    assert outcome.codes == codes
    assert outcome.consultation is before
    assert outcome.target is EXPECTED_TARGETS[(status, action)]


def test_all_failed_gates_are_listed_together() -> None:
    broken = replace(DRAFT, agreement=None, consents=(), invitation=Invitation())
    outcome = wellformed(decide(broken, command_for(A.SUBMIT, "coordinator")))
    assert outcome.codes == (
        "actor.not_permitted",
        "agreement.missing",
        "consent.treatment.missing",
        "consent.data_sharing.missing",
        "invitation.reason_missing",
        "invitation.purpose_missing",
        "invitation.case_summary_missing",
        "invitation.specialty_missing",
        "invitation.title_missing",
        "invitation.time_frame_missing",
    )
    assert {refusal.requirement for refusal in outcome.refusals} == {"SEC-01", "TC-01", "TC-02", "TC-03"}


def test_refusal_messages_name_the_requirement_in_both_languages() -> None:
    outcome = decide(in_status(S.RECEIVED), command_for(A.REJECT, reason=None))
    (refusal,) = outcome.refusals
    assert refusal.requirement == "TC-04"
    assert refusal.message_en == "A reason is required to reject."
    assert refusal.message_zh == "拒绝须填写原因。"
    hold = decide(in_status(S.IN_PROGRESS), command_for(A.HOLD, reason=None))
    assert hold.refusals[0].requirement == "TC-11"


def test_store_and_forward_starts_without_a_session_and_a_ready_live_session_starts() -> None:
    assert decide(in_status(S.ACCEPTED), command_for(A.START)).allowed
    live = in_status(S.ACCEPTED, mode=ConsultMode.SYNCHRONOUS, live_session=LiveSession(T0, COMPANION))
    assert decide(live, command_for(A.START)).allowed


# ---- consents withdrawn --------------------------------------------------------------------------

PROGRESSING = [(S.REQUESTED, A.RECEIVE), (S.RECEIVED, A.ACCEPT), (S.ACCEPTED, A.START), (S.ON_HOLD, A.RESUME),
               (S.IN_PROGRESS, A.COMPLETE), (S.DRAFT, A.SUBMIT)]  # fmt: skip
CLOSING = [(S.RECEIVED, A.REJECT), (S.ACCEPTED, A.CANCEL), (S.IN_PROGRESS, A.FAIL), (S.IN_PROGRESS, A.HOLD),
           (S.ON_HOLD, A.FAIL), (S.IN_PROGRESS, A.MARK_ENTERED_IN_ERROR),
           (S.COMPLETED, A.RECORD_DECISION)]  # fmt: skip


@pytest.mark.parametrize("kind", list(ConsentKind))
@pytest.mark.parametrize(("status", "action"), PROGRESSING)
def test_a_withdrawn_consent_stops_progress(kind: ConsentKind, status: TaskStatus, action: Action) -> None:
    consents = tuple(replace(c, withdrawn_at=_WITHDRAWN) if c.kind is kind else c for c in DRAFT.consents)
    outcome = wellformed(decide(in_status(status, consents=consents), command_for(action)))
    assert outcome.codes == (f"consent.{kind.key}.withdrawn",)


@pytest.mark.parametrize(("status", "action"), CLOSING)
def test_a_withdrawn_consent_still_lets_the_consultation_close(status: TaskStatus, action: Action) -> None:
    consents = tuple(replace(c, withdrawn_at=_WITHDRAWN) for c in DRAFT.consents)
    assert decide(in_status(status, consents=consents), command_for(action)).allowed


def test_withdrawal_counts_from_its_time_and_a_new_consent_restores() -> None:
    later = tuple(replace(c, withdrawn_at=T0 + timedelta(seconds=1)) for c in DRAFT.consents)
    assert decide(in_status(S.REQUESTED, consents=later), command_for(A.RECEIVE)).allowed
    at_once = tuple(replace(c, withdrawn_at=T0) for c in DRAFT.consents)
    assert not decide(in_status(S.REQUESTED, consents=at_once), command_for(A.RECEIVE)).allowed
    renewed = (*at_once, replace(TREATMENT_CONSENT, granted_at=T0), replace(SHARING_CONSENT, granted_at=T0))
    assert decide(in_status(S.REQUESTED, consents=renewed), command_for(A.RECEIVE)).allowed


def test_consent_signed_by_a_guardian_counts() -> None:
    from tianfu.consult.workflow import ConsentSigner

    guardian = tuple(replace(c, signed_by=ConsentSigner.GUARDIAN) for c in DRAFT.consents)
    assert decide(replace(DRAFT, consents=guardian), command_for(A.SUBMIT)).allowed


# ---- qualification (TC-05) -----------------------------------------------------------------------


def test_exactly_three_years_of_independent_practice_qualifies() -> None:
    consultant = replace(CONSULTANT, independent_practice_since=date(2022, 3, 10))
    received = in_status(S.RECEIVED)
    assert decide(received, command_for(A.ACCEPT, consultant=consultant)).allowed
    day_before = command_for(A.ACCEPT, consultant=consultant, at=T0 - timedelta(days=1))
    assert decide(received, day_before).codes == ("consultant.experience_short",)


def test_the_day_is_the_day_in_china() -> None:
    consultant = replace(CONSULTANT, independent_practice_since=date(2022, 3, 10))
    # 2025-03-09 20:00 UTC is already 10 March in Beijing.
    late_utc = datetime(2025, 3, 9, 20, 0, tzinfo=UTC)
    assert check_consultant(consultant, INVITATION, INVITED, late_utc.astimezone(CHINA_TIME).date()) == ()
    outcome = decide(in_status(S.RECEIVED), command_for(A.ACCEPT, consultant=consultant, at=late_utc))
    assert outcome.allowed
    early_utc = datetime(2025, 3, 9, 15, 59, tzinfo=UTC)  # 23:59 on 9 March in Beijing
    assert not decide(
        in_status(S.RECEIVED), command_for(A.ACCEPT, consultant=consultant, at=early_utc)
    ).allowed


@pytest.mark.parametrize(
    ("since", "on", "done"),
    [
        (date(2022, 3, 10), date(2025, 3, 10), True),
        (date(2022, 3, 10), date(2025, 3, 9), False),
        (date(2020, 2, 29), date(2023, 2, 28), False),  # no 29 February in 2023: the period is not cut
        (date(2020, 2, 29), date(2023, 3, 1), True),
        (date(2020, 2, 29), date(2024, 2, 29), True),
        (date(2025, 3, 10), date(2025, 3, 10), False),
    ],
)
def test_practice_years_completed(since: date, on: date, done: bool) -> None:
    assert practice_years_completed(since, 3, on) is done


def test_licence_valid_through_its_last_day() -> None:
    consultant = replace(CONSULTANT, licence_valid_until=date(2025, 3, 10))
    assert check_consultant(consultant, INVITATION, INVITED, date(2025, 3, 10)) == ()
    (refusal,) = check_consultant(consultant, INVITATION, INVITED, date(2025, 3, 11))
    assert refusal.code == "consultant.unlicensed"
    assert "2025-03-11" in refusal.message_en


def test_specialty_matches_case_and_space_insensitively_and_title_at_or_above() -> None:
    consultant = replace(
        CONSULTANT, specialties=frozenset({" Cardiology "}), title=ProfessionalTitle.ASSOCIATE_CHIEF
    )
    assert check_consultant(consultant, INVITATION, INVITED, date(2025, 3, 10)) == ()
    junior = replace(consultant, title=ProfessionalTitle.ATTENDING)
    (refusal,) = check_consultant(junior, INVITATION, INVITED, date(2025, 3, 10))
    assert "副主任医师" in refusal.message_zh
    assert "associate chief" in refusal.message_en


def test_a_physician_practising_at_both_institutions_cannot_consult_on_his_own_request() -> None:
    himself = replace(CONSULTANT, practitioner_id=REQUESTER.practitioner_id)
    outcome = decide(in_status(S.RECEIVED), command_for(A.ACCEPT, consultant=himself))
    assert outcome.codes == ("consultant.is_requester",)


# ---- opinion, AI and the decision (TC-07, TC-08, TC-15) ------------------------------------------


def test_completion_with_a_really_signed_and_verified_opinion() -> None:
    signer = signing.ECDSA_P256_SHA256.generate_signer()
    report = {
        "impression": "急性下壁心肌梗死可能",
        "recommendation": "急诊PCI",
        "ai_suggestion": {"shown": True},
    }
    signed = signing.sign(report, document_id="rep-1", signer=signer, signer_id="dr-wang", signed_at=T0)
    trusted = signing.key_fingerprint(signer.public_key)
    good = OpinionRecord.from_signed(signed, signing.verify(signed, trusted_fingerprint=trusted))
    assert good.signature_verified
    assert decide(in_status(S.IN_PROGRESS, opinion=good), command_for(A.COMPLETE)).allowed
    impostor = signing.ECDSA_P256_SHA256.generate_signer()
    wrong_key = signing.verify(signed, trusted_fingerprint=signing.key_fingerprint(impostor.public_key))
    bad = OpinionRecord.from_signed(signed, wrong_key)
    assert decide(in_status(S.IN_PROGRESS, opinion=bad), command_for(A.COMPLETE)).codes == (
        "opinion.signature_invalid",
    )
    other = signing.sign({"x": 1}, document_id="rep-2", signer=signer, signer_id="dr-wang", signed_at=T0)
    mismatched = OpinionRecord.from_signed(signed, signing.verify(other, trusted_fingerprint=trusted))
    assert not mismatched.signature_verified
    ai = OpinionRecord.from_signed(
        signed, signing.verify(signed, trusted_fingerprint=trusted), origin=OpinionOrigin.AI_SUGGESTION
    )
    assert decide(in_status(S.IN_PROGRESS, opinion=ai), command_for(A.COMPLETE)).codes == (
        "opinion.ai_suggestion",
    )


def test_the_decision_only_after_completion_by_the_inviting_physician() -> None:
    for status in S:
        if status is not S.COMPLETED:
            assert decide(in_status(status), command_for(A.RECORD_DECISION)).codes == (
                "transition.not_allowed",
            )
    completed = in_status(S.COMPLETED)
    assert business_status(completed) == "已出具意见"
    by_consultant = decide(completed, command_for(A.RECORD_DECISION, "assigned"))
    assert by_consultant.codes == ("actor.not_permitted", "decision.by_consultant")
    outcome = decide(completed, command_for(A.RECORD_DECISION))
    assert outcome.allowed
    assert outcome.consultation.status is S.COMPLETED
    assert outcome.consultation.decision == Decision("dr-li", T0, "采纳会诊意见，转上级医院行冠脉造影")
    assert outcome.business_status == DECIDED_BUSINESS_STATUS == "邀请方已采纳/处理"
    assert Effect.COMPLETE_SERVICE_REQUEST in outcome.effects


def test_the_consultant_never_records_the_decision_even_when_also_the_requester() -> None:
    # 多点执业: the same person is the inviting physician and (wrongly) the assigned consultant.
    dual = in_status(S.COMPLETED, assigned_consultant=replace(CONSULTANT, practitioner_id="dr-li"))
    assert decide(dual, command_for(A.RECORD_DECISION)).codes == ("decision.by_consultant",)


# ---- what a transition changes -------------------------------------------------------------------


def test_a_whole_consultation() -> None:
    consultation = replace(DRAFT, platform_id="platform-sc")
    steps = [
        command_for(A.SUBMIT),
        command_for(A.RECEIVE, at=T0 + timedelta(minutes=10)),
        command_for(A.ACCEPT, at=T0 + timedelta(minutes=40)),
        command_for(A.START, at=T0 + timedelta(hours=2)),
        command_for(A.HOLD, reason="视频中断，转图文会诊", at=T0 + timedelta(hours=2, minutes=5)),
        command_for(A.RESUME, at=T0 + timedelta(hours=2, minutes=20)),
    ]
    effects = []
    for step in steps:
        outcome = wellformed(decide(consultation, step))
        assert outcome.allowed, outcome.refusals
        consultation = outcome.consultation
        effects.append(outcome.effects)
    assert consultation.submitted_at == T0
    assert consultation.received_at == T0 + timedelta(minutes=10)
    assert consultation.responded_at == T0 + timedelta(minutes=40)
    assert consultation.assigned_consultant == CONSULTANT
    assert consultation.status_reason is None  # cleared on resume
    assert Effect.NOTIFY_PLATFORM in effects[0]
    assert Effect.SCHEDULE_RESPONSE_TIMERS in effects[1]
    assert Effect.CANCEL_RESPONSE_TIMERS in effects[2]
    assert Effect.FALL_BACK_TO_STORE_AND_FORWARD in effects[4]
    assert [change.action for change in consultation.history] == [step.action for step in steps]
    assert [change.reason for change in consultation.history][4] == "视频中断，转图文会诊"
    consultation = replace(consultation, opinion=SIGNED_OPINION)
    done = decide(consultation, command_for(A.COMPLETE, at=T0 + timedelta(hours=3)))
    assert done.allowed
    assert Effect.ARCHIVE_BOTH_SIDES in done.effects


def test_rejection_records_its_reason_and_no_platform_means_no_platform_notice() -> None:
    outcome = decide(in_status(S.RECEIVED), command_for(A.REJECT, reason="  本院暂无该专业医师  "))
    assert outcome.consultation.status_reason == "本院暂无该专业医师"
    assert outcome.consultation.responded_at == T0
    assert outcome.business_status == "已拒绝"
    assert Effect.NOTIFY_PLATFORM not in outcome.effects
    with_platform = decide(in_status(S.RECEIVED, platform_id="p"), command_for(A.REJECT))
    assert Effect.NOTIFY_PLATFORM in with_platform.effects


def test_entered_in_error_keeps_the_original() -> None:
    completed = in_status(S.COMPLETED, decision=Decision("dr-li", T0, "已处理"))
    outcome = decide(
        completed, command_for(A.MARK_ENTERED_IN_ERROR, "records_invited", reason="患者身份错误")
    )
    assert outcome.allowed
    after = outcome.consultation
    assert after.status is S.ENTERED_IN_ERROR
    assert (after.opinion, after.decision, after.assigned_consultant) == (
        completed.opinion,
        completed.decision,
        completed.assigned_consultant,
    )
    assert after.status_reason == "患者身份错误"
    assert business_status(after) == "录入错误"


def test_business_status_names() -> None:
    assert set(BUSINESS_STATUS) == set(TaskStatus)
    assert BUSINESS_STATUS[S.IN_PROGRESS] == "会诊中"
    assert BUSINESS_STATUS[S.ACCEPTED] == "已接受/待排期"
    assert business_status(in_status(S.COMPLETED)) == "已出具意见"


def test_a_time_without_zone_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        decide(DRAFT, command_for(A.SUBMIT, at=datetime(2025, 3, 10, 9, 0)))  # noqa: DTZ001


# ---- random walks --------------------------------------------------------------------------------

REACHABLE = {S.DRAFT} | set(EXPECTED_TARGETS.values())
MOVES_WITHOUT_CONSENT = {A.REJECT, A.CANCEL, A.FAIL, A.HOLD, A.MARK_ENTERED_IN_ERROR, A.RECORD_DECISION}

# The table's actions from each status, less entered-in-error (possible everywhere, it would end most walks).
ACTIONS_FROM: dict[TaskStatus, list[Action]] = {
    status: [a for (source, a) in EXPECTED_TARGETS if source is status and a is not A.MARK_ENTERED_IN_ERROR]
    for status in S
}
FORWARD = {S.DRAFT: A.SUBMIT, S.REQUESTED: A.RECEIVE, S.RECEIVED: A.ACCEPT, S.ACCEPTED: A.START,
           S.IN_PROGRESS: A.COMPLETE, S.ON_HOLD: A.RESUME, S.COMPLETED: A.RECORD_DECISION}  # fmt: skip
ACTOR_NAMES = sorted(ACTORS)
REASONS = [None, "", "原因", "原因"]

# One step: (which action, which actor, which reason, withdraw the consents first?), read by the walk.
steps_strategy = st.lists(
    st.tuples(
        st.integers(0, 99), st.integers(0, 2 * len(ACTOR_NAMES)), st.integers(0, 3), st.integers(0, 19)
    ),
    max_size=30,
)


def _action_for(status: TaskStatus, choice: int) -> Action:
    """Half the time forward, a third another move the table has from here, else any action at all."""
    offered = ACTIONS_FROM[status]
    if choice < 50 and status in FORWARD:
        return FORWARD[status]
    if choice < 85 and offered:
        return offered[choice % len(offered)]
    return list(Action)[choice % len(Action)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy, st.sampled_from(list(ConsultMode)))
def test_any_walk_visits_only_allowed_states_and_keeps_the_invariants(
    steps: list[tuple[int, int, int, int]], mode: ConsultMode
) -> None:
    consultation = replace(DRAFT, mode=mode, opinion=SIGNED_OPINION, live_session=LiveSession(T0, COMPANION))
    withdrawn = False
    allowed_count = 0
    for index, (action_choice, actor_choice, reason_choice, withdraw_choice) in enumerate(steps):
        action = _action_for(consultation.status, action_choice)
        # Half the time the legitimate actor for the action (None), otherwise anyone, permitted or not.
        actor = ACTOR_NAMES[actor_choice] if actor_choice < len(ACTOR_NAMES) else None
        reason = REASONS[reason_choice]
        at = T0 + timedelta(minutes=index)
        if not withdrawn and withdraw_choice == 0:
            consultation = replace(
                consultation, consents=tuple(replace(c, withdrawn_at=at) for c in consultation.consents)
            )
            withdrawn = True
        before = consultation
        outcome = wellformed(decide(before, command_for(action, actor, reason=reason, at=at)))
        if not outcome.allowed:
            assert outcome.consultation is before
            continue
        allowed_count += 1
        consultation = outcome.consultation
        assert (before.status, action) in EXPECTED_TARGETS
        assert consultation.status is EXPECTED_TARGETS[(before.status, action)]
        assert consultation.status in REACHABLE
        acting = outcome.consultation.history[-1].actor_id
        assert actor is None or acting == ACTORS[actor].user_id
        assert (
            capacities(before, command_for(action, actor).actor) & TRANSITIONS[(before.status, action)].actors
        )
        if withdrawn:
            assert action in MOVES_WITHOUT_CONSENT
        if action in {A.REJECT, A.HOLD, A.FAIL, A.CANCEL, A.MARK_ENTERED_IN_ERROR}:
            assert consultation.status_reason
    event(f"ends {business_status(consultation)}")  # shown by --hypothesis-show-statistics
    assert len(consultation.history) == allowed_count
    for earlier, later in itertools.pairwise(consultation.history):
        assert earlier.target is later.source
    if consultation.status in (S.REJECTED,):
        assert consultation.status_reason
    if consultation.status is S.COMPLETED:
        opinion = consultation.opinion
        assignee = consultation.assigned_consultant
        assert opinion is not None
        assert assignee is not None
        assert opinion.signature_verified
        assert opinion.signer_id == assignee.practitioner_id
        assert opinion.origin is OpinionOrigin.CLINICIAN
    if consultation.decision is not None:
        assert consultation.decision.decided_by == REQUESTER.practitioner_id
        assert any(change.target is S.COMPLETED for change in consultation.history)
    if any(change.action is A.SUBMIT for change in consultation.history):
        assert consultation.submitted_at is not None


# ---- response deadlines (TC-04) ------------------------------------------------------------------


def test_no_response_is_owed_outside_requested_and_received() -> None:
    for status in S:
        if status not in (S.REQUESTED, S.RECEIVED):
            assert response_schedule(in_status(status, received_at=T0)) is None


def test_acknowledge_then_decide_deadlines() -> None:
    requested = decide(DRAFT, command_for(A.SUBMIT)).consultation
    schedule = response_schedule(requested)
    assert schedule is not None
    assert schedule.stage is SlaStage.ACKNOWLEDGE
    assert (schedule.started_at, schedule.remind_at, schedule.deadline, schedule.escalate_at) == (
        T0,
        T0 + timedelta(hours=2),
        T0 + timedelta(hours=4),
        T0 + timedelta(hours=4),
    )
    assert schedule.state(T0 + timedelta(hours=1)) is SlaState.ON_TIME
    assert schedule.state(T0 + timedelta(hours=2)) is SlaState.REMINDER_DUE
    assert schedule.state(T0 + timedelta(hours=4)) is SlaState.ESCALATION_DUE
    received = decide(requested, command_for(A.RECEIVE, at=T0 + timedelta(hours=1))).consultation
    decide_schedule = response_schedule(received)
    assert decide_schedule is not None
    assert decide_schedule.stage is SlaStage.DECIDE
    assert decide_schedule.deadline == T0 + timedelta(hours=25)


def test_escalation_after_a_grace_period_and_per_priority() -> None:
    policy = replace(
        DEFAULT_SLA_POLICY, escalate_after_deadline=timedelta(minutes=30), remind_after_share=0.75
    )
    urgent = in_status(S.RECEIVED, received_at=T0, invitation=replace(INVITATION, priority=Priority.URGENT))
    schedule = response_schedule(urgent, policy)
    assert schedule is not None
    assert schedule.remind_at == T0 + timedelta(hours=3)
    assert schedule.deadline == T0 + timedelta(hours=4)
    assert schedule.state(T0 + timedelta(hours=4, minutes=10)) is SlaState.OVERDUE
    assert schedule.state(T0 + timedelta(hours=4, minutes=30)) is SlaState.ESCALATION_DUE
    stat = replace(urgent, invitation=replace(INVITATION, priority=Priority.STAT))
    stat_schedule = response_schedule(stat)
    assert stat_schedule is not None
    assert stat_schedule.deadline == T0 + timedelta(minutes=30)


def test_deadline_never_after_the_inviting_sides_time_frame() -> None:
    frame = TimeFrame(T0 - timedelta(hours=1), T0 + timedelta(hours=6))
    received = in_status(S.RECEIVED, received_at=T0, invitation=replace(INVITATION, time_frame=frame))
    schedule = response_schedule(received)
    assert schedule is not None
    assert schedule.deadline == T0 + timedelta(hours=6)
    assert schedule.remind_at == T0 + timedelta(hours=3)


def test_sla_policy_is_validated() -> None:
    times = DEFAULT_SLA_POLICY.times
    with pytest.raises(ValueError, match="share"):
        SlaPolicy(times, remind_after_share=1.0)
    with pytest.raises(ValueError, match="negative"):
        SlaPolicy(times, escalate_after_deadline=timedelta(minutes=-1))
    with pytest.raises(ValueError, match="no response times"):
        SlaPolicy({Priority.ROUTINE: times[Priority.ROUTINE]})
    zero = ResponseTimes(timedelta(0), timedelta(hours=1))
    with pytest.raises(ValueError, match="positive"):
        SlaPolicy(dict.fromkeys(Priority, zero))
    schedule = response_schedule(in_status(S.REQUESTED))
    assert schedule is not None
    with pytest.raises(ValueError, match="time zone"):
        schedule.state(datetime(2025, 3, 10))  # noqa: DTZ001
