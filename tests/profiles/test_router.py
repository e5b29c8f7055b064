"""Profiles, person lookup, screening and search, through HTTP, with their audit trail."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind
from credit_hub.audit.models import AuditEvent
from credit_hub.errors import PROBLEM_BASE
from credit_hub.records.models import Record, RecordVersion
from tests import factories
from tests.conftest import Caller, pushed, register

READ = {"purpose": "procurement", "case_ref": "FJZC2026-G-001"}


def today() -> date:
    return datetime.now(UTC).date()


def recent(days: int = 10) -> str:
    return (today() - timedelta(days=days)).isoformat()


def profile(client: TestClient, caller: Caller, key: str, **params: Any) -> Any:
    return client.get(f"/v1/subjects/{key}/profile", params=READ | params, headers=caller.headers)


def test_profile_groups_records_and_summarizes(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(500)
    pushed(
        app_client,
        department,
        [
            factories.penalty(
                1, counterpart_uscc=uscc, decision_date=recent(), fine_amount_wan="2.5"
            ),
            factories.penalty(
                2, counterpart_uscc=uscc, decision_date=recent(20), fine_amount_wan="12.75"
            ),
        ],
    )
    pushed(
        app_client,
        department,
        [factories.licence(1, counterpart_uscc=uscc, decision_date=recent(), valid_from=recent())],
        standard="administrative_licensing",
    )
    response = profile(app_client, agency, uscc)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"]["uscc"] == uscc
    assert body["subject"]["region"] == {"division": "350100", "province": "福建省"}
    assert body["subject"]["registration_category"] is not None
    assert len(body["records"]["administrative_penalty"]) == 2
    assert len(body["records"]["administrative_licensing"]) == 1
    summary = body["summary"]
    assert summary["counts"] == {"administrative_licensing": 1, "administrative_penalty": 2}
    assert summary["active_penalties"] == 2
    assert summary["largest_fine_wan"] == "12.75"
    assert summary["latest_decision_date"] == recent()
    assert summary["under_objection"] is False
    # the same subject by its organization code and by its subject id
    assert profile(app_client, agency, uscc[8:17]).json()["subject"]["id"] == body["subject"]["id"]
    assert profile(app_client, agency, body["subject"]["id"]).status_code == 200


def test_every_read_is_audited_with_purpose(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    session: Session,
    operator: Caller,
) -> None:
    uscc = factories.make_uscc(501)
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent())],
    )
    profile(app_client, agency, uscc, purpose="licensing_review", case_ref="XK-7")
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "profile.read")).one()
    assert (event.actor_id, event.purpose, event.case_ref, event.result) == (
        agency.client.id,
        "licensing_review",
        "XK-7",
        "ok",
    )
    assert event.request_id
    log = app_client.get(f"/v1/subjects/{uscc}/access-log", headers=operator.headers).json()
    assert log["entries"][0]["client_name"] == agency.client.name
    assert log["entries"][0]["purpose"] == "licensing_review"
    assert (
        app_client.get(f"/v1/subjects/{uscc}/access-log", headers=agency.headers).status_code == 403
    )
    audit = app_client.get(
        "/v1/admin/audit", params={"action": "profile.read"}, headers=operator.headers
    ).json()
    assert [e["case_ref"] for e in audit["items"]] == ["XK-7"]


def test_the_audit_log_takes_iso_instants_and_refuses_numbers(
    app_client: TestClient, department: Caller, agency: Caller, operator: Caller
) -> None:
    uscc = factories.make_uscc(502)
    pushed(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    assert profile(app_client, agency, uscc).status_code == 200
    url = "/v1/admin/audit"
    since = {"action": "profile.read", "since": "2000-01-01T00:00:00Z"}
    assert len(app_client.get(url, params=since, headers=operator.headers).json()["items"]) == 1
    later = since | {"since": "2999-01-01T00:00:00+08:00"}
    assert app_client.get(url, params=later, headers=operator.headers).json()["items"] == []
    # Pydantic alone reads 12 as 1970-01-01T00:00:12Z: the log since then, where the document
    # promises a date-time.
    answer = app_client.get(url, params={"since": "12"}, headers=operator.headers)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    [error] = answer.json()["errors"]
    assert (error["in"], error["parameter"], error["code"]) == ("query", "since", "value_error")
    assert "ISO 8601" in error["message"]
    # An instant without its offset is ambiguous (it reached the UTC column as a 500).
    for naive in ("2026-11-26", "2026-11-26T08:00:00"):
        answer = app_client.get(url, params={"until": naive}, headers=operator.headers)
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["errors"]
        assert (error["parameter"], error["code"]) == ("until", "timezone_aware")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"purpose": None}, "purpose.missing"),
        ({"purpose": "curiosity"}, "purpose.unknown"),
        ({"case_ref": None}, "case_ref.missing"),
        ({"case_ref": "  "}, "case_ref.missing"),
        ({"as_of": "2999-01-01"}, "as_of.future"),
        ({"standards": "tax_rating"}, "standards.not_allowed"),
        ({"include": "everything"}, "include.unknown"),
    ],
)
def test_read_parameters_are_enforced(
    app_client: TestClient, department: Caller, agency: Caller, params: dict[str, Any], code: str
) -> None:
    uscc = factories.make_uscc(502)
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent())],
    )
    query = {k: v for k, v in (READ | params).items() if v is not None}
    response = app_client.get(f"/v1/subjects/{uscc}/profile", params=query, headers=agency.headers)
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM_BASE + "request-invalid"
    assert response.json()["errors"][0]["code"] == code


def test_unknown_and_malformed_keys(app_client: TestClient, agency: Caller) -> None:
    missing = profile(app_client, agency, factories.make_uscc(9999))
    assert missing.status_code == 404
    assert missing.json()["type"] == PROBLEM_BASE + "not-found"
    bad = profile(app_client, agency, "914403001922038217")
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["code"] == "uscc.checksum"
    assert profile(app_client, agency, "hello").json()["errors"][0]["code"] == "key.unrecognized"


def test_only_agencies_read_profiles(
    app_client: TestClient, department: Caller, operator: Caller
) -> None:
    uscc = factories.make_uscc(503)
    pushed(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    assert profile(app_client, department, uscc).status_code == 403
    assert app_client.get(f"/v1/subjects/{uscc}/profile", params=READ).status_code == 401


def test_publication_window_filters_records(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
) -> None:
    uscc = factories.make_uscc(504)
    old = (today() - timedelta(days=200)).isoformat()
    pushed(
        app_client,
        department,
        [
            factories.penalty(
                1, counterpart_uscc=uscc, penalty_categories=["警告"], decision_date=old
            ),  # minor: 3 months, over
            factories.penalty(2, counterpart_uscc=uscc, decision_date=old),  # general: 1 year
        ],
    )
    shown = profile(app_client, agency, uscc).json()
    assert [r["source_id"] for r in shown["records"]["administrative_penalty"]] == [
        factories.penalty(2)["decision_doc_no"]
    ]
    everything = profile(app_client, privileged_agency, uscc, include="unpublished").json()
    assert len(everything["records"]["administrative_penalty"]) == 2
    assert profile(app_client, agency, uscc, include="unpublished").status_code == 403


def test_withdrawn_records_leave_the_profile(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
) -> None:
    uscc = factories.make_uscc(505)
    report = pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent())],
    )
    record_id = report["records"][0]["record_id"]
    app_client.post(
        f"/v1/records/{record_id}/withdraw", json={"reason": "撤销"}, headers=department.headers
    )
    assert profile(app_client, agency, uscc).json()["records"] == {}
    with_withdrawn = profile(app_client, privileged_agency, uscc, include="withdrawn").json()
    assert with_withdrawn["records"]["administrative_penalty"][0]["status"] == "withdrawn"


def test_agency_sees_only_its_standards(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(506)
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent())],
    )
    pushed(
        app_client,
        department,
        [factories.licence(1, counterpart_uscc=uscc, decision_date=recent(), valid_from=recent())],
        standard="administrative_licensing",
    )
    licensing = register(session, ClientKind.AGENCY, standards=["administrative_licensing"])
    body = profile(app_client, licensing, uscc).json()
    assert list(body["records"]) == ["administrative_licensing"]
    both = register(session, ClientKind.AGENCY)
    filtered = profile(app_client, both, uscc, standards="administrative_penalty").json()
    assert list(filtered["records"]) == ["administrative_penalty"]


def test_personal_fields_are_masked_without_the_scope(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
) -> None:
    number = factories.make_id_number(31)
    rep_number = factories.make_id_number(32)
    report = pushed(
        app_client,
        department,
        [
            factories.person_penalty(1, person_id_no=number, decision_date=recent()),
            factories.penalty(
                2, legal_rep_id_type="身份证", legal_rep_id_no=rep_number, decision_date=recent()
            ),
        ],
    )
    person_id = None
    masked = number[:6] + "********" + number[-4:]
    for key in (report["records"][0]["record_id"],):
        record = app_client.get(f"/v1/records/{key}", headers=department.headers).json()
        person_id = record["subject_id"]
    plain = profile(app_client, agency, person_id).json()
    assert plain["subject"]["person_id"] == masked
    assert plain["records"]["administrative_penalty"][0]["data"]["person_id_no"] == masked
    assert number not in str(plain)
    clear = profile(app_client, privileged_agency, person_id).json()
    assert clear["subject"]["person_id"] == number
    assert clear["records"]["administrative_penalty"][0]["data"]["person_id_no"] == number
    org = profile(app_client, agency, factories.penalty(2)["counterpart_uscc"]).json()
    assert rep_number not in str(org)
    assert org["records"]["administrative_penalty"][0]["data"]["legal_rep_id_no"] == (
        rep_number[:6] + "********" + rep_number[-4:]
    )


def test_person_lookup_needs_the_scope_and_keeps_the_number_out_of_urls(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
    session: Session,
) -> None:
    number = factories.make_id_number(41)
    pushed(
        app_client,
        department,
        [factories.person_penalty(1, person_id_no=number, decision_date=recent())],
    )
    body = {"id_type": "身份证", "id_number": number[:6] + number[8:17]} | READ  # 15 digits
    assert (
        app_client.post("/v1/subjects/lookup", json=body, headers=agency.headers).status_code == 403
    )
    found = app_client.post("/v1/subjects/lookup", json=body, headers=privileged_agency.headers)
    assert found.status_code == 200, found.text
    assert found.json()["subject"]["kind"] == "natural_person"
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "subject.looked_up")
    ).one()
    assert event.request_id
    assert number not in str(event.payload)
    unknown = body | {"id_number": factories.make_id_number(42)}
    assert (
        app_client.post(
            "/v1/subjects/lookup", json=unknown, headers=privileged_agency.headers
        ).status_code
        == 404
    )
    malformed = body | {"id_number": "110105194912310021"}
    response = app_client.post(
        "/v1/subjects/lookup", json=malformed, headers=privileged_agency.headers
    )
    assert response.status_code == 422
    in_seconds = body | {"as_of": 86400}  # 1970-01-02 to pydantic alone; not an ISO date
    response = app_client.post(
        "/v1/subjects/lookup", json=in_seconds, headers=privileged_agency.headers
    )
    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == ["/as_of"]


def test_etag_gives_304(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(507)
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent())],
    )
    first = profile(app_client, agency, uscc)
    tag = first.headers["etag"]
    again = app_client.get(
        f"/v1/subjects/{uscc}/profile", params=READ, headers=agency.headers | {"If-None-Match": tag}
    )
    assert again.status_code == 304
    assert again.headers["etag"] == tag
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=recent(), fine_amount_wan="3")],
    )
    changed = app_client.get(
        f"/v1/subjects/{uscc}/profile", params=READ, headers=agency.headers | {"If-None-Match": tag}
    )
    assert changed.status_code == 200
    results = [
        e.result
        for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "profile.read").order_by(AuditEvent.id)
        )
    ]
    assert results == ["ok", "not_modified", "ok"]


def test_as_of_shows_the_version_in_force_then(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(508)
    decided = (today() - timedelta(days=60)).isoformat()
    first = pushed(
        app_client, department, [factories.penalty(1, counterpart_uscc=uscc, decision_date=decided)]
    )
    record_id = uuid.UUID(first["records"][0]["record_id"])
    pushed(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc, decision_date=decided, fine_amount_wan="7")],
    )
    # Pretend version 1 was stored 30 days ago and corrected 5 days ago.
    stored, corrected = (datetime.now(UTC) - timedelta(days=d) for d in (30, 5))
    session.execute(update(Record).where(Record.id == record_id).values(created_at=stored))
    session.execute(
        update(RecordVersion).where(RecordVersion.version == 1).values(created_at=stored)
    )
    session.execute(
        update(RecordVersion).where(RecordVersion.version == 2).values(created_at=corrected)
    )
    session.flush()
    then = profile(app_client, agency, uscc, as_of=(today() - timedelta(days=10)).isoformat())
    assert then.status_code == 200, then.text
    record = then.json()["records"]["administrative_penalty"][0]
    assert (record["version"], record["data"]["fine_amount_wan"]) == (1, "0.5")
    assert then.json()["summary"]["largest_fine_wan"] == "0.5"  # the fine in force then
    today_profile = profile(app_client, agency, uscc).json()
    now = today_profile["records"]["administrative_penalty"][0]
    assert (now["version"], now["data"]["fine_amount_wan"]) == (2, "7")
    assert today_profile["summary"]["largest_fine_wan"] == "7"
    before = profile(app_client, agency, uscc, as_of=(today() - timedelta(days=40)).isoformat())
    assert before.status_code == 422
    assert before.json()["errors"][0]["code"] == "as_of.before_records"


def test_as_of_takes_the_latest_version_stored_by_then_even_if_pushes_raced(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    # Two pushes racing on one record can store version 3 with a clock read before version
    # 2's: version 2 then never was in force, and no instant shows two versions of the record.
    uscc = factories.make_uscc(509)
    decided = (today() - timedelta(days=60)).isoformat()
    fines = ["1", "2", "3"]
    for fine in fines:
        report = pushed(
            app_client,
            department,
            [
                factories.penalty(
                    1, counterpart_uscc=uscc, decision_date=decided, fine_amount_wan=fine
                )
            ],
        )
    record_id = uuid.UUID(report["records"][0]["record_id"])
    ago = {d: datetime.now(UTC) - timedelta(days=d) for d in (30, 10, 20)}
    session.execute(update(Record).where(Record.id == record_id).values(created_at=ago[30]))
    for version, days in ((1, 30), (2, 10), (3, 20)):
        session.execute(
            update(RecordVersion)
            .where(RecordVersion.record_id == record_id, RecordVersion.version == version)
            .values(created_at=ago[days])
        )
    session.flush()

    def in_force(days: int) -> list[tuple[int, str]]:
        answer = profile(
            app_client, agency, uscc, as_of=(today() - timedelta(days=days)).isoformat()
        )
        assert answer.status_code == 200, answer.text
        records = answer.json()["records"]["administrative_penalty"]
        return [(r["version"], r["data"]["fine_amount_wan"]) for r in records]

    assert in_force(25) == [(1, "1")]
    assert in_force(15) == [(3, "3")]
    assert in_force(5) == [(3, "3")]
    history = app_client.get(f"/v1/records/{record_id}/history", headers=department.headers)
    ends = [v["superseded_at"] for v in history.json()["versions"]]
    starts = [v["created_at"] for v in history.json()["versions"]]
    assert ends == [starts[1], starts[2], None]


def test_screening(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    usccs = [factories.make_uscc(600 + i) for i in range(5)]
    pushed(
        app_client,
        department,
        [
            factories.penalty(i, counterpart_uscc=u, decision_date=recent())
            for i, u in enumerate(usccs[:3])
        ],
    )
    unknown = factories.make_uscc(699)
    identifiers = [*usccs[:3], unknown, f" {usccs[0][:8]}-{usccs[0][8:]} "]
    # The same USCC written another way is a duplicate.
    response = app_client.post(
        "/v1/profiles/screen", json={"identifiers": identifiers} | READ, headers=agency.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "duplicate"
    assert response.json()["errors"][0]["pointer"] == "/identifiers/4"
    response = app_client.post(
        "/v1/profiles/screen", json={"identifiers": identifiers[:4]} | READ, headers=agency.headers
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["checked"], report["found"]) == (4, 3)
    assert report["results"][3] == {
        "identifier": unknown,
        "found": False,
        "subject_id": None,
        "kind": None,
        "name": None,
        "summary": None,
    }
    assert report["results"][0]["summary"]["active_penalties"] == 1
    screened = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "profile.screened")
    ).all()
    assert len(screened) == 3
    assert {e.case_ref for e in screened} == {READ["case_ref"]}
    too_many = [factories.make_uscc(10_000 + i) for i in range(1001)]
    over = app_client.post(
        "/v1/profiles/screen", json={"identifiers": too_many} | READ, headers=agency.headers
    )
    assert over.status_code == 422
    assert over.json()["errors"][0]["code"] == "max_items"
    no_purpose = app_client.post(
        "/v1/profiles/screen", json={"identifiers": usccs[:1]}, headers=agency.headers
    )
    assert no_purpose.status_code == 422


def test_screening_summarizes_as_the_profile_does_after_corrections(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    # Screening reads the fine and the window off the record row, the profile off the current
    # version: a correction must move both.
    uscc = factories.make_uscc(520)
    first = factories.penalty(
        1, counterpart_uscc=uscc, decision_date=recent(), fine_amount_wan="40"
    )
    other = factories.penalty(
        2, counterpart_uscc=uscc, decision_date=recent(9), fine_amount_wan="3"
    )
    pushed(app_client, department, [first, other])

    def summaries() -> tuple[Any, Any]:
        screened = app_client.post(
            "/v1/profiles/screen", json={"identifiers": [uscc]} | READ, headers=agency.headers
        )
        assert screened.status_code == 200, screened.text
        return screened.json()["results"][0]["summary"], profile(app_client, agency, uscc).json()[
            "summary"
        ]

    screened, profiled = summaries()
    assert screened == profiled
    assert screened["largest_fine_wan"] == "40"
    pushed(app_client, department, [first | {"fine_amount_wan": "7.5"}])  # a correction
    screened, profiled = summaries()
    assert screened == profiled
    assert screened["largest_fine_wan"] == "7.5"
    assert screened["counts"] == {"administrative_penalty": 2}


def test_search_by_chinese_name_prefix_and_identifier(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
) -> None:
    names = [
        "福州鼓楼区示例茶叶有限公司",
        "厦门思明区示例茶叶贸易有限公司",
        "福州台江区样本科技有限公司",
    ]
    usccs = [factories.make_uscc(700 + i) for i in range(3)]
    pushed(
        app_client,
        department,
        [
            factories.penalty(i, counterpart_uscc=u, counterpart_name=n)
            for i, (u, n) in enumerate(zip(usccs, names, strict=True))
        ],
    )
    pushed(app_client, department, [factories.person_penalty(9, counterpart_name="示例茶叶张某")])

    def search(q: str, caller: Caller = agency, **params: Any) -> Any:
        response = app_client.get("/v1/subjects", params={"q": q} | params, headers=caller.headers)
        assert response.status_code == 200, response.text
        return response.json()

    assert {h["name"] for h in search("示例茶叶")["items"]} == set(names[:2])
    assert {h["name"] for h in search("示例茶叶", privileged_agency)["items"]} == {
        *names[:2],
        "示例茶叶张某",
    }
    assert {h["name"] for h in search("福州")["items"]} == {names[0], names[2]}
    assert {h["name"] for h in search("福")["items"]} == {names[0], names[2]}
    assert [h["uscc"] for h in search(usccs[1])["items"]] == [usccs[1]]
    assert search(factories.make_uscc(799))["items"] == []
    first = search("有限公司", limit=2)
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = search("有限公司", limit=2, cursor=first["next_cursor"])
    seen = [h["name"] for h in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(names)
    assert rest["next_cursor"] is None
    bad = app_client.get(
        "/v1/subjects", params={"q": "有限", "cursor": "###"}, headers=agency.headers
    )
    assert bad.status_code == 422


@pytest.mark.parametrize(
    ("q", "position"),
    [
        ("有限公司", "notauuid"),  # a substring search's position: a rowid or a row id
        ("有限", 12),  # a prefix search's: a name and an id
        *[(q, p) for q in ("有限公司", "有限") for p in ([1], {"a": 1}, "x" * 301, None)],
    ],
)
def test_a_forged_search_cursor_is_a_422_not_a_500(
    app_client: TestClient, agency: Caller, q: str, position: object
) -> None:
    cursor = base64.urlsafe_b64encode(orjson.dumps({"p": position})).decode().rstrip("=")
    response = app_client.get(
        "/v1/subjects", params={"q": q, "cursor": cursor}, headers=agency.headers
    )
    if position is None:  # the first page, as without a cursor
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["code"] == "cursor.invalid"


def test_search_finds_former_names(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    uscc = factories.make_uscc(800)
    pushed(
        app_client,
        department,
        [
            factories.penalty(
                1,
                counterpart_uscc=uscc,
                counterpart_name="旧称星辰商贸有限公司",
                decision_date="2025/01/01",
            ),
            factories.penalty(
                2,
                counterpart_uscc=uscc,
                counterpart_name="新称星辰科技有限公司",
                decision_date="2026/01/01",
            ),
        ],
    )
    hits = app_client.get("/v1/subjects", params={"q": "星辰商贸"}, headers=agency.headers).json()
    assert [(h["name"], h["matched_name"]) for h in hits["items"]] == [
        ("新称星辰科技有限公司", "旧称星辰商贸有限公司")
    ]
    body = profile(app_client, agency, uscc).json()
    assert [n["name"] for n in body["subject"]["former_names"]] == ["旧称星辰商贸有限公司"]


@pytest.mark.parametrize(
    ("params", "parameter", "code"),
    [
        ({"as_of": "yesterday"}, "as_of", "date_from_datetime_parsing"),
        # Seconds since 1970 (pydantic's lax reading of a number) are not an ISO date.
        ({"as_of": "86400"}, "as_of", "value_error"),
        ({"case_ref": "x" * 201}, "case_ref", "string_too_long"),
    ],
)
def test_profile_query_is_checked_like_declared_parameters(
    app_client: TestClient,
    agency: Caller,
    params: dict[str, Any],
    parameter: str,
    code: str,
) -> None:
    # The handler reads its query itself (no FastAPI parameter solving): the same 422.
    response = profile(app_client, agency, factories.make_uscc(900), **params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM_BASE + "request-invalid"
    assert problem["errors"] == [
        {"code": code, "message": problem["errors"][0]["message"], "in": "query"}
        | {"parameter": parameter}
    ]


def test_profile_query_lists_repeat_and_split(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(901)
    pushed(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    pushed(
        app_client,
        department,
        [factories.licence(1, counterpart_uscc=uscc, valid_from=recent())],
        standard="administrative_licensing",
    )
    both = register(
        session,
        ClientKind.AGENCY,
        standards=["administrative_penalty", "administrative_licensing"],
    )
    url = f"/v1/subjects/{uscc}/profile"
    repeated = app_client.get(
        url,
        params=[
            *READ.items(),
            ("standards", "administrative_penalty"),
            ("standards", "administrative_licensing"),
        ],
        headers=both.headers,
    )
    assert repeated.status_code == 200, repeated.text
    assert set(repeated.json()["records"]) == {"administrative_penalty", "administrative_licensing"}
    one = app_client.get(
        url, params=READ | {"standards": "administrative_licensing"}, headers=both.headers
    )
    assert set(one.json()["records"]) == {"administrative_licensing"}
    unknown = app_client.get(
        url,
        params=[*READ.items(), ("include", "withdrawn"), ("include", "x")],
        headers=both.headers,
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["code"] == "include.unknown"


def test_profile_if_none_match_header_is_read(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    uscc = factories.make_uscc(902)
    pushed(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    first = profile(app_client, agency, uscc)
    tag = first.headers["etag"]
    again = app_client.get(
        f"/v1/subjects/{uscc}/profile",
        params=READ,
        headers=agency.headers | {"If-None-Match": f'W/"other", {tag}'},
    )
    assert again.status_code == 304
    assert again.headers["etag"] == tag
    assert again.headers["x-request-id"]


def test_profile_route_documents_what_its_handler_reads(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/subjects/{key}/profile"]["get"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert set(parameters) == {
        ("path", "key"),
        ("query", "purpose"),
        ("query", "case_ref"),
        ("query", "as_of"),
        ("query", "standards"),
        ("query", "include"),
        ("header", "if-none-match"),
    }
    assert parameters["path", "key"]["required"] is True
    assert not any(p["required"] for k, p in parameters.items() if k[0] != "path")
    assert {"type": "string", "maxLength": 200} in parameters["query", "case_ref"]["schema"][
        "anyOf"
    ]
    assert {"type": "string", "format": "date"} in parameters["query", "as_of"]["schema"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in parameters["query", "standards"][
        "schema"
    ]["anyOf"]
    assert parameters["query", "purpose"]["description"].startswith("Why the profile is read")


def test_profile_needs_a_bearer_key_of_an_agency(app_client: TestClient, agency: Caller) -> None:
    url = f"/v1/subjects/{factories.make_uscc(903)}/profile"
    key = agency.headers["Authorization"].removeprefix("Bearer ")
    basic = app_client.get(url, params=READ, headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"] == "Bearer"
    assert basic.json()["type"] == PROBLEM_BASE + "unauthorized"
    # Authentication comes before the query is checked, as with a dependency.
    assert app_client.get(url, params={"as_of": "never"}).status_code == 401


def test_the_direct_profile_route_answers_as_the_documented_one(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    served = app_client.app.router.routes[0]  # type: ignore[attr-defined]
    assert served.path == "/v1/subjects/{key}/profile"
    assert type(served).__module__.startswith("starlette.")  # not FastAPI's APIRoute
    uscc = factories.make_uscc(904)
    pushed(app_client, department, [factories.penalty(1, counterpart_uscc=uscc)])
    url = f"/v1/subjects/{uscc}/profile"
    read = profile(app_client, agency, uscc)
    assert read.status_code == 200
    assert read.json()["subject"]["uscc"] == uscc
    assert read.headers["x-content-type-options"] == "nosniff"
    # Other methods are refused as before, HEAD included (FastAPI's route never took it).
    for method in ("HEAD", "POST", "DELETE"):
        refused = app_client.request(method, url, params=READ, headers=agency.headers)
        assert refused.status_code == 405, method
    # FastAPI's own 422 for the query, rendered by the app's problem handler.
    invalid = app_client.get(url, params=READ | {"as_of": "never"}, headers=agency.headers)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"][0]["parameter"] == "as_of"
