"""Bad input gets a clear 4xx problem document, never a 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

Login = Callable[[str], dict[str, str]]


def _is_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert str(body["type"]).startswith("urn:tianfu:problem:")
    assert body["title"]
    return body


def test_malformed_json_is_400(client: TestClient, token_for: Login) -> None:
    response = client.post(
        "/api/v1/patients",
        headers=token_for("admin") | {"content-type": "application/json"},
        content=b'{"name": "x", "gender": ',
    )
    body = _is_problem(response, 400)
    assert body["type"] == "urn:tianfu:problem:malformed-json"


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "x", "gender": 5},
        {"name": "x", "gender": "female", "birth_date": "yesterday"},
        {"name": "x", "gender": "female", "unexpected": True},
        {"gender": "female"},
        [],
        "just a string",
    ],
)
def test_wrong_types_missing_and_unknown_fields_are_422(
    client: TestClient, token_for: Login, payload: object
) -> None:
    body = _is_problem(client.post("/api/v1/patients", headers=token_for("admin"), json=payload), 422)
    assert body["errors"]


def test_nul_characters_are_refused(client: TestClient, token_for: Login) -> None:
    _is_problem(
        client.post(
            "/api/v1/patients", headers=token_for("admin"), json={"name": "a\x00b", "gender": "male"}
        ),
        422,
    )


def test_oversized_body_is_413(client: TestClient, token_for: Login) -> None:
    big = b'{"name": "' + b"x" * 2_000_000 + b'", "gender": "male"}'
    response = client.post(
        "/api/v1/patients", headers=token_for("admin") | {"content-type": "application/json"}, content=big
    )
    _is_problem(response, 413)


def test_oversized_chunked_body_is_413(client: TestClient, token_for: Login) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    response = client.post(
        "/api/v1/patients",
        headers=token_for("admin") | {"content-type": "application/json"},
        content=chunks(),
    )
    _is_problem(response, 413)


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    _is_problem(client.get("/api/v1/nothing-here"), 404)
    _is_problem(client.delete("/api/v1/auth/token"), 405)


def test_bad_query_parameters_are_422(client: TestClient, token_for: Login) -> None:
    headers = token_for("nurse.wang")
    _is_problem(client.get("/api/v1/patients", params={"limit": 0}, headers=headers), 422)
    _is_problem(client.get("/api/v1/patients", params={"gender": "robot"}, headers=headers), 422)
    _is_problem(client.get("/api/v1/patients", params={"birth_date": "2020-13-45"}, headers=headers), 422)


def test_bad_token_is_401_not_500(client: TestClient) -> None:
    for header in (b"Bearer", b"Bearer ", "Bearer éé".encode(), b"Basic abc", b"Bearer " + b"x" * 5000):
        response = client.get("/api/v1/patients", headers={"Authorization": header})  # type: ignore[dict-item]
        assert response.status_code == 401


def test_pages_get_an_error_page_not_json(client: TestClient) -> None:
    response = client.get("/no-such-page", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "未找到" in response.text


def test_security_headers_on_every_response(client: TestClient) -> None:
    response = client.get("/login")
    assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
