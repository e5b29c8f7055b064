"""Liveness, readiness, the public key, and problem+json for the framework's own errors."""

from __future__ import annotations

from fastapi.testclient import TestClient

from credit_hub.errors import PROBLEM_BASE


def test_healthz(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_migration_at_head(app_client: TestClient) -> None:
    response = app_client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["migration"] == body["expected_migration"] is not None


def test_readyz_is_503_when_schema_is_behind(app_client: TestClient) -> None:
    app_client.app.state.head_revision = "not-the-head"  # type: ignore[attr-defined]
    response = app_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"] == PROBLEM_BASE + "service-unavailable"


def test_unknown_path_and_wrong_method_are_problems(app_client: TestClient) -> None:
    missing = app_client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == PROBLEM_BASE + "not-found"
    wrong = app_client.delete("/v1/standards")
    assert wrong.status_code == 405
    assert wrong.json()["type"] == PROBLEM_BASE + "method-not-allowed"


def test_unexpected_exception_is_a_problem_500(app_client: TestClient) -> None:
    app = app_client.app

    @app.get("/boom")  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("secret detail 11010519491231002X")

    response = app_client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEM_BASE + "internal-error"
    assert "11010519491231002X" not in response.text


def test_security_headers_and_request_id(app_client: TestClient) -> None:
    response = app_client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.headers["x-content-type-options"] == "nosniff"
    generated = app_client.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"


def test_openapi_and_docs(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    assert "/v1/standards/{standard_id}/validate" in spec["paths"]
    assert "Problem" in spec["components"]["schemas"]
    assert {t["name"] for t in spec["tags"]} >= {"standards", "ops"}
    docs = app_client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_public_key_verifies_a_signature(app_client: TestClient) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    body = app_client.get("/v1/keys").json()
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["keys"][0]["public_key"]))
    keyring = app_client.app.state.keyring  # type: ignore[attr-defined]
    key.verify(base64.b64decode(keyring.sign(b"payload")), b"payload")
