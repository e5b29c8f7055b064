"""Subject access through HTTP: one-time expiring access codes, the subject's session, its
own report and access log; minors' records never published but in their own report."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from credit_hub.clock import FixedClock
from credit_hub.errors import PROBLEM_BASE
from credit_hub.selfservice.models import AccessCode, SubjectSession
from tests import factories
from tests.conftest import Caller
from tests.objections.due_process import READ, profile, push, subject_headers

INVALID = PROBLEM_BASE + "access-code-invalid"


def issue(client: TestClient, operator: Caller, key: str, **body: object) -> str:
    response = client.post(
        f"/v1/admin/subjects/{key}/access-codes", json=body or None, headers=operator.headers
    )
    assert response.status_code == 201, response.text
    code: str = response.json()["code"]
    return code


def sessions(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(SubjectSession)) or 0


def test_access_code_is_one_time_and_stored_hashed(
    app_client: TestClient, department: Caller, operator: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(900)
    push(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    code = issue(app_client, operator, uscc)
    stored = session.scalars(select(AccessCode)).one()
    assert code not in stored.code_hash
    assert stored.expires_at.date().isoformat() == "2026-06-15"  # 14 days by default

    opened = app_client.post("/v1/self/session", json={"code": code.lower().replace("-", "")})
    assert opened.status_code == 201, opened.text
    assert opened.json()["token"].startswith("chs_")
    reused = app_client.post("/v1/self/session", json={"code": code})
    assert reused.status_code == 401
    assert reused.headers["content-type"] == "application/problem+json"
    assert (reused.json()["type"], reused.json()["reason"]) == (INVALID, "used")
    unknown = app_client.post("/v1/self/session", json={"code": "AAAAA-BBBBB-CCCCC-DDDDD"})
    assert (unknown.status_code, unknown.json()["reason"]) == (401, "unknown")
    assert sessions(session) == 1


def test_expired_code_and_expired_session_are_refused(
    app_client: TestClient,
    department: Caller,
    operator: Caller,
    clock: FixedClock,
    session: Session,
) -> None:
    uscc = factories.make_uscc(901)
    push(app_client, department, [factories.penalty(2, counterpart_uscc=uscc)])
    short = issue(app_client, operator, uscc, valid_days=2)
    clock.advance(days=2)
    expired = app_client.post("/v1/self/session", json={"code": short})
    assert (expired.status_code, expired.json()["type"]) == (401, INVALID)
    assert expired.json()["reason"] == "expired"
    assert session.scalars(select(AccessCode)).one().used_at is None  # nothing changed
    assert sessions(session) == 0

    me = subject_headers(app_client, operator, uscc)
    assert app_client.get("/v1/self/report", headers=me).status_code == 200
    clock.advance(minutes=31)  # sessions last 30 minutes
    late = app_client.get("/v1/self/report", headers=me)
    assert (late.status_code, late.json()["type"]) == (401, PROBLEM_BASE + "unauthorized")


def test_report_holds_every_record_and_who_read_it(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    session: Session,
) -> None:
    uscc, stranger = factories.make_uscc(902), factories.make_uscc(903)
    outcomes = push(
        app_client,
        department,
        [
            factories.penalty(3, counterpart_uscc=uscc),
            factories.penalty(4, counterpart_uscc=uscc, decision_date="2026/08/01"),
            factories.penalty(5, counterpart_uscc=stranger),
        ],
    )
    app_client.post(
        f"/v1/records/{outcomes[0]['record_id']}/withdraw",
        json={"reason": "决定已撤销"},
        headers=department.headers,
    )
    profile(app_client, agency, uscc, purpose="licensing_review", case_ref="XK-7")
    me = subject_headers(app_client, operator, uscc)

    report = app_client.get("/v1/self/report", headers=me)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["subject"]["uscc"] == uscc
    records = {r["id"]: r for r in body["records"]}
    assert set(records) == {outcomes[0]["record_id"], outcomes[1]["record_id"]}
    withdrawn, future = records[outcomes[0]["record_id"]], records[outcomes[1]["record_id"]]
    assert (withdrawn["status"], withdrawn["published"]) == ("withdrawn", False)
    assert withdrawn["withdraw_reason"] == "决定已撤销"
    assert (future["status"], future["published"], future["publish_from"]) == (
        "active",
        False,
        "2026-08-01",
    )
    assert future["repair_from"] == "2026-11-01"
    log = body["access_log"]["entries"]
    assert [(e["client_name"], e["purpose"], e["case_ref"]) for e in log] == [
        (agency.client.name, "licensing_review", "XK-7")
    ]

    # its own access log, not another subject's; API keys other than operators' are refused
    subject_id = body["subject"]["id"]
    own = app_client.get(f"/v1/subjects/{subject_id}/access-log", headers=me)
    assert own.status_code == 200
    assert own.json()["entries"][0]["purpose"] == "licensing_review"
    assert app_client.get(f"/v1/subjects/{stranger}/access-log", headers=me).status_code == 404
    assert (
        app_client.get(f"/v1/subjects/{uscc}/access-log", headers=agency.headers).status_code == 403
    )
    assert app_client.get("/v1/self/report", headers=operator.headers).status_code == 403
    # reading one's own report is audited, but is not a profile read
    assert len(app_client.get("/v1/self/report", headers=me).json()["access_log"]["entries"]) == 1


def test_person_access_code_by_id_number_and_minors_never_published(
    app_client: TestClient,
    department: Caller,
    privileged_agency: Caller,
    operator: Caller,
) -> None:
    minor_id = factories.make_id_number(7, birth="20100101")  # 16 at the 2026-04-02 decision
    adult_id = factories.make_id_number(8, birth="20080101")  # 18 at the decision
    outcomes = push(
        app_client,
        department,
        [
            factories.person_penalty(7, person_id_no=minor_id),
            factories.person_penalty(8, person_id_no=adult_id, counterpart_name="赵六"),
        ],
    )
    minor, adult = outcomes[0]["subject_id"], outcomes[1]["subject_id"]
    everything = {"include": "unpublished,withdrawn"}
    assert profile(app_client, privileged_agency, minor, **everything)["records"] == {}
    assert (
        len(profile(app_client, privileged_agency, adult)["records"]["administrative_penalty"]) == 1
    )
    lookup = app_client.post(
        "/v1/subjects/lookup",
        json={"id_type": "身份证", "id_number": minor_id, **READ},
        headers=privileged_agency.headers,
    )
    assert lookup.json()["records"] == {}
    screened = app_client.post(
        "/v1/profiles/screen",
        json={"identifiers": [minor], **READ},
        headers=privileged_agency.headers,
    )
    assert screened.json()["results"][0]["summary"]["counts"] == {}

    issued = app_client.post(
        "/v1/admin/access-codes",
        json={"id_type": "身份证", "id_number": minor_id},
        headers=operator.headers,
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["subject_id"] == minor
    opened = app_client.post("/v1/self/session", json={"code": issued.json()["code"]})
    me = {"Authorization": f"Bearer {opened.json()['token']}"}
    report = app_client.get("/v1/self/report", headers=me).json()
    assert [(r["withheld_reason"], r["published"]) for r in report["records"]] == [("minor", False)]
    assert report["subject"]["person_id"] != minor_id  # masked
    nobody = app_client.post(
        "/v1/admin/access-codes", json={"valid_days": 3}, headers=operator.headers
    )
    assert nobody.status_code == 422
    missing = app_client.post(
        f"/v1/admin/subjects/{uuid.uuid4()}/access-codes", headers=operator.headers
    )
    assert missing.status_code == 404
    by_agency = app_client.post(
        f"/v1/admin/subjects/{adult}/access-codes", headers=privileged_agency.headers
    )
    assert by_agency.status_code == 403
