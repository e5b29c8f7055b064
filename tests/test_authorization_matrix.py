"""The authorization matrix: every route × every kind of caller → the expected status.

Each row names a route and the status each caller gets; a route of the app without a row fails
`test_every_route_has_a_row`. Every cell runs inside a savepoint that is rolled back, so a
write by one caller never changes what the next one sees. For every answer: no clear ID number
unless the caller holds `personal_data`, and a 404 for what a caller may not see has the same
problem type as a 404 for an id that does not exist.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind, Scope
from credit_hub.app import create_app
from credit_hub.clock import FixedClock
from credit_hub.config import Settings
from credit_hub.db import get_db
from tests import conftest, factories
from tests.conftest import Caller, register
from tests.objections.due_process import READ, START

CALLERS = (
    "none",
    "revoked",
    "subject",
    "dept_owner",
    "dept_other",
    "dept_other_standard",
    "agency",
    "agency_pd",
    "operator",
)
CLIENTS = CALLERS[3:]
ANY_CLIENT = {k: 200 for k in CLIENTS}
PERSON_ID = factories.make_id_number(7)
NOT_FOUND = "https://credit-hub.example/problems/not-found"


def for_(allowed: dict[str, int], *, others: int = 403, subject: int = 401) -> dict[str, int]:
    """A client-key route: no or revoked key 401, a subject token `subject`, the allowed kinds
    as given, every other client `others`."""
    cells = {"none": 401, "revoked": 401, "subject": subject}
    cells |= {k: others for k in CLIENTS}
    return cells | allowed


def public(status: int = 200) -> dict[str, int]:
    return dict.fromkeys(CALLERS, status)


@dataclass
class World:
    """What exists before every cell: clients, records, a submission, an objection, ..."""

    headers: dict[str, dict[str, str]]
    ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def matrix_app(settings: Settings, session: Session) -> FastAPI:
    quiet = settings.model_copy(update={"webhooks_worker": False, "webhooks_allow_loopback": True})
    app = create_app(quiet, clock=FixedClock(START))
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    return app


@pytest.fixture
def http(matrix_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(matrix_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def world(http: TestClient, session: Session) -> World:
    dept = factories.DEPARTMENT_USCC
    callers: dict[str, Caller] = {
        "dept_owner": register(session, ClientKind.DEPARTMENT, uscc=dept),
        "dept_other": register(
            session, ClientKind.DEPARTMENT, uscc=factories.OTHER_DEPARTMENT_USCC
        ),
        "dept_other_standard": register(
            session, ClientKind.DEPARTMENT, uscc=dept, standards=["administrative_licensing"]
        ),
        "agency": register(session, ClientKind.AGENCY),
        "agency_pd": register(
            session, ClientKind.AGENCY, scopes=[Scope.PERSONAL_DATA, Scope.UNPUBLISHED]
        ),
        "operator": register(session, ClientKind.OPERATOR),
    }
    revoked = register(session, ClientKind.OPERATOR)
    headers = {k: c.headers for k, c in callers.items()} | {"none": {}}
    w = World(headers=headers)
    op = headers["operator"]

    pushed = http.post(
        "/v1/records",
        json={
            "standard": "administrative_penalty",
            "records": [factories.penalty(1), factories.person_penalty(2, person_id_no=PERSON_ID)],
        },
        headers=headers["dept_owner"],
    )
    assert pushed.status_code == 201, pushed.text
    report = pushed.json()
    w.ids["submission"] = report["submission_id"]
    w.ids["record"] = report["records"][0]["record_id"]
    w.ids["person_record"] = report["records"][1]["record_id"]
    w.ids["uscc"] = factories.penalty(1)["counterpart_uscc"]
    w.ids["subject"] = http.get(
        f"/v1/subjects/{w.ids['uscc']}/profile", params=READ, headers=headers["agency"]
    ).json()["subject"]["id"]

    key = http.post(f"/v1/admin/clients/{revoked.client.id}/keys", json={}, headers=op).json()
    w.ids["client"] = str(revoked.client.id)
    w.ids["key"] = key["id"]
    revoking = http.delete(f"/v1/admin/clients/{revoked.client.id}/keys/{key['id']}", headers=op)
    assert revoking.status_code == 200
    for old in http.get(f"/v1/admin/clients/{revoked.client.id}/keys", headers=op).json():
        http.delete(f"/v1/admin/clients/{revoked.client.id}/keys/{old['id']}", headers=op)
    w.headers["revoked"] = revoked.headers

    issued = http.post(f"/v1/admin/subjects/{w.ids['uscc']}/access-codes", headers=op).json()
    token = http.post("/v1/self/session", json={"code": issued["code"]}).json()["token"]
    w.headers["subject"] = {"Authorization": f"Bearer {token}"}

    objection = http.post(
        "/v1/objections",
        json={"record_id": w.ids["record"], "reason": "金额有误。"},
        headers=op,
    )
    assert objection.status_code == 201, objection.text
    w.ids["objection"] = objection.json()["id"]

    subscription = http.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hook"},
        headers=headers["agency"],
    )
    assert subscription.status_code == 201, subscription.text
    w.ids["subscription"] = subscription.json()["id"]
    for agency in ("agency", "agency_pd"):
        watched = http.put(f"/v1/watchlist/{w.ids['uscc']}", headers=headers[agency])
        assert watched.status_code == 200, watched.text
    return w


Body = Callable[[World], Any]


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route's template; {name} filled from World.ids by `fill`
    expected: dict[str, int]
    url: str | None = None  # when the cell's URL differs from the template
    params: dict[str, Any] | None = None
    body: Body | None = None
    content: bytes | None = None
    content_type: str | None = None


def _clients_body(w: World) -> Any:
    return {"kind": "agency", "name": "矩阵测试中心", "standards": ["administrative_penalty"]}


def _push(w: World) -> Any:
    return {"standard": "administrative_penalty", "records": [factories.penalty(3)]}


NDJSON = json.dumps(factories.penalty(4), ensure_ascii=False).encode() + b"\n"
RANDOM = str(uuid.UUID(int=7))

ROWS = [
    # Public: the same answer whoever asks, a revoked key included.
    Row("GET", "/healthz", public()),
    Row("GET", "/readyz", public()),
    Row("GET", "/v1/keys", public()),
    Row("GET", "/v1/standards", public()),
    Row("GET", "/v1/standards/{standard_id}", public(), url="/v1/standards/administrative_penalty"),
    Row(
        "GET",
        "/v1/standards/{standard_id}/versions/{version}",
        public(),
        url="/v1/standards/administrative_penalty/versions/1.0",
    ),
    Row(
        "POST",
        "/v1/standards/{standard_id}/validate",
        public(),
        url="/v1/standards/administrative_penalty/validate",
        body=lambda w: {"records": [factories.penalty(5)]},
    ),
    Row("POST", "/v1/self/session", public(401), body=lambda w: {"code": "AAAAA-BBBBB-CCCCC"}),
    # Departments push and read their own.
    Row(
        "POST",
        "/v1/records",
        for_({"dept_owner": 201, "dept_other": 422}),
        body=_push,
    ),
    Row(
        "POST",
        "/v1/submissions",
        for_({"dept_owner": 202, "dept_other": 202}),
        params={"standard": "administrative_penalty", "format": "ndjson"},
        content=NDJSON,
        content_type="application/x-ndjson",
    ),
    Row(
        "GET",
        "/v1/submissions",
        for_({"dept_owner": 200, "dept_other": 200, "dept_other_standard": 200}),
    ),
    Row(
        "GET",
        "/v1/submissions/{submission_id}",
        for_({"dept_owner": 200, "dept_other": 404, "dept_other_standard": 404}),
        url="/v1/submissions/{submission}",
    ),
    Row(
        "GET",
        "/v1/submissions/{submission_id}/errors",
        for_({"dept_owner": 200, "dept_other": 404, "dept_other_standard": 404}),
        url="/v1/submissions/{submission}/errors",
    ),
    Row(
        "GET",
        "/v1/records/{record_id}",
        for_({"dept_owner": 200, "operator": 200}, others=404),
        url="/v1/records/{record}",
    ),
    Row(
        "GET",
        "/v1/records/{record_id}/history",
        for_({"dept_owner": 200, "operator": 200}, others=404),
        url="/v1/records/{person_record}/history",
    ),
    Row(
        "POST",
        "/v1/records/{record_id}/withdraw",
        for_({"dept_owner": 200, "dept_other": 404, "dept_other_standard": 404}),
        url="/v1/records/{record}/withdraw",
        body=lambda w: {"reason": "决定已撤销"},
    ),
    # Agencies read, for a purpose.
    Row(
        "GET",
        "/v1/subjects",
        for_({"agency": 200, "agency_pd": 200}),
        params={"q": "福州示例"},
    ),
    Row(
        "GET",
        "/v1/subjects/{key}/profile",
        for_({"agency": 200, "agency_pd": 200}),
        url="/v1/subjects/{uscc}/profile",
        params=READ,
    ),
    Row(
        "POST",
        "/v1/subjects/lookup",
        for_({"agency_pd": 200}),
        body=lambda w: {"id_type": "身份证", "id_number": PERSON_ID, **READ},
    ),
    Row(
        "POST",
        "/v1/profiles/screen",
        for_({"agency": 200, "agency_pd": 200}),
        body=lambda w: {"identifiers": [w.ids["uscc"]], **READ},
    ),
    Row(
        "GET",
        "/v1/subjects/{key}/access-log",
        for_({"operator": 200}, subject=200),
        url="/v1/subjects/{subject}/access-log",
    ),
    Row("GET", "/v1/changes", for_({"agency": 200, "agency_pd": 200})),
    Row("GET", "/v1/watchlist", for_({"agency": 200, "agency_pd": 200})),
    Row(
        "PUT",
        "/v1/watchlist/{key}",
        for_({"agency": 200, "agency_pd": 200}),
        url="/v1/watchlist/{uscc}",
    ),
    Row(
        "DELETE",
        "/v1/watchlist/{key}",
        for_({"agency": 204, "agency_pd": 204}),
        url="/v1/watchlist/{uscc}",
    ),
    Row(
        "POST",
        "/v1/watchlist",
        for_({"agency": 200, "agency_pd": 200}),
        body=lambda w: {"keys": [w.ids["uscc"]], "mode": "add"},
    ),
    # Subscriptions: the owning agency; another agency gets 404 as for a missing id.
    Row(
        "POST",
        "/v1/subscriptions",
        for_({"agency": 201, "agency_pd": 201}),
        body=lambda w: {"url": "http://127.0.0.1:9/other"},
    ),
    Row("GET", "/v1/subscriptions", for_({"agency": 200, "agency_pd": 200})),
    Row(
        "GET",
        "/v1/subscriptions/{subscription_id}",
        for_({"agency": 200, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}",
    ),
    Row(
        "PATCH",
        "/v1/subscriptions/{subscription_id}",
        for_({"agency": 200, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}",
        body=lambda w: {"description": "矩阵"},
    ),
    Row(
        "DELETE",
        "/v1/subscriptions/{subscription_id}",
        for_({"agency": 204, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}",
    ),
    Row(
        "POST",
        "/v1/subscriptions/{subscription_id}/secret",
        for_({"agency": 200, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}/secret",
        body=lambda w: {},
    ),
    Row(
        "GET",
        "/v1/subscriptions/{subscription_id}/deliveries",
        for_({"agency": 200, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}/deliveries",
    ),
    Row(
        "POST",
        "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/redeliver",
        for_({"agency": 404, "agency_pd": 404}),
        url="/v1/subscriptions/{subscription}/deliveries/" + RANDOM + "/redeliver",
    ),
    # Operators.
    Row("POST", "/v1/admin/clients", for_({"operator": 201}), body=_clients_body),
    Row("GET", "/v1/admin/clients", for_({"operator": 200})),
    Row(
        "GET",
        "/v1/admin/clients/{client_id}",
        for_({"operator": 200}),
        url="/v1/admin/clients/{client}",
    ),
    Row(
        "PATCH",
        "/v1/admin/clients/{client_id}",
        for_({"operator": 200}),
        url="/v1/admin/clients/{client}",
        body=lambda w: {"name": "改名"},
    ),
    Row(
        "POST",
        "/v1/admin/clients/{client_id}/keys",
        for_({"operator": 201}),
        url="/v1/admin/clients/{client}/keys",
        body=lambda w: {},
    ),
    Row(
        "GET",
        "/v1/admin/clients/{client_id}/keys",
        for_({"operator": 200}),
        url="/v1/admin/clients/{client}/keys",
    ),
    Row(
        "DELETE",
        "/v1/admin/clients/{client_id}/keys/{key_id}",
        for_({"operator": 200}),
        url="/v1/admin/clients/{client}/keys/{key}",
    ),
    Row("GET", "/v1/admin/audit", for_({"operator": 200})),
    Row("POST", "/v1/admin/maintenance", for_({"operator": 200})),
    Row(
        "POST",
        "/v1/admin/subjects/{key}/access-codes",
        for_({"operator": 201}),
        url="/v1/admin/subjects/{uscc}/access-codes",
    ),
    Row(
        "POST",
        "/v1/admin/access-codes",
        for_({"operator": 201}),
        body=lambda w: {"id_type": "身份证", "id_number": PERSON_ID},
    ),
    # Due process: the subject (its token) or an operator file; the owning department answers.
    Row(
        "POST",
        "/v1/objections",
        for_({"operator": 409}, subject=409),
        body=lambda w: {"record_id": w.ids["record"], "reason": "再次异议"},
    ),
    Row(
        "GET",
        "/v1/objections",
        for_(
            {"dept_owner": 200, "dept_other": 200, "dept_other_standard": 200, "operator": 200},
            subject=200,
        ),
    ),
    Row(
        "GET",
        "/v1/objections/{objection_id}",
        for_({"dept_owner": 200, "operator": 200}, others=404, subject=200),
        url="/v1/objections/{objection}",
    ),
    Row(
        "POST",
        "/v1/objections/{objection_id}/answer",
        for_({"dept_owner": 200, "dept_other": 404, "dept_other_standard": 404}),
        url="/v1/objections/{objection}/answer",
        body=lambda w: {"outcome": "rejected", "reasons": "经复核无误。"},
    ),
    Row(
        "POST",
        "/v1/repairs",
        for_({"operator": 422}, subject=422),
        body=lambda w: {
            "record_id": w.ids["record"],
            "corrective_actions": "已整改。",
            "commitment": "承诺守法。",
        },
    ),
    Row(
        "GET",
        "/v1/repairs",
        for_(
            {"dept_owner": 200, "dept_other": 200, "dept_other_standard": 200, "operator": 200},
            subject=200,
        ),
    ),
    Row(
        "GET",
        "/v1/repairs/{repair_id}",
        for_({}, others=404, subject=404),
        url="/v1/repairs/" + RANDOM,
    ),
    Row(
        "POST",
        "/v1/repairs/{repair_id}/decision",
        for_({"dept_owner": 404, "dept_other": 404, "dept_other_standard": 404}),
        url="/v1/repairs/" + RANDOM + "/decision",
        body=lambda w: {"outcome": "granted", "reasons": "准予修复。"},
    ),
    Row("GET", "/v1/self/report", for_({}, subject=200)),
]


def fill(template: str, w: World) -> str:
    return template.format(**w.ids)


def cell(http: TestClient, session: Session, w: World, row: Row, caller: str) -> Any:
    """One request, rolled back afterwards."""
    headers = dict(w.headers[caller])
    if row.content_type:
        headers["Content-Type"] = row.content_type
    savepoint = session.begin_nested()
    try:
        return http.request(
            row.method,
            fill(row.url or row.path, w),
            params=row.params,
            json=row.body(w) if row.body else None,
            content=row.content,
            headers=headers,
        )
    finally:
        savepoint.rollback()


def route_keys(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        for method in context.methods or ()
    }


def test_every_route_has_a_row(matrix_app: FastAPI) -> None:
    rows = {(row.method, row.path) for row in ROWS}
    assert len(rows) == len(ROWS), "two rows for one route"
    routes = route_keys(matrix_app)
    assert routes - rows == set(), "routes without a row in the authorization matrix"
    assert rows - routes == set(), "rows for routes that no longer exist"
    for row in ROWS:
        assert set(row.expected) == set(CALLERS), row.path


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.path}")
def test_matrix(http: TestClient, session: Session, world: World, row: Row) -> None:
    wrong: list[str] = []
    for caller in CALLERS:
        response = cell(http, session, world, row, caller)
        expected = row.expected[caller]
        if response.status_code != expected:
            wrong.append(
                f"{caller}: {response.status_code} (expected {expected}) {response.text[:200]}"
            )
            continue
        text = response.text
        if caller != "agency_pd":
            assert PERSON_ID not in text, f"{caller} saw a clear ID number at {row.path}"
        if response.status_code == 404:
            assert response.json()["type"] == NOT_FOUND, (caller, row.path)
    assert not wrong, "\n".join(wrong)


# (caller, URL of something that exists but is not the caller's, method)
INVISIBLE = [
    ("dept_other", "GET", "/v1/records/{record}"),
    ("agency", "GET", "/v1/records/{record}/history"),
    ("dept_other", "GET", "/v1/submissions/{submission}"),
    ("dept_other", "GET", "/v1/objections/{objection}"),
    ("agency_pd", "GET", "/v1/subscriptions/{subscription}"),
    ("agency_pd", "DELETE", "/v1/subscriptions/{subscription}"),
]


@pytest.mark.parametrize(("caller", "method", "url"), INVISIBLE)
def test_what_a_caller_may_not_see_looks_missing(
    http: TestClient, world: World, caller: str, method: str, url: str
) -> None:
    headers = world.headers[caller]
    real = fill(url, world)
    hidden_id = real.split("/")[3]
    seen = http.request(method, real, headers=headers)
    missing = http.request(method, real.replace(hidden_id, RANDOM), headers=headers)
    assert seen.status_code == missing.status_code == 404
    assert seen.text.replace(hidden_id, RANDOM) == missing.text
    assert set(seen.headers) == set(missing.headers)


def test_subject_token_sees_only_its_own_subject(
    http: TestClient, session: Session, world: World
) -> None:
    other = factories.penalty(9, source_org_uscc=factories.DEPARTMENT_USCC)
    pushed = http.post(
        "/v1/records",
        json={"standard": "administrative_penalty", "records": [other]},
        headers=world.headers["dept_owner"],
    )
    assert pushed.status_code == 201
    found = http.get(
        f"/v1/subjects/{other['counterpart_uscc']}/profile",
        params=READ,
        headers=world.headers["agency"],
    ).json()["subject"]["id"]
    subject = world.headers["subject"]
    foreign = http.get(f"/v1/subjects/{found}/access-log", headers=subject)
    missing = http.get(f"/v1/subjects/{RANDOM}/access-log", headers=subject)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"] == missing.json()["detail"]
    filed = http.post(
        "/v1/objections",
        json={"record_id": pushed.json()["records"][0]["record_id"], "reason": "不是我的"},
        headers=subject,
    )
    assert filed.status_code == 404


def test_masked_unless_personal_data(http: TestClient, world: World) -> None:
    lookup = {"id_type": "身份证", "id_number": PERSON_ID, **READ}
    clear = http.post("/v1/subjects/lookup", json=lookup, headers=world.headers["agency_pd"])
    assert clear.status_code == 200
    assert PERSON_ID in clear.text  # the scan above would notice a leak: it can see one
    masked_id = PERSON_ID[:6] + "*" * 8 + PERSON_ID[-4:]
    for caller in ("agency", "operator"):
        feed = http.get("/v1/changes", headers=world.headers[caller])
        assert PERSON_ID not in feed.text
        screened = http.post(
            "/v1/profiles/screen",
            json={"identifiers": [PERSON_ID], **READ},
            headers=world.headers[caller],
        )
        assert PERSON_ID not in screened.text
    owner = http.get(
        f"/v1/records/{world.ids['person_record']}", headers=world.headers["dept_owner"]
    )
    assert owner.status_code == 200
    assert PERSON_ID not in owner.text
    assert masked_id in owner.text
