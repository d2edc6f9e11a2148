"""Every route × every role (and no login at all): allowed, or refused with 401/403 — never a 500.

A role without the route's permission must get 403; a role with it must not be refused for its role
(it may still get 403 for a patient outside its care). Path parameters point at real demo records, so
handlers actually run.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import TEST_SECRET, Demo, issue_token
from tests.core.test_access import principal
from tests.core.test_route_rules import api_routes, rules
from tianfu.app import create_app
from tianfu.core.deadletter import service as deadletters
from tianfu.core.http.deps import PUBLIC, Requirement
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service as outputs
from tianfu.core.patients.models import Encounter
from tianfu.core.security.permissions import has_permission
from tianfu.core.settings import Settings

ROLES = {
    "nurse": "nurse.wang",
    "physician": "dr.zhang",
    "radiologist": "rad.liu",
    "consultant": "consult.zhao",
    "admin": "admin",
    "auditor": "auditor",
    "patient": "patient.liu",
    "regulator": "regulator.sc",
}


def _all_routes() -> list[tuple[str, str]]:
    settings = Settings(demo=False, secret_key=TEST_SECRET, database_url="sqlite://")
    app = create_app(settings)
    return [(method, route.path) for method, route in api_routes(app)]


ROUTES = _all_routes()


class _PathValues(dict[str, str]):
    """Parameters the kernel does not know (a module's own records) get an id that matches nothing."""

    def __missing__(self, key: str) -> str:
        return "00000000-0000-4000-8000-000000000000"


def _path_values(kernel: Kernel, db: Session, demo: Demo) -> _PathValues:
    patient = demo.patient("刘芳")
    encounter = next(e for e in db.query(Encounter).filter(Encounter.patient_id == patient.id))
    output = outputs.record_output(
        db,
        kernel.audit,
        actor=principal(db, "dr.zhang").actor,
        module="test",
        task="t",
        model_name="m",
        model_version="1",
        input_ref="r",
        output={},
        patient_id=patient.id,
    )
    dead = deadletters.store(db, source="test", reason="bad", payload=b"MSH|broken")
    db.commit()
    return _PathValues(
        patient_id=patient.id,
        encounter_id=encounter.id,
        user_id=demo.user("nurse.li").id,
        organization_id=demo.organization("TFRM").id,
        location_id=demo.ward("CARD1").id,
        ward_id=demo.ward("CARD1").id,
        output_id=output.id,
        dead_letter_id=dead.id,
        seq="1",
        code="en",
    )


def _consultation(kernel: Kernel, db: Session, demo: Demo) -> str:
    """A submitted consultation (dr.huang at JJSQ invites TFRM), so consultation routes really run."""
    from datetime import timedelta

    from tianfu.consult import service as consult
    from tianfu.consult import workflow as wf
    from tianfu.consult.demo import seed as seed_consult
    from tianfu.core.db import utcnow

    seed_consult(kernel)
    huang = principal(db, "dr.huang")
    now = utcnow()
    fields = consult.DraftFields(
        reason="r",
        purpose="p",
        case_summary="c",
        specialty="心血管内科",
        title=3,
        time_frame_earliest=now,
        time_frame_latest=now + timedelta(days=2),
    )
    row = consult.create_draft(
        db,
        kernel.audit,
        huang,
        patient_id=demo.patient("黄玉珍").id,
        invited_institution_id=demo.organization("TFRM").id,
        fields=fields,
    )
    for kind in ("treatment", "patient-privacy"):
        consult.record_consent(db, kernel.audit, huang, row.id, kind=kind, signed_form_ref="scan://form")
    consult.transition(db, kernel.audit, huang, row.id, wf.Action.SUBMIT)
    db.commit()
    return row.id


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_for_every_role(
    method: str, path: str, kernel: Kernel, settings: Settings, db: Session, demo: Demo
) -> None:
    app = create_app(settings, kernel=kernel)
    route = next(r for m, r in api_routes(app) if r.path == path and m == method)
    found = rules(route.dependant)
    requirement = next((r for r in found if isinstance(r, Requirement)), None)
    values = _path_values(kernel, db, demo)
    if "{consultation_id}" in path:
        values["consultation_id"] = _consultation(kernel, db, demo)
    if "text/event-stream" in str(route.responses):
        values = _PathValues()  # an endless stream on a real record would never return: check the guard only
    url = re.sub(r"\{(\w+):path\}", r"{\1}", path).format_map(values)  # Starlette's path converter
    body = {"json": {}} if method in {"POST", "PATCH", "PUT"} else {}
    with TestClient(app, follow_redirects=False) as client:
        anonymous = client.request(method, url, **body)
        assert anonymous.status_code != 500, anonymous.text
        if PUBLIC not in found:
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        for role, username in ROLES.items():
            headers = issue_token(db, username)
            response = client.request(method, url, headers=headers, **body)
            assert response.status_code != 500, (role, response.text)
            if requirement is None:
                continue
            allowed = all(has_permission(role, p) for p in requirement.permissions)
            if not allowed:
                assert response.status_code == 403, (role, response.status_code, response.text)
            else:
                assert response.status_code != 401, (role, response.text)
                if response.status_code == 403:
                    assert "your role" not in response.text, (role, response.text)
