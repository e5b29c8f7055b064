"""POST /v1/records end to end: validation, storage, versions, idempotency, receipts, errors."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind
from credit_hub.audit.models import AuditEvent
from credit_hub.errors import PROBLEM_BASE
from credit_hub.ingest.models import Submission
from credit_hub.records.models import Record, RecordVersion
from credit_hub.subjects.models import Subject, SubjectName
from tests import factories
from tests.conftest import Caller, register

URL = "/v1/records"


def push(
    client: TestClient,
    caller: Caller,
    records: list[Any],
    *,
    mode: str = "partial",
    standard: str = "administrative_penalty",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    body = {"standard": standard, "mode": mode, "records": records}
    return client.post(URL, json=body, headers=caller.headers | (headers or {}), params=params)


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_push_creates_records_with_a_signed_receipt(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    records = [factories.penalty(1), factories.penalty(2)]
    body = orjson.dumps(
        {"standard": "administrative_penalty", "mode": "partial", "records": records}
    )
    response = app_client.post(
        URL, content=body, headers=department.headers | {"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "accepted"
    assert report["counts"] == {
        "received": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
    }
    assert [r["outcome"] for r in report["records"]] == ["created", "created"]
    assert count(session, Record) == 2
    assert count(session, RecordVersion) == 2
    # The receipt: the body's hash, signed by the key published at /v1/keys.
    receipt = report["receipt"]
    signed = orjson.loads(receipt["signed_payload"])
    assert signed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert signed["counts"]["created"] == 2
    assert signed["submission_id"] == report["submission_id"]
    public = app_client.get("/v1/keys").json()["keys"][0]
    assert public["key_id"] == receipt["key_id"]
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public["public_key"]))
    key.verify(base64.b64decode(receipt["signature"]), receipt["signed_payload"].encode())


def test_repush_same_content_is_unchanged_and_changed_content_is_a_new_version(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    first = push(app_client, department, [factories.penalty(1)]).json()
    record_id = first["records"][0]["record_id"]
    same = push(app_client, department, [factories.penalty(1)]).json()
    assert same["counts"]["unchanged"] == 1
    assert same["records"][0] == first["records"][0] | {"outcome": "unchanged", "index": 0}
    # Only a different representation of the same facts: still unchanged.
    reworded = factories.penalty(1, fine_amount_wan="0.50", decision_date="2026-04-02")
    assert push(app_client, department, [reworded]).json()["counts"]["unchanged"] == 1
    changed = push(app_client, department, [factories.penalty(1, fine_amount_wan="0.8")]).json()
    assert changed["counts"]["updated"] == 1
    assert changed["records"][0]["version"] == 2
    history = app_client.get(f"{URL}/{record_id}/history", headers=department.headers).json()
    assert [v["version"] for v in history["versions"]] == [1, 2]
    # The first version ended when the second began.
    assert history["versions"][0]["superseded_at"] == history["versions"][1]["created_at"]
    assert history["versions"][1]["superseded_at"] is None
    assert history["versions"][1]["data"]["fine_amount_wan"] == "0.8"
    assert count(session, Record) == 1


def test_a_correction_moves_its_record_only_when_its_subject_changes(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    first, second = factories.make_uscc(71), factories.make_uscc(72)
    records = [factories.penalty(n, counterpart_uscc=first) for n in (1, 2)]
    assert push(app_client, department, records).json()["counts"]["created"] == 2
    corrected = [
        factories.penalty(1, counterpart_uscc=second),  # the decision named the wrong company
        factories.penalty(2, counterpart_uscc=first, fine_amount_wan="0.9"),
    ]
    report = push(app_client, department, corrected).json()
    assert report["counts"]["updated"] == 2
    by_source = {r["source_id"]: r for r in report["records"]}
    subject_of = dict(session.execute(select(Subject.uscc, Subject.id)).all())
    stored = dict(session.execute(select(Record.source_id, Record.subject_id)).all())
    moved, kept = (records[0]["decision_doc_no"], records[1]["decision_doc_no"])
    assert stored == {moved: subject_of[second], kept: subject_of[first]}
    assert by_source[moved]["subject_id"] == str(subject_of[second])
    versions = session.execute(
        select(RecordVersion.version, RecordVersion.subject_id)
        .join(Record, Record.id == RecordVersion.record_id)
        .where(Record.source_id == moved)
        .order_by(RecordVersion.version)
    ).all()
    assert [tuple(v) for v in versions] == [(1, subject_of[first]), (2, subject_of[second])]


def test_partial_stores_the_good_and_reports_the_bad(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    bad = factories.penalty(2, counterpart_uscc="914403001922038217")
    response = push(app_client, department, [factories.penalty(1), bad, "nope"])
    assert response.status_code == 201
    report = response.json()
    assert report["status"] == "partially_accepted"
    assert report["counts"]["created"] == 1
    assert report["counts"]["rejected"] == 2
    errors = {(e["index"], e["source_id"], e["pointer"], e["code"]) for e in report["errors"]}
    assert (1, bad["decision_doc_no"], "/counterpart_uscc", "format.uscc") in errors
    assert (2, None, "", "type") in errors
    assert count(session, Record) == 1


def test_atomic_stores_nothing_when_anything_fails(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    bad = factories.penalty(2, decision_date="2026/02/30")
    response = push(app_client, department, [factories.penalty(1), bad], mode="atomic")
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "records-invalid"
    assert problem["status"] == 422
    assert problem["submission_status"] == "rejected"
    assert problem["counts"]["rejected"] == 1
    assert problem["errors"][0]["pointer"] == "/decision_date"
    assert count(session, Record) == 0
    assert count(session, Submission) == 0


def test_identical_errors_are_summarized(app_client: TestClient, department: Caller) -> None:
    records = [factories.penalty(i, counterpart_uscc="914403001922038217") for i in range(50)]
    problem = push(app_client, department, records).json()
    assert problem["submission_status"] == "rejected"
    summary = problem["error_summary"]
    assert summary == [
        {
            "code": "format.uscc",
            "pointer": "/counterpart_uscc",
            "count": 50,
            "example": summary[0]["example"],
        }
    ]


def test_dry_run_stores_nothing(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    response = push(app_client, department, [factories.penalty(1)], params={"dry_run": "true"})
    assert response.status_code == 200
    assert response.json()["status"] == "valid"
    assert response.json()["dry_run"] is True
    assert count(session, Record) == 0
    assert count(session, Submission) == 0


def test_idempotency_key_replays_and_refuses_another_body(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    headers = {"Idempotency-Key": "batch-2026-04-02-001"}
    first = push(app_client, department, [factories.penalty(1)], headers=headers)
    assert first.status_code == 201
    again = push(app_client, department, [factories.penalty(1)], headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["submission_id"] == first.json()["submission_id"]
    assert again.json()["counts"] == first.json()["counts"]
    assert count(session, Submission) == 1
    other = push(app_client, department, [factories.penalty(2)], headers=headers)
    assert other.status_code == 409
    assert other.json()["type"] == PROBLEM_BASE + "idempotency-key-reused"
    assert count(session, Record) == 1


def test_data_source_must_be_the_department(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    foreign = factories.make_uscc(5, prefix="11")
    record = factories.penalty(1, source_org_uscc=foreign)
    problem = push(app_client, department, [record]).json()
    assert problem["errors"][0]["code"] == "data_source_not_allowed"
    assert problem["errors"][0]["pointer"] == "/source_org_uscc"
    delegated = register(
        session, ClientKind.DEPARTMENT, uscc=factories.DEPARTMENT_USCC, pushes_for=[foreign]
    )
    assert push(app_client, delegated, [record]).status_code == 201


def test_duplicate_source_id_within_a_batch(app_client: TestClient, department: Caller) -> None:
    report = push(app_client, department, [factories.penalty(1), factories.penalty(1)]).json()
    assert report["counts"]["created"] == 1
    assert report["errors"][0]["code"] == "duplicate_source_id"
    assert report["errors"][0]["index"] == 1


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b'{"standard": "administrative_penalty", "records": [', 400, "malformed-json"),
        (b"[]", 422, "request-invalid"),
        (b'{"standard": "administrative_penalty", "records": []}', 422, "request-invalid"),
        (b'{"standard": "administrative_penalty", "records": {}}', 422, "request-invalid"),
        (
            b'{"standard": "administrative_penalty", "records": [{}], "x": 1}',
            422,
            "request-invalid",
        ),
        (
            b'{"standard": "administrative_penalty", "mode": "some", "records": [{}]}',
            422,
            "request-invalid",
        ),
        (b'{"records": [{}]}', 422, "request-invalid"),
        (b'{"standard": "tax_rating", "records": [{}]}', 404, "standard-not-found"),
        (
            b'{"standard": "administrative_penalty", "version": "0.9", "records": [{}]}',
            404,
            "standard-not-found",
        ),
    ],
)
def test_bad_envelopes(
    app_client: TestClient, department: Caller, body: bytes, status: int, kind: str
) -> None:
    response = app_client.post(
        URL, content=body, headers=department.headers | {"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == PROBLEM_BASE + kind


def test_too_many_records(app_client: TestClient, department: Caller) -> None:
    limit = app_client.app.state.settings.max_batch_records  # type: ignore[attr-defined]
    response = push(app_client, department, [{}] * (limit + 1))
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "max_items"


def test_authentication_and_roles(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    operator: Caller,
    session: Session,
) -> None:
    body = {"standard": "administrative_penalty", "records": [factories.penalty(1)]}
    assert app_client.post(URL, json=body).status_code == 401
    wrong = app_client.post(URL, json=body, headers={"Authorization": "Bearer chk_nope_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["type"] == PROBLEM_BASE + "unauthorized"
    assert app_client.post(URL, json=body, headers=agency.headers).status_code == 403
    licensing_only = register(
        session,
        ClientKind.DEPARTMENT,
        uscc=factories.DEPARTMENT_USCC,
        standards=["administrative_licensing"],
    )
    forbidden = app_client.post(URL, json=body, headers=licensing_only.headers)
    assert forbidden.status_code == 403
    assert forbidden.json()["type"] == PROBLEM_BASE + "forbidden"


def test_revoked_key_is_401(app_client: TestClient, department: Caller, operator: Caller) -> None:
    keys = app_client.get(
        f"/v1/admin/clients/{department.client.id}/keys", headers=operator.headers
    ).json()
    revoked = app_client.delete(
        f"/v1/admin/clients/{department.client.id}/keys/{keys[0]['id']}", headers=operator.headers
    )
    assert revoked.status_code == 200
    response = push(app_client, department, [factories.penalty(1)])
    assert response.status_code == 401


def test_natural_person_is_keyed_by_hmac_and_never_stored_in_clear(
    app_client: TestClient, department: Caller, session: Session, privileged_agency: Caller
) -> None:
    number = factories.make_id_number(7)
    legacy = number[:6] + number[8:17]  # the 15-digit form of the same person
    first = push(app_client, department, [factories.person_penalty(1, person_id_no=number)])
    second = push(app_client, department, [factories.person_penalty(2, person_id_no=legacy)])
    assert first.status_code == second.status_code == 201, second.text
    people = session.scalars(select(Subject).where(Subject.kind == "natural_person")).all()
    assert len(people) == 1
    person = people[0]
    assert person.person_key
    assert number not in person.person_key
    assert person.person_id_masked == number[:6] + "********" + number[-4:]
    stored = [orjson.dumps(v.data).decode() for v in session.scalars(select(RecordVersion))]
    assert all(number not in text and legacy not in text for text in stored)
    assert all(
        number not in ((e.payload and orjson.dumps(e.payload).decode()) or "")
        for e in session.scalars(select(AuditEvent))
    )
    # The owning department reads it masked (it lacks the personal_data scope).
    record_id = first.json()["records"][0]["record_id"]
    read = app_client.get(f"{URL}/{record_id}", headers=department.headers).json()
    assert read["current"]["data"]["person_id_no"] == person.person_id_masked


def test_legacy_org_code_links_to_the_uscc_subject_when_it_appears(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(4242)
    legacy = factories.penalty(
        1,
        counterpart_uscc="00000000000000000X",
        business_reg_no="440301103448669",
        org_code=uscc[8:17],
    )
    assert push(app_client, department, [legacy]).status_code == 201
    waiting = session.scalars(select(Subject)).one()
    assert waiting.uscc is None
    assert waiting.org_code == uscc[8:17]
    assert (
        push(app_client, department, [factories.penalty(2, counterpart_uscc=uscc)]).status_code
        == 201
    )
    subjects = session.scalars(select(Subject)).all()
    assert len(subjects) == 1
    assert subjects[0].uscc == uscc
    assert {r.subject_id for r in session.scalars(select(Record))} == {subjects[0].id}
    # And an org-code-only record that comes after the USCC links directly.
    later = factories.penalty(
        3,
        counterpart_uscc="00000000000000000X",
        business_reg_no="440301103448669",
        org_code=uscc[8:17],
    )
    push(app_client, department, [later])
    assert len(session.scalars(select(Subject)).all()) == 1


def test_subject_keeps_its_name_history(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(99)
    push(
        app_client,
        department,
        [
            factories.penalty(
                1,
                counterpart_uscc=uscc,
                counterpart_name="旧名称有限公司",
                decision_date="2025/01/10",
            ),
            factories.penalty(
                2,
                counterpart_uscc=uscc,
                counterpart_name="新名称有限公司",
                decision_date="2026/03/10",
            ),
        ],
    )
    push(
        app_client,
        department,
        [
            factories.penalty(
                3,
                counterpart_uscc=uscc,
                counterpart_name="旧名称有限公司",
                decision_date="2024/05/01",
            ),
        ],
    )
    subject = session.scalars(select(Subject)).one()
    assert subject.name == "新名称有限公司"
    names = {
        n.name: (n.first_seen_on.isoformat(), n.last_seen_on.isoformat())
        for n in session.scalars(select(SubjectName))
    }
    assert names == {
        "旧名称有限公司": ("2024-05-01", "2025-01-10"),
        "新名称有限公司": ("2026-03-10", "2026-03-10"),
    }


def test_a_known_name_is_written_only_when_its_days_widen(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(98)

    def penalty(n: int, day: str) -> dict[str, Any]:
        return factories.penalty(
            n, counterpart_uscc=uscc, counterpart_name="某某贸易有限公司", decision_date=day
        )

    push(app_client, department, [penalty(1, "2025/01/10"), penalty(2, "2026/03/10")])
    written: list[str] = []

    def listen(*args: Any) -> None:
        if (
            str(args[2])
            .lstrip()
            .upper()
            .startswith(("INSERT INTO SUBJECT_NAME", "COPY SUBJECT_NAME", "UPDATE SUBJECT_NAME"))
        ):
            written.append(str(args[2]).lstrip().split()[0].upper())

    postgresql = session.get_bind().dialect.name == "postgresql"
    numbered = "SELECT last_value FROM pg_sequences WHERE sequencename LIKE 'subject_name_search%'"
    numbers = session.execute(text(numbered)).scalar() if postgresql else None
    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", listen)
    try:
        push(app_client, department, [penalty(3, "2025/06/01")])  # within the known days
        assert written == []
        push(app_client, department, [penalty(4, "2026/05/01")])  # one day later than known
        # PostgreSQL widens with an UPDATE: an upsert would draw a number from search_seq's
        # identity even though it inserts nothing, and names seen again would thin out the
        # search's blocks.
        assert written == (["UPDATE"] if postgresql else ["INSERT"])
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    if postgresql:
        assert session.execute(text(numbered)).scalar() == numbers
    names = [
        (n.name, n.first_seen_on.isoformat(), n.last_seen_on.isoformat())
        for n in session.scalars(select(SubjectName))
    ]
    assert names == [("某某贸易有限公司", "2025-01-10", "2026-05-01")]


def test_publication_window_is_stored(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    push(
        app_client,
        department,
        [factories.penalty(1, penalty_categories=["警告"], decision_date="2026/04/02")],
    )
    record = session.scalars(select(Record)).one()
    assert (record.severity, record.severity_source) == ("minor", "derived")
    assert record.publish_from.isoformat() == "2026-04-02"
    assert record.publish_until is not None
    assert record.publish_until.isoformat() == "2026-07-02"
    assert record.retain_until is not None
    assert record.retain_until.isoformat() == "2031-07-02"


def test_push_writes_an_audit_event(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    report = push(app_client, department, [factories.penalty(1)]).json()
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "records.pushed")).one()
    assert event.actor_id == department.client.id
    assert str(event.submission_id) == report["submission_id"]
    assert event.payload is not None
    assert event.payload["created"] == 1


def test_withdraw(
    app_client: TestClient, department: Caller, other_department: Caller, session: Session
) -> None:
    record_id = push(app_client, department, [factories.penalty(1)]).json()["records"][0][
        "record_id"
    ]
    url = f"{URL}/{record_id}/withdraw"
    assert (
        app_client.post(url, json={"reason": "撤销"}, headers=other_department.headers).status_code
        == 404
    )
    assert app_client.post(url, json={}, headers=department.headers).status_code == 422
    done = app_client.post(url, json={"reason": "处罚决定已被撤销"}, headers=department.headers)
    assert done.status_code == 200
    assert done.json()["status"] == "withdrawn"
    again = app_client.post(url, json={"reason": "again"}, headers=department.headers)
    assert again.status_code == 409
    corrected = push(app_client, department, [factories.penalty(1, fine_amount_wan="9")])
    assert corrected.json()["errors"][0]["code"] == "record_withdrawn"
    history = app_client.get(f"{URL}/{record_id}/history", headers=department.headers).json()
    assert len(history["versions"]) == 1
    assert app_client.get(f"{URL}/{record_id}", headers=other_department.headers).status_code == 404


def test_hostile_text_is_stored_verbatim(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    text = "'); DROP TABLE record; -- <script>alert('x')</script> \u202e"
    push(app_client, department, [factories.penalty(1, violation_facts=text)])
    version = session.scalars(select(RecordVersion)).one()
    assert version.data["violation_facts"] == text.strip()


def test_aliases_and_licences(app_client: TestClient, department: Caller) -> None:
    record = {
        ("许可证书名称" if k == "certificate_name" else k): v
        for k, v in factories.licence(1).items()
    }
    response = push(app_client, department, [record], standard="administrative_licensing")
    assert response.status_code == 201, response.text
