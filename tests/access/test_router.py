"""/v1/admin end to end: operators register clients, issue, list and revoke their keys, disable
and enable them; everyone else is refused; every write is audited."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.access.models import ApiKey, Client
from credit_hub.audit.models import AuditEvent
from credit_hub.errors import PROBLEM_BASE
from tests import factories
from tests.conftest import Caller

CLIENTS = "/v1/admin/clients"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def authenticates(app_client: TestClient, key: str) -> bool:
    """Whether the key is accepted: any client may ask for a record; an unknown one is a 404
    for an authenticated caller and a 401 for anyone else."""
    status = app_client.get(f"/v1/records/{uuid.uuid4()}", headers=bearer(key)).status_code
    assert status in (401, 404)
    return status == 404


def push_one(app_client: TestClient, key: str, n: int = 1) -> int:
    body = {"standard": "administrative_penalty", "records": [factories.penalty(n)]}
    return app_client.post("/v1/records", json=body, headers=bearer(key)).status_code


def create(app_client: TestClient, operator: Caller, **body: Any) -> Any:
    return app_client.post(CLIENTS, json=body, headers=operator.headers)


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def assert_problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEM_BASE + kind
    assert problem["status"] == status
    return problem


DEPARTMENT = {
    "kind": "department",
    "name": "福州市生态环境局",
    "uscc": factories.DEPARTMENT_USCC,
    "standards": ["administrative_penalty"],
}
AGENCY = {
    "kind": "agency",
    "name": "福州市公共资源交易中心",
    "standards": ["administrative_penalty", "administrative_licensing"],
    "scopes": ["unpublished"],
}
OPERATOR = {"kind": "operator", "name": "平台运维"}


@pytest.mark.parametrize("body", [DEPARTMENT, AGENCY, OPERATOR], ids=lambda b: b["kind"])
def test_operator_registers_a_client_whose_first_key_works_at_once(
    app_client: TestClient, operator: Caller, session: Session, body: dict[str, Any]
) -> None:
    response = create(app_client, operator, **body)
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["api_key"]
    assert key.startswith(created["key"]["prefix"] + "_")
    assert created["key"]["revoked_at"] is None
    stored = session.get(Client, uuid.UUID(created["id"]))
    assert stored is not None
    assert stored.kind == body["kind"]
    assert stored.name == body["name"]
    assert stored.uscc == body.get("uscc")
    assert stored.standards == body.get("standards", [])
    assert stored.scopes == body.get("scopes", [])
    assert stored.disabled_at is None
    # Only the key's hash is kept.
    api_key = session.get(ApiKey, uuid.UUID(created["key"]["id"]))
    assert api_key is not None
    assert api_key.client_id == stored.id
    assert api_key.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (api_key.prefix, api_key.key_hash, api_key.label)
    assert authenticates(app_client, key)


def test_a_registered_department_pushes_with_its_new_key(
    app_client: TestClient, operator: Caller
) -> None:
    key = create(app_client, operator, **DEPARTMENT).json()["api_key"]
    assert push_one(app_client, key) == 201


def test_the_new_operator_administers_too(app_client: TestClient, operator: Caller) -> None:
    key = create(app_client, operator, **OPERATOR).json()["api_key"]
    assert app_client.get(CLIENTS, headers=bearer(key)).status_code == 200


def test_keys_are_never_shown_again_only_their_prefix(
    app_client: TestClient, operator: Caller
) -> None:
    created = create(app_client, operator, **DEPARTMENT).json()
    key, client_id = created["api_key"], created["id"]
    second = app_client.post(
        f"{CLIENTS}/{client_id}/keys", json={"label": "backup"}, headers=operator.headers
    ).json()
    listing = app_client.get(f"{CLIENTS}/{client_id}/keys", headers=operator.headers)
    assert listing.status_code == 200
    keys = listing.json()
    assert [k["id"] for k in keys] == [created["key"]["id"], second["id"]]
    assert [k["label"] for k in keys] == ["first key", "backup"]
    for item in keys:
        assert set(item) == {"id", "prefix", "label", "created_at", "revoked_at"}
    assert [k["prefix"] for k in keys] == [created["key"]["prefix"], second["prefix"]]
    reads = [
        listing,
        app_client.get(CLIENTS, headers=operator.headers),
        app_client.get(f"{CLIENTS}/{client_id}", headers=operator.headers),
    ]
    for read in reads:
        assert read.status_code == 200
        assert key not in read.text
        assert second["api_key"] not in read.text
    shown = app_client.get(f"{CLIENTS}/{client_id}", headers=operator.headers).json()
    assert shown["id"] == client_id
    assert "api_key" not in shown


@pytest.mark.parametrize(
    "standards", [["tax_rating"], ["administrative_penalty", "tax_rating"]], ids=["one", "mixed"]
)
def test_unknown_standard_is_422(
    app_client: TestClient, operator: Caller, session: Session, standards: list[str]
) -> None:
    before = count(session, Client)
    response = create(app_client, operator, **(DEPARTMENT | {"standards": standards}))
    problem = assert_problem(response, 422, "request-invalid")
    assert problem["errors"][0]["code"] == "unknown_standard"
    assert problem["errors"][0]["pointer"] == "/standards"
    assert count(session, Client) == before
    assert count(session, AuditEvent) == 0


def test_unknown_standard_in_an_update_is_422(
    app_client: TestClient, operator: Caller, department: Caller, session: Session
) -> None:
    response = app_client.patch(
        f"{CLIENTS}/{department.client.id}",
        json={"standards": ["tax_rating"]},
        headers=operator.headers,
    )
    problem = assert_problem(response, 422, "request-invalid")
    assert problem["errors"][0]["code"] == "unknown_standard"
    session.refresh(department.client)
    assert department.client.standards == ["administrative_penalty", "administrative_licensing"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uscc", "914403001922038217"),  # wrong check character
        ("uscc", "91350100"),  # too short
        ("pushes_for", ["914403001922038217"]),
    ],
)
def test_invalid_uscc_is_422(
    app_client: TestClient, operator: Caller, session: Session, field: str, value: Any
) -> None:
    before = count(session, Client)
    response = create(app_client, operator, **(DEPARTMENT | {field: value}))
    problem = assert_problem(response, 422, "request-invalid")
    assert problem["errors"][0]["pointer"] == f"/{field}"
    assert count(session, Client) == before


def test_disabled_client_answers_401_until_enabled_again(
    app_client: TestClient, operator: Caller, department: Caller, session: Session
) -> None:
    url = f"{CLIENTS}/{department.client.id}"
    disabled = app_client.patch(url, json={"disabled": True}, headers=operator.headers)
    assert disabled.status_code == 200
    assert disabled.json()["disabled_at"] is not None
    session.refresh(department.client)
    assert department.client.disabled_at is not None
    refused = app_client.get(f"/v1/records/{uuid.uuid4()}", headers=department.headers)
    assert_problem(refused, 401, "unauthorized")
    assert push_one(app_client, department.key) == 401
    # A disabled client gets no new key either.
    issued = app_client.post(f"{url}/keys", json={}, headers=operator.headers)
    assert_problem(issued, 409, "conflict")
    enabled = app_client.patch(url, json={"disabled": False}, headers=operator.headers)
    assert enabled.status_code == 200
    assert enabled.json()["disabled_at"] is None
    assert push_one(app_client, department.key) == 201


def test_revoking_a_second_key_leaves_the_first_working(
    app_client: TestClient, operator: Caller, department: Caller, session: Session
) -> None:
    url = f"{CLIENTS}/{department.client.id}/keys"
    issued = app_client.post(url, json={"label": "rotation"}, headers=operator.headers)
    assert issued.status_code == 201
    second = issued.json()
    assert second["api_key"] != department.key
    assert second["label"] == "rotation"
    assert authenticates(app_client, second["api_key"])
    revoked = app_client.delete(f"{url}/{second['id']}", headers=operator.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    stored = session.get(ApiKey, uuid.UUID(second["id"]))
    assert stored is not None
    session.refresh(stored)
    assert stored.revoked_at is not None
    assert not authenticates(app_client, second["api_key"])
    assert push_one(app_client, second["api_key"]) == 401
    assert authenticates(app_client, department.key)
    assert push_one(app_client, department.key) == 201


ADMIN_CALLS = [
    ("GET", "/v1/admin/clients", None),
    ("POST", "/v1/admin/clients", OPERATOR),
    ("GET", "/v1/admin/clients/{client}", None),
    ("PATCH", "/v1/admin/clients/{client}", {"disabled": True}),
    ("POST", "/v1/admin/clients/{client}/keys", {}),
    ("GET", "/v1/admin/clients/{client}/keys", None),
    ("DELETE", "/v1/admin/clients/{client}/keys/{key}", None),
]


@dataclass
class Target:
    """The client the admin calls act on, and the id of its key."""

    caller: Caller
    key_id: uuid.UUID

    def url(self, path: str) -> str:
        return path.format(client=self.caller.client.id, key=self.key_id)


@pytest.fixture
def target(department: Caller, session: Session) -> Target:
    key_id = session.scalars(
        select(ApiKey.id).where(ApiKey.client_id == department.client.id)
    ).one()
    return Target(department, key_id)


@pytest.mark.parametrize("call", ADMIN_CALLS, ids=lambda c: f"{c[0]} {c[1]}")
@pytest.mark.parametrize("who", ["department", "agency"])
def test_non_operators_are_403(
    app_client: TestClient,
    target: Target,
    agency: Caller,
    session: Session,
    call: tuple[str, str, Any],
    who: str,
) -> None:
    method, path, body = call
    caller = target.caller if who == "department" else agency
    clients_before = count(session, Client)
    response = app_client.request(method, target.url(path), json=body, headers=caller.headers)
    assert_problem(response, 403, "forbidden")
    assert count(session, Client) == clients_before
    assert count(session, AuditEvent) == 0
    # Nothing happened to the target: its key still works.
    assert authenticates(app_client, target.caller.key)


@pytest.mark.parametrize("call", ADMIN_CALLS, ids=lambda c: f"{c[0]} {c[1]}")
@pytest.mark.parametrize("credentials", [None, "chk_nope_nope", "Basic b3A6b3A="])
def test_missing_or_unknown_credentials_are_401_with_a_bearer_challenge(
    app_client: TestClient,
    target: Target,
    call: tuple[str, str, Any],
    credentials: str | None,
) -> None:
    headers = {}
    if credentials is not None:
        headers["Authorization"] = (
            credentials if credentials.startswith("Basic") else f"Bearer {credentials}"
        )
    method, path, body = call
    response = app_client.request(method, target.url(path), json=body, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/admin/clients/{missing}", None),
        ("PATCH", "/v1/admin/clients/{missing}", {"name": "无"}),
        ("POST", "/v1/admin/clients/{missing}/keys", {}),
        ("GET", "/v1/admin/clients/{missing}/keys", None),
        ("DELETE", "/v1/admin/clients/{missing}/keys/{missing}", None),
    ],
)
def test_unknown_client_is_404(
    app_client: TestClient,
    operator: Caller,
    session: Session,
    method: str,
    path: str,
    body: Any,
) -> None:
    url = path.format(missing=uuid.uuid4())
    response = app_client.request(method, url, json=body, headers=operator.headers)
    assert_problem(response, 404, "not-found")
    assert count(session, AuditEvent) == 0


def test_a_key_is_revoked_only_through_its_own_client(
    app_client: TestClient, operator: Caller, target: Target, agency: Caller
) -> None:
    response = app_client.delete(
        f"{CLIENTS}/{agency.client.id}/keys/{target.key_id}", headers=operator.headers
    )
    assert_problem(response, 404, "not-found")
    assert authenticates(app_client, target.caller.key)


def test_every_admin_write_is_audited(
    app_client: TestClient, operator: Caller, session: Session
) -> None:
    created = create(app_client, operator, **DEPARTMENT).json()
    client_id = created["id"]
    issued = app_client.post(
        f"{CLIENTS}/{client_id}/keys", json={"label": "second"}, headers=operator.headers
    ).json()
    app_client.get(f"{CLIENTS}/{client_id}/keys", headers=operator.headers)  # a read: no event
    app_client.delete(f"{CLIENTS}/{client_id}/keys/{issued['id']}", headers=operator.headers)
    app_client.patch(
        f"{CLIENTS}/{client_id}",
        json={"name": "福州市生态环境局（新）", "disabled": True},
        headers=operator.headers,
    )
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.action for e in events] == [
        "client.created",
        "key.issued",
        "key.revoked",
        "client.updated",
    ]
    assert {e.actor_id for e in events} == {operator.client.id}
    assert {e.actor_kind for e in events} == {"operator"}
    assert all(e.payload and e.payload["client_id"] == client_id for e in events)
    assert events[0].payload == {"client_id": client_id, "kind": "department"}
    assert events[1].payload == {"client_id": client_id, "key_id": issued["id"]}
    assert events[2].payload == {"client_id": client_id, "key_id": issued["id"]}
    assert events[3].payload == {"client_id": client_id, "fields": ["disabled", "name"]}
    # The events name keys by id; the keys themselves appear nowhere.
    for event in events:
        assert created["api_key"] not in str(event.payload)
        assert issued["api_key"] not in str(event.payload)
