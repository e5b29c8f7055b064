"""Credit repair through HTTP: the minimum period, working-day deadlines on a FixedClock, the
owning department's decision, and a granted repair leaving profiles and screening."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.audit.models import AuditEvent
from credit_hub.clock import FixedClock
from credit_hub.errors import PROBLEM_BASE
from credit_hub.objections.models import Repair
from credit_hub.records.models import Record
from tests import factories
from tests.conftest import Caller
from tests.objections.due_process import profile, push, screen, subject_headers

APPLICATION = {
    "corrective_actions": "已缴清罚款，下架全部过期食品并建立进货查验制度。",
    "commitment": "本单位承诺今后严格遵守食品安全法律法规。",
    "evidence": ["缴款书 No.3501-2026-0042"],
}


def apply(client: TestClient, headers: dict[str, str], record_id: str) -> Any:
    return client.post("/v1/repairs", json={"record_id": record_id, **APPLICATION}, headers=headers)


def test_granted_repair_takes_the_record_out_of_profiles_and_screening(
    app_client: TestClient,
    department: Caller,
    other_department: Caller,
    agency: Caller,
    operator: Caller,
    clock: FixedClock,
    session: Session,
) -> None:
    uscc = factories.make_uscc(700)
    # warning + fine: a general penalty decided 2026-04-02, minimum period 3 months
    record_id = push(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])[0][
        "record_id"
    ]
    me = subject_headers(app_client, operator, uscc)

    early = apply(app_client, me, record_id)
    assert early.status_code == 422
    assert early.json()["type"] == PROBLEM_BASE + "repair-too-early"
    assert early.json()["repair_from"] == "2026-07-02"
    assert session.scalar(select(func.count()).select_from(Repair)) == 0

    clock.advance(days=31)  # Thursday 2026-07-02
    me = subject_headers(app_client, operator, uscc)
    applied = apply(app_client, me, record_id)
    assert applied.status_code == 201, applied.text
    repair = applied.json()
    assert repair["status"] == "pending"
    assert repair["decide_by"] == "2026-07-07"  # 3 working days: Fri, Mon, Tue
    assert repair["case_due_on"] == "2026-07-16"  # 10 working days
    again = apply(app_client, me, record_id)
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEM_BASE + "repair-already-pending"

    decision = {"outcome": "granted", "reasons": "义务已履行，准予修复"}
    url = f"/v1/repairs/{repair['id']}/decision"
    foreign = app_client.post(url, json=decision, headers=other_department.headers)
    assert foreign.status_code == 404
    assert app_client.post(url, json=decision, headers=operator.headers).status_code == 403
    assert profile(app_client, agency, uscc)["summary"]["counts"] == {"administrative_penalty": 1}

    clock.advance(days=6)  # Wednesday 2026-07-08: the department's 3 days are over
    overdue = app_client.get(
        "/v1/repairs", params={"overdue": "true"}, headers=operator.headers
    ).json()
    assert [(r["id"], r["overdue"]) for r in overdue["items"]] == [(repair["id"], True)]
    pending = app_client.get(
        "/v1/repairs", params={"status": "pending"}, headers=department.headers
    ).json()
    assert [r["id"] for r in pending["items"]] == [repair["id"]]

    granted = app_client.post(url, json=decision, headers=department.headers)
    assert granted.status_code == 200, granted.text
    assert granted.json()["status"] == "granted"
    stored = session.get(Record, uuid.UUID(record_id))
    assert stored is not None
    session.refresh(stored)
    assert stored.status == "repaired"  # kept for audit
    assert profile(app_client, agency, uscc)["records"] == {}
    assert profile(app_client, agency, uscc)["summary"]["active_penalties"] == 0
    assert screen(app_client, agency, uscc)["summary"]["counts"] == {}
    assert app_client.post(url, json=decision, headers=department.headers).status_code == 409
    # the subject still sees it, repaired, in its own report
    me = subject_headers(app_client, operator, uscc)
    report = app_client.get("/v1/self/report", headers=me).json()
    assert [(r["id"], r["status"], r["published"]) for r in report["records"]] == [
        (record_id, "repaired", False)
    ]
    assert [r["status"] for r in report["repairs"]] == ["granted"]
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.action.like("repair.%")).order_by(AuditEvent.id)
    ).all()
    assert actions == ["repair.applied", "repair.decided"]
    # a repaired record takes no second application
    assert apply(app_client, me, record_id).json()["type"] == PROBLEM_BASE + "record-not-eligible"


def test_refused_repair_leaves_the_record_published(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    clock: FixedClock,
) -> None:
    uscc = factories.make_uscc(701)
    record_id = push(app_client, department, [factories.penalty(2, counterpart_uscc=uscc)])[0][
        "record_id"
    ]
    clock.advance(days=40)
    applied = apply(app_client, operator.headers, record_id)  # an operator on its behalf
    assert applied.status_code == 201, applied.text
    assert applied.json()["filed_by_kind"] == "operator"
    refused = app_client.post(
        f"/v1/repairs/{applied.json()['id']}/decision",
        json={"outcome": "refused", "reasons": "罚款尚未缴纳"},
        headers=department.headers,
    )
    assert refused.status_code == 200, refused.text
    assert refused.json()["decision_reasons"] == "罚款尚未缴纳"
    assert profile(app_client, agency, uscc)["summary"]["counts"] == {"administrative_penalty": 1}


def test_repair_refused_for_withdrawn_foreign_and_unperiodic_records(
    app_client: TestClient,
    department: Caller,
    operator: Caller,
    clock: FixedClock,
    session: Session,
) -> None:
    uscc, other = factories.make_uscc(702), factories.make_uscc(703)
    outcomes = push(
        app_client,
        department,
        [
            factories.penalty(3, counterpart_uscc=uscc),
            factories.penalty(4, counterpart_uscc=other),
        ],
    )
    withdrawn = app_client.post(
        f"/v1/records/{outcomes[0]['record_id']}/withdraw",
        json={"reason": "处罚决定已被复议机关撤销"},
        headers=department.headers,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    clock.advance(days=60)
    me = subject_headers(app_client, operator, uscc)
    closed = apply(app_client, me, outcomes[0]["record_id"])
    assert closed.status_code == 409
    assert closed.json()["type"] == PROBLEM_BASE + "record-not-eligible"
    foreign = apply(app_client, me, outcomes[1]["record_id"])
    assert foreign.status_code == 404
    assert session.scalar(select(func.count()).select_from(Repair)) == 0
