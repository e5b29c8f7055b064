"""The public standards endpoints, including the offline validator's error shapes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from credit_hub.errors import PROBLEM_BASE
from tests import factories

PROBLEM = "application/problem+json"


def test_list_standards(app_client: TestClient) -> None:
    response = app_client.get("/v1/standards")
    assert response.status_code == 200
    body = {s["id"]: s for s in response.json()}
    assert body["administrative_penalty"]["current_version"] == "1.0"
    assert body["administrative_penalty"]["versions"][0]["status"] == "current"


def test_get_standard_and_download_schema(app_client: TestClient) -> None:
    assert app_client.get("/v1/standards/administrative_licensing").status_code == 200
    response = app_client.get("/v1/standards/administrative_penalty/versions/1.0")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["counterpart_uscc"]["x-code"] == "CF_XDR_SHXYM"


def test_unknown_standard_or_version_is_a_problem(app_client: TestClient) -> None:
    for path in ("/v1/standards/nope", "/v1/standards/administrative_penalty/versions/7.0"):
        response = app_client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == PROBLEM_BASE + "standard-not-found"


def test_validate_reports_each_error_with_index_pointer_code(app_client: TestClient) -> None:
    good = factories.penalty(1)
    bad = factories.penalty(2, counterpart_uscc="914403001922038217")
    response = app_client.post(
        "/v1/standards/administrative_penalty/validate", json={"records": [good, bad, 42]}
    )
    assert response.status_code == 200
    report = response.json()
    assert (report["received"], report["valid"], report["invalid"]) == (3, 1, 2)
    errors = {(e["index"], e["pointer"], e["code"]) for e in report["errors"]}
    assert errors == {(1, "/counterpart_uscc", "format.uscc"), (2, "", "type")}
    assert report["errors"][0]["source_id"] == bad["decision_doc_no"]


def test_validate_malformed_json(app_client: TestClient) -> None:
    response = app_client.post(
        "/v1/standards/administrative_penalty/validate",
        content=b'{"records": [{"a": 1,]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "malformed-json"
    assert problem["line"] == 1
    assert problem["column"] > 1


def test_validate_bad_envelopes(app_client: TestClient) -> None:
    url = "/v1/standards/administrative_penalty/validate"
    cases = [
        ([], 400, "malformed-body"),
        ({"records": []}, 422, "request-invalid"),
        ({"records": {}}, 422, "request-invalid"),
        ({"records": [{}], "extra": 1}, 422, "request-invalid"),
        ({"records": [{}], "version": 1}, 422, "request-invalid"),
        ({"records": [{}], "version": "0.1"}, 404, "standard-not-found"),
    ]
    for body, status, kind in cases:
        response = app_client.post(url, json=body)
        assert response.status_code == status, body
        assert response.json()["type"] == PROBLEM_BASE + kind
    assert (
        app_client.post(url, content=b"", headers={"content-type": "application/json"}).status_code
        == 400
    )
    wrong_type = app_client.post(url, content=b"records", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415


def test_validate_too_many_records(app_client: TestClient) -> None:
    limit = app_client.app.state.settings.max_validate_records  # type: ignore[attr-defined]
    response = app_client.post(
        "/v1/standards/administrative_penalty/validate", json={"records": [{}] * (limit + 1)}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "max_items"


def test_oversized_body_is_413(app_client: TestClient) -> None:
    limit = app_client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = app_client.post(
        "/v1/standards/administrative_penalty/validate",
        content=b" " * (limit + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == PROBLEM_BASE + "payload-too-large"


def test_oversized_streamed_body_without_length_is_413(app_client: TestClient) -> None:
    limit = app_client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]

    def chunks() -> object:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    response = app_client.post(
        "/v1/standards/administrative_penalty/validate",
        content=chunks(),  # type: ignore[arg-type]
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
