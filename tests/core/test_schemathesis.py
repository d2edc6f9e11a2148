"""Property-based API fuzzing with schemathesis against the OpenAPI document.

For every operation, generated requests (valid and invalid) must get documented status codes and
content types, bodies that match the schema, invalid input must be rejected with 4xx, and nothing may
cause a server error. The app is built at import (schemathesis collects one test per operation then), on
a database that a fixture fills from the demo template before the first example runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import make_url

from tests.conftest import BACKEND, POSTGRES_URL, Template, _pg_admin, _settings, issue_token, mark_used
from tianfu.app import create_app
from tianfu.core.kernel import Kernel


@schemathesis.serializer("multipart/related")
def _related(ctx: Any, value: Any) -> bytes:
    """STOW-RS bodies: schemathesis has no multipart/related encoder; send what it generated as bytes."""
    return value if isinstance(value, bytes) else str(value).encode()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

_VAR = Path(tempfile.mkdtemp(prefix="tianfu-schemathesis-"))
if BACKEND == "sqlite":
    _URL = f"sqlite:///{_VAR / 'api.db'}"
else:
    _URL = (
        make_url(POSTGRES_URL)
        .set(database=f"tianfu_s_{uuid.uuid4().hex[:10]}")
        .render_as_string(hide_password=False)
    )
KERNEL = Kernel(_settings(_URL, _VAR))
APP = create_app(KERNEL.settings, kernel=KERNEL)
# Read the document straight from the app: loading it over ASGI would start the app (and open the
# database) before the fixture below has put the demo data in place.
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(APP.openapi())))
schema.app = APP
_tokens: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _database(template: Template) -> Iterator[None]:
    if template.admin_url is None:
        shutil.copyfile(make_url(template.url).database or "", _VAR / "api.db")
    else:
        with _pg_admin(template.admin_url) as conn:
            conn.execute(
                f'CREATE DATABASE "{make_url(_URL).database}" TEMPLATE "{make_url(template.url).database}"'
            )
    yield
    KERNEL.engine.dispose()
    if template.admin_url is not None:
        with _pg_admin(template.admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{make_url(_URL).database}" WITH (FORCE)')


def _headers(path: str) -> dict[str, str]:
    username = (
        "admin"
        if path.startswith(("/api/v1/users", "/api/v1/dead-letters"))
        else "auditor"
        if "/audit" in path
        else "regulator.sc"
        if "/regulator/" in path
        else "dr.zhang"
    )
    if username not in _tokens:
        with KERNEL.sessions() as session:
            _tokens[username] = issue_token(session, username)
    return _tokens[username]


@schema.exclude(path="/api/v1/auth/logout").parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_document(case: Any, request: pytest.FixtureRequest) -> None:
    mark_used(request, BACKEND)
    case.call_and_validate(headers=_headers(case.path), checks=CHECKS)
