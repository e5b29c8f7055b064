"""The change feed and watch lists through HTTP: paging, cursors, filters, scopes, masking."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind
from credit_hub.changes.models import ChangeEvent
from credit_hub.errors import PROBLEM_BASE
from credit_hub.records.models import Record
from tests import factories
from tests.changes.conftest import changes
from tests.conftest import Caller, pushed, register

PENALTY = "administrative_penalty"
LICENSING = "administrative_licensing"


def record_ids(report: Any) -> list[uuid.UUID]:
    return [uuid.UUID(o["record_id"]) for o in report["records"]]


def test_pages_see_every_change_once_in_order(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    first = pushed(app_client, department, [factories.penalty(n) for n in range(1, 6)])
    pushed(app_client, department, [factories.penalty(2, fine_amount_wan="0.9")])
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        page = changes(app_client, agency.headers, limit=2, **({"after": cursor} if cursor else {}))
        seen.extend(page["changes"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [c["kind"] for c in seen] == ["created"] * 5 + ["corrected"]
    assert [c["record"]["id"] for c in seen[:5]] == [str(r) for r in record_ids(first)]
    assert len({c["id"] for c in seen}) == 6
    corrected = seen[-1]
    assert corrected["record"]["version"] == 2
    assert corrected["changed_fields"] == ["fine_amount_wan"]
    assert corrected["subject"]["key"] == factories.penalty(2)["counterpart_uscc"]
    # Polling at the head answers nothing new, then only what came after.
    assert changes(app_client, agency.headers, after=cursor)["changes"] == []
    pushed(app_client, department, [factories.penalty(9)])
    later = changes(app_client, agency.headers, after=cursor)
    assert [c["kind"] for c in later["changes"]] == ["created"]
    assert not later["has_more"]
    # `now` starts at the head.
    assert changes(app_client, agency.headers, after="now")["changes"] == []


def test_bad_cursors_and_limits_are_422(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    pushed(app_client, department, [factories.penalty(1)])
    head = changes(app_client, agency.headers)["next_cursor"]
    ahead = base64.urlsafe_b64encode(b"cf1:999999999").decode().rstrip("=")
    for params, code in [
        ({"after": "not-a-cursor"}, "cursor.invalid"),
        ({"after": "Y2YxOi0x"}, "cursor.invalid"),  # "cf1:-1"
        ({"after": ahead}, "cursor.unknown"),
        ({"limit": 1001}, "limit.too_large"),
    ]:
        response = app_client.get("/v1/changes", params=params, headers=agency.headers)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == PROBLEM_BASE + "request-invalid"
        assert response.json()["errors"][0]["code"] == code
    response = app_client.get("/v1/changes", params={"limit": 0}, headers=agency.headers)
    assert response.status_code == 422
    # A pruned feed: cursors before what is kept have expired.
    pushed(app_client, department, [factories.penalty(2), factories.penalty(3)])
    first = session.scalar(select(ChangeEvent.position).order_by(ChangeEvent.position).limit(1))
    assert first is not None
    session.execute(ChangeEvent.__table__.delete().where(ChangeEvent.position <= first))
    stale = base64.urlsafe_b64encode(f"cf1:{first - 1}".encode()).decode().rstrip("=")
    response = app_client.get("/v1/changes", params={"after": stale}, headers=agency.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "cursor.expired"
    assert len(changes(app_client, agency.headers, after=head)["changes"]) == 2


def test_agency_sees_only_its_standards_and_filters(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    penalties_only = register(session, ClientKind.AGENCY, name="银行", standards=[PENALTY])
    pushed(app_client, department, [factories.penalty(1)])
    pushed(app_client, department, [factories.licence(1)], standard=LICENSING)
    seen = changes(app_client, penalties_only.headers)["changes"]
    assert [c["record"]["standard"] for c in seen] == [PENALTY]
    response = app_client.get(
        "/v1/changes", params={"standard": LICENSING}, headers=penalties_only.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "standards.not_allowed"
    both = register(session, ClientKind.AGENCY, name="交易中心")
    only = changes(app_client, both.headers, standard=LICENSING)["changes"]
    assert [c["record"]["standard"] for c in only] == [LICENSING]
    # Departments and operators have no feed.
    assert app_client.get("/v1/changes", headers=department.headers).status_code == 403


def test_personal_fields_are_masked_as_in_a_profile(
    app_client: TestClient, department: Caller, agency: Caller, privileged_agency: Caller
) -> None:
    record = factories.person_penalty(1)
    pushed(app_client, department, [record])
    plain = changes(app_client, agency.headers)["changes"][0]
    clear = changes(app_client, privileged_agency.headers)["changes"][0]
    assert plain["subject"]["kind"] == "natural_person"
    assert plain["subject"]["uscc"] is None
    assert plain["subject"]["key"] == plain["subject"]["id"]  # never the ID number
    assert plain["data"]["person_id_no"] != record["person_id_no"]
    assert record["person_id_no"] not in str(plain)
    assert clear["data"]["person_id_no"] == record["person_id_no"]


def test_repaired_and_withheld_records_are_never_shared(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    report = pushed(app_client, department, [factories.penalty(1), factories.penalty(2)])
    repaired, withheld = record_ids(report)
    session.execute(update(Record).where(Record.id == repaired).values(status="repaired"))
    session.execute(update(Record).where(Record.id == withheld).values(withheld_reason="minor"))
    assert changes(app_client, agency.headers)["changes"] == []


def test_withdrawn_records_content_is_not_shown_without_the_unpublished_scope(
    app_client: TestClient,
    department: Caller,
    agency: Caller,
    privileged_agency: Caller,
    session: Session,
) -> None:
    (record_id,) = record_ids(pushed(app_client, department, [factories.penalty(1)]))
    session.execute(update(Record).where(Record.id == record_id).values(status="withdrawn"))
    plain = changes(app_client, agency.headers)["changes"][0]
    assert plain["data"] is None
    assert plain["record"]["status"] == "withdrawn"
    assert changes(app_client, privileged_agency.headers)["changes"][0]["data"] is not None


def test_watch_list_filters_the_feed(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    watched, other, unknown = (factories.make_uscc(n) for n in (700, 701, 702))
    response = app_client.put(f"/v1/watchlist/{watched}", headers=agency.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"key": watched}
    # A USCC the hub does not know yet may be watched; a malformed key may not.
    assert app_client.put(f"/v1/watchlist/{unknown}", headers=agency.headers).status_code == 200
    assert app_client.put("/v1/watchlist/91350100XXXX", headers=agency.headers).status_code == 422
    pushed(
        app_client,
        department,
        [
            factories.penalty(1, counterpart_uscc=watched),
            factories.penalty(2, counterpart_uscc=other),
        ],
    )
    only = changes(app_client, agency.headers, watched="true")["changes"]
    assert [c["subject"]["key"] for c in only] == [watched]
    assert len(changes(app_client, agency.headers)["changes"]) == 2
    listed = app_client.get("/v1/watchlist", headers=agency.headers).json()
    assert listed["total"] == 2
    assert app_client.delete(f"/v1/watchlist/{watched}", headers=agency.headers).status_code == 204
    assert app_client.delete(f"/v1/watchlist/{watched}", headers=agency.headers).status_code == 404
    assert changes(app_client, agency.headers, watched="true")["changes"] == []


def test_bulk_watch_list(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    report = pushed(app_client, department, [factories.person_penalty(1)])
    (record_id,) = record_ids(report)
    person = session.scalar(select(Record.subject_id).where(Record.id == record_id))
    keys = [factories.make_uscc(n) for n in range(2000, 4000)]
    body = {"keys": [*keys, str(person), "00000000-0000-0000-0000-000000000000", keys[0]]}
    response = app_client.post("/v1/watchlist", json=body, headers=agency.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": 2003,
        "added": 2001,
        "removed": 0,
        "not_found": [2001],
        "watching": 2001,
    }
    watched = changes(app_client, agency.headers, watched="true")["changes"]
    assert [c["subject"]["id"] for c in watched] == [str(person)]
    response = app_client.post(
        "/v1/watchlist", json={"keys": keys[:10], "mode": "remove"}, headers=agency.headers
    )
    assert response.json()["removed"] == 10
    response = app_client.post(
        "/v1/watchlist", json={"keys": keys[:3], "mode": "replace"}, headers=agency.headers
    )
    assert response.json()["watching"] == 3
    bad = app_client.post("/v1/watchlist", json={"keys": ["nope"]}, headers=agency.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "/keys/0"


def test_watch_list_has_a_ceiling(
    app_client: TestClient, agency: Caller, hub_settings: Any
) -> None:
    hub_settings.watchlist_max = 5
    keys = [factories.make_uscc(n) for n in range(10)]
    response = app_client.post("/v1/watchlist", json={"keys": keys}, headers=agency.headers)
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEM_BASE + "watchlist-full"


def test_a_department_withdrawal_reaches_the_feed(
    app_client: TestClient, department: Caller, agency: Caller
) -> None:
    (record_id,) = record_ids(pushed(app_client, department, [factories.penalty(1)]))
    withdrawn = app_client.post(
        f"/v1/records/{record_id}/withdraw", json={"reason": "撤销"}, headers=department.headers
    )
    assert withdrawn.status_code == 200
    feed = changes(app_client, agency.headers)["changes"]
    assert [c["kind"] for c in feed] == ["created", "withdrawn"]
    assert feed[1]["record"]["id"] == str(record_id)
    assert feed[1]["data"] is None
