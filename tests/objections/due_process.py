"""Helpers of the due-process tests: a hub on a FixedClock, pushes, subject sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Caller, pushed

# A Monday: working-day deadlines are easy to read.
START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
READ = {"purpose": "procurement", "case_ref": "FJZC2026-G-001"}


def push(
    client: TestClient, caller: Caller, records: list[Any], standard: str = "administrative_penalty"
) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = pushed(client, caller, records, standard)["records"]
    return outcomes


def subject_headers(client: TestClient, operator: Caller, key: str) -> dict[str, str]:
    """Issue an access code as an operator, redeem it, answer the subject's bearer header."""
    issued = client.post(f"/v1/admin/subjects/{key}/access-codes", headers=operator.headers)
    assert issued.status_code == 201, issued.text
    opened = client.post("/v1/self/session", json={"code": issued.json()["code"]})
    assert opened.status_code == 201, opened.text
    return {"Authorization": f"Bearer {opened.json()['token']}"}


def profile(client: TestClient, caller: Caller, key: str, **params: Any) -> Any:
    response = client.get(
        f"/v1/subjects/{key}/profile", params=READ | params, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def screen(client: TestClient, caller: Caller, key: str) -> Any:
    response = client.post(
        "/v1/profiles/screen", json={"identifiers": [key], **READ}, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["results"][0]
