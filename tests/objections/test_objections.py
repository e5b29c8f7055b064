"""Objections through HTTP: filing, the flag in profiles and screening, due dates on a
FixedClock, the owning department's answer, and every way to get it wrong."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.audit.models import AuditEvent
from credit_hub.clock import FixedClock
from credit_hub.errors import PROBLEM_BASE
from credit_hub.objections.models import Objection
from credit_hub.records.models import Record
from tests import factories
from tests.conftest import Caller
from tests.objections.due_process import profile, push, screen, subject_headers


def file(client: TestClient, headers: dict[str, str], record_id: str, **extra: Any) -> Any:
    body = {"record_id": record_id, "reason": "罚款金额记载错误", "attachments": ["缴款书 42"]}
    return client.post("/v1/objections", json=body | extra, headers=headers)


def open_count(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(Objection).where(Objection.status == "open")
        )
        or 0
    )


def test_objection_flags_the_record_until_the_department_rejects_it(
    app_client: TestClient,
    department: Caller,
    other_department: Caller,
    agency: Caller,
    operator: Caller,
    clock: FixedClock,
    session: Session,
) -> None:
    uscc = factories.make_uscc(600)
    record_id = push(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])[0][
        "record_id"
    ]
    me = subject_headers(app_client, operator, uscc)

    filed = file(app_client, me, record_id)
    assert filed.status_code == 201, filed.text
    objection = filed.json()
    assert (objection["status"], objection["filed_by_kind"]) == ("open", "subject")
    assert objection["due_on"] == "2026-06-21"  # 20 days after 2026-06-01
    assert objection["attachments"] == ["缴款书 42"]

    shown = profile(app_client, agency, uscc)
    assert shown["records"]["administrative_penalty"][0]["under_objection"] is True
    assert shown["summary"]["objections_open"] == 1
    assert screen(app_client, agency, uscc)["summary"]["under_objection"] is True

    # a second objection while one is open: 409, nothing stored
    again = file(app_client, me, record_id)
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEM_BASE + "objection-already-open"
    assert again.json()["objection_id"] == objection["id"]
    assert open_count(session) == 1

    # the owning department sees it; another department neither sees nor answers it
    mine = app_client.get("/v1/objections", params={"status": "open"}, headers=department.headers)
    assert [o["id"] for o in mine.json()["items"]] == [objection["id"]]
    theirs = app_client.get("/v1/objections", headers=other_department.headers)
    assert theirs.json()["items"] == []
    answer = {"outcome": "rejected", "reasons": "经复核无误"}
    foreign = app_client.post(
        f"/v1/objections/{objection['id']}/answer", json=answer, headers=other_department.headers
    )
    assert foreign.status_code == 404
    assert foreign.json()["type"] == PROBLEM_BASE + "not-found"
    assert open_count(session) == 1
    by_operator = app_client.post(
        f"/v1/objections/{objection['id']}/answer", json=answer, headers=operator.headers
    )
    assert by_operator.status_code == 403

    # due dates: nothing overdue on day 20, overdue on day 21
    overdue = {"overdue": "true"}
    clock.advance(days=20)
    listed = app_client.get("/v1/objections", params=overdue, headers=operator.headers).json()
    assert listed["items"] == []
    clock.advance(days=1)
    listed = app_client.get("/v1/objections", params=overdue, headers=operator.headers).json()
    assert [(o["id"], o["overdue"]) for o in listed["items"]] == [(objection["id"], True)]

    answered = app_client.post(
        f"/v1/objections/{objection['id']}/answer", json=answer, headers=department.headers
    )
    assert answered.status_code == 200, answered.text
    assert (answered.json()["status"], answered.json()["answer"]) == ("rejected", "经复核无误")
    shown = profile(app_client, agency, uscc)
    assert shown["records"]["administrative_penalty"][0]["under_objection"] is False
    assert shown["summary"]["under_objection"] is False
    twice = app_client.post(
        f"/v1/objections/{objection['id']}/answer", json=answer, headers=department.headers
    )
    assert twice.status_code == 409
    assert twice.json()["type"] == PROBLEM_BASE + "already-decided"

    # the subject (its 30-minute session long gone: a new code) sees the outcome
    assert app_client.get("/v1/objections", headers=me).status_code == 401
    me = subject_headers(app_client, operator, uscc)
    seen = app_client.get(f"/v1/objections/{objection['id']}", headers=me).json()
    assert seen["status"] == "rejected"
    events = session.execute(
        select(AuditEvent.action, AuditEvent.actor_kind, AuditEvent.result)
        .where(AuditEvent.action.like("objection.%"))
        .order_by(AuditEvent.id)
    ).all()
    assert [tuple(e) for e in events] == [  # every step is audited
        ("objection.filed", "subject", "open"),
        ("objection.answered", "department", "rejected"),
    ]


def test_upheld_objection_is_linked_to_the_correction(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    session: Session,
) -> None:
    uscc = factories.make_uscc(601)
    wrong = factories.penalty(2, counterpart_uscc=uscc, fine_amount_wan="5")
    record_id = push(app_client, department, [wrong])[0]["record_id"]
    filed = file(app_client, operator.headers, record_id)  # an operator on the subject's behalf
    assert filed.status_code == 201, filed.text
    assert filed.json()["filed_by_kind"] == "operator"
    objection_id = filed.json()["id"]
    url = f"/v1/objections/{objection_id}/answer"

    upheld = {"outcome": "upheld", "reasons": "金额录入错误", "remedy": "corrected"}
    early = app_client.post(url, json=upheld, headers=department.headers)
    assert early.status_code == 409
    assert early.json()["type"] == PROBLEM_BASE + "correction-missing"
    no_remedy = app_client.post(
        url, json={"outcome": "upheld", "reasons": "x"}, headers=department.headers
    )
    assert no_remedy.status_code == 422
    assert no_remedy.json()["errors"][0]["code"] == "remedy.missing"

    corrected = push(app_client, department, [wrong | {"fine_amount_wan": "0.5"}])[0]
    assert (corrected["outcome"], corrected["version"]) == ("updated", 2)
    record = profile(app_client, agency, uscc)["records"]["administrative_penalty"][0]
    assert (record["version"], record["under_objection"]) == (2, True)  # still disputed

    answered = app_client.post(url, json=upheld, headers=department.headers)
    assert answered.status_code == 200, answered.text
    assert (answered.json()["remedy"], answered.json()["corrected_version"]) == ("corrected", 2)
    record = profile(app_client, agency, uscc)["records"]["administrative_penalty"][0]
    assert record["under_objection"] is False
    assert record["data"]["fine_amount_wan"] == "0.5"


def test_upheld_objection_can_withdraw_the_record(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    session: Session,
) -> None:
    uscc = factories.make_uscc(602)
    record_id = push(app_client, department, [factories.penalty(3, counterpart_uscc=uscc)])[0][
        "record_id"
    ]
    me = subject_headers(app_client, operator, uscc)
    objection_id = file(app_client, me, record_id).json()["id"]
    answered = app_client.post(
        f"/v1/objections/{objection_id}/answer",
        json={"outcome": "upheld", "reasons": "决定已被撤销", "remedy": "withdrawn"},
        headers=department.headers,
    )
    assert answered.status_code == 200, answered.text
    stored = session.get(Record, uuid.UUID(answered.json()["record_id"]))
    assert stored is not None
    session.refresh(stored)
    assert stored.status == "withdrawn"
    assert stored.under_objection is False
    assert objection_id in (stored.withdraw_reason or "")
    assert profile(app_client, agency, uscc)["records"] == {}
    withdrawn = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "record.withdrawn")
    ).one()
    assert withdrawn.payload is not None
    assert withdrawn.payload["objection_id"] == objection_id
    # a withdrawn record takes no new objection
    late = file(app_client, me, record_id)
    assert late.status_code == 409
    assert late.json()["type"] == PROBLEM_BASE + "record-not-eligible"


def test_objections_on_missing_or_foreign_records_change_nothing(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    session: Session,
) -> None:
    mine_uscc, other_uscc = factories.make_uscc(603), factories.make_uscc(604)
    outcomes = push(
        app_client,
        department,
        [
            factories.penalty(4, counterpart_uscc=mine_uscc),
            factories.penalty(5, counterpart_uscc=other_uscc),
        ],
    )
    me = subject_headers(app_client, operator, mine_uscc)
    missing = file(app_client, me, "0193a0c2-7d1e-7c3a-9f10-2b7e4c1d9a01")
    foreign = file(app_client, me, outcomes[1]["record_id"])
    for response in (missing, foreign):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == PROBLEM_BASE + "not-found"
    assert session.scalar(select(func.count()).select_from(Objection)) == 0
    other = session.get(Record, uuid.UUID(outcomes[1]["record_id"]))
    assert other is not None
    assert other.under_objection is False
    # departments answer objections but do not file them; agencies take no part
    by_department = file(app_client, department.headers, outcomes[0]["record_id"])
    assert by_department.status_code == 403
    assert app_client.get("/v1/objections", headers=agency.headers).status_code == 403
    # the subject sees only its own objections
    assert app_client.get("/v1/objections", headers=me).json()["items"] == []
    assert (
        app_client.get("/v1/objections", headers={"Authorization": "Bearer chs_x"}).status_code
        == 401
    )
