"""The audit hash chain: what pushes and admin actions append verifies; an edited, deleted or
relinked row is named; and no audit row holds an ID number or an API key."""

from __future__ import annotations

import hashlib
from itertools import pairwise
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, delete, select, update
from sqlalchemy.orm import Session

from credit_hub.audit import service as audit
from credit_hub.audit.models import AuditEvent
from credit_hub.db import table
from tests import factories
from tests.conftest import Caller, pushed

AUDIT: Table = table(AuditEvent)


def admin(app_client: TestClient, operator: Caller, method: str, path: str, body: Any) -> Any:
    response = app_client.request(
        method, f"/v1/admin/clients{path}", json=body, headers=operator.headers
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture
def chain(
    app_client: TestClient, operator: Caller, department: Caller, session: Session
) -> list[int]:
    """Events appended through the API: pushes and admin actions. Returns their ids in order."""
    pushed(app_client, department, [factories.penalty(1), factories.penalty(2)])
    created = admin(
        app_client,
        operator,
        "POST",
        "",
        {"kind": "agency", "name": "福州市公共资源交易中心", "standards": []},
    )
    pushed(app_client, department, [factories.penalty(1, fine_amount_wan="0.8")])
    key = admin(app_client, operator, "POST", f"/{created['id']}/keys", {"label": "second"})
    admin(app_client, operator, "DELETE", f"/{created['id']}/keys/{key['id']}", None)
    ids = list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))
    assert len(ids) >= 5
    return ids


def tampered(session: Session) -> audit.ChainReport:
    """Verify as a fresh session (the CLI's) would: from the rows, not the identity map."""
    session.expire_all()
    return audit.verify(session)


def test_pushes_and_admin_actions_make_a_chain_that_verifies(
    chain: list[int], session: Session
) -> None:
    actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-5:] == [
        "records.pushed",
        "client.created",
        "records.pushed",
        "key.issued",
        "key.revoked",
    ]
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert events[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(events))
    report = audit.verify(session)
    assert report.ok
    assert report.broken_at is None
    assert report.reason is None
    assert report.checked == len(chain)


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"standard": "administrative_penalty", "created": 0}},
        {"result": "rejected"},
        {"action": "records.read"},
    ],
    ids=["payload", "result", "action"],
)
def test_an_edited_row_is_named(chain: list[int], session: Session, change: dict[str, Any]) -> None:
    victim = chain[len(chain) // 2]
    session.execute(update(AUDIT).where(AUDIT.c.id == victim).values(change))
    report = tampered(session)
    assert not report.ok
    assert report.broken_at == victim
    assert report.reason
    assert report.checked == chain.index(victim)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    chain: list[int], session: Session
) -> None:
    victim, successor = chain[1], chain[2]
    event = session.get(AuditEvent, victim)
    assert event is not None
    event.payload = {"standard": "administrative_penalty", "created": 0}
    forged = audit._digest(event.prev_hash, event)
    session.expunge(event)
    session.execute(
        update(AUDIT).where(AUDIT.c.id == victim).values(payload=event.payload, hash=forged)
    )
    report = tampered(session)
    assert report.broken_at == successor
    assert report.reason
    assert report.checked == chain.index(successor)


def test_a_deleted_middle_row_is_named(chain: list[int], session: Session) -> None:
    victim = chain[len(chain) // 2]
    session.execute(delete(AUDIT).where(AUDIT.c.id == victim))
    report = tampered(session)
    assert report.broken_at == victim
    assert report.reason
    assert report.checked == chain.index(victim)


def test_a_changed_prev_hash_is_named(chain: list[int], session: Session) -> None:
    victim = chain[-2]
    session.execute(update(AUDIT).where(AUDIT.c.id == victim).values(prev_hash="f" * 64))
    report = tampered(session)
    assert report.broken_at == victim
    assert report.reason
    assert report.checked == chain.index(victim)


def test_audit_rows_hold_no_id_number_and_no_api_key(
    app_client: TestClient, operator: Caller, department: Caller, session: Session
) -> None:
    number = factories.make_id_number(7)
    legacy = number[:6] + number[8:17]  # the 15-digit form of the same number
    other = factories.make_id_number(8)
    pushed(
        app_client,
        department,
        [
            factories.person_penalty(1, person_id_no=number),
            factories.person_penalty(2, person_id_no=legacy),
            factories.person_penalty(3, person_id_no=other, fine_amount_wan="0.8"),
            factories.person_penalty(4, person_id_no="110105198001010000"),  # bad check digit
        ],
    )
    created = admin(
        app_client,
        operator,
        "POST",
        "",
        {"kind": "department", "name": "福州市税务局", "uscc": factories.make_uscc(3, prefix="11")},
    )
    issued = admin(app_client, operator, "POST", f"/{created['id']}/keys", {})
    admin(app_client, operator, "PATCH", f"/{created['id']}", {"disabled": True})
    secrets = {
        number,
        legacy,
        other,
        "110105198001010000",
        department.key,
        operator.key,
        created["api_key"],
        issued["api_key"],
    }
    rows = session.execute(select(AUDIT)).mappings().all()
    assert {row["action"] for row in rows} >= {"records.pushed", "client.created", "key.issued"}
    for row in rows:
        text = orjson.dumps(dict(row), default=str).decode()
        assert not [secret for secret in secrets if secret in text], row["action"]
    assert audit.verify(session).ok


@pytest.mark.parametrize(
    "case_ref",
    [None, "plain", '"id":1,', 'a\\",\\"id\\":', "引号 \u2028 \x00 𠀀", ',"payload":null'],
)
def test_the_content_split_either_side_of_the_id_is_the_canonical_content(
    case_ref: str | None,
) -> None:
    # PostgreSQL's audit_append hashes head + id + tail; `audit verify` must find the very
    # bytes of the content's canonical JSON (keys sorted, compact), whatever the values hold.
    event = {name: None for name in audit._CONTENT} | {
        "id": 987654321,
        "action": "profile.read",
        "actor_kind": "agency",
        "case_ref": case_ref,
        "payload": {"z": [1, 2.5, None], "a": "引号", "id": 3},
    }
    head, tail = audit._halves(event)
    canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode()
    assert head + "987654321" + tail == canonical
    prev = "ab" * 32
    expected = hashlib.sha256(prev.encode() + canonical.encode()).hexdigest()
    assert audit._digest(prev, event) == expected
