"""Prepared statements store and read exactly what SQLAlchemy stores and reads."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.orm import Session

from credit_hub.audit.models import AuditEvent
from credit_hub.db import table
from credit_hub.fastsql import Prepared
from credit_hub.subjects.models import Subject

AUDIT = table(AuditEvent)
SUBJECTS = table(Subject)


def _event(number: int) -> dict[str, object]:
    return {
        "id": number,
        "at": datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        "actor_id": uuid.uuid4(),
        "actor_kind": "agency",
        "action": "profile.read",
        "subject_id": uuid.uuid4(),
        "record_id": None,
        "submission_id": None,
        "purpose": "procurement",
        "case_ref": "采购-001",
        "request_id": "r1",
        "result": "ok",
        "payload": {"standards": ["administrative_penalty"], "records": 3, "amount": "1.50"},
        "prev_hash": "0" * 64,
        "hash": "f" * 64,
    }


def test_a_prepared_insert_reads_back_through_sqlalchemy_unchanged(session: Session) -> None:
    append = Prepared(insert(AUDIT).values({c.key: bindparam(c.key) for c in AUDIT.c}))
    written = _event(900_001)
    append.rows(session, **written)
    stored = session.execute(select(AUDIT).where(AUDIT.c.id == 900_001)).one()._asdict()
    assert stored == written


def test_a_prepared_select_reads_what_sqlalchemy_wrote(session: Session) -> None:
    session.execute(insert(AUDIT), [_event(900_002)])
    by_id = Prepared(select(AUDIT).where(AUDIT.c.id == bindparam("id")))
    row = by_id.first(session, id=900_002)
    assert row is not None
    assert row._asdict() == _event(900_002) | {
        "actor_id": row.actor_id,
        "subject_id": row.subject_id,
    }
    assert isinstance(row.actor_id, uuid.UUID)
    assert row.at == datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    assert row.payload["amount"] == "1.50"
    assert by_id.first(session, id=-1) is None


def test_constant_defaults_and_dates_bind_like_sqlalchemy(session: Session) -> None:
    subject_id = uuid.uuid4()
    session.execute(
        insert(SUBJECTS).values(
            id=subject_id,
            kind="organization",
            name="福州某某有限公司",
            name_seen_on=date(2026, 1, 2),
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
    )
    seen = Prepared(
        select(SUBJECTS.c.id, SUBJECTS.c.name_seen_on).where(
            SUBJECTS.c.name_seen_on >= bindparam("day"), SUBJECTS.c.kind == "organization"
        )
    )
    found = {row.id: row.name_seen_on for row in seen.rows(session, day=date(2026, 1, 2))}
    assert found[subject_id] == date(2026, 1, 2)
    assert subject_id not in {row.id for row in seen.rows(session, day=date(2026, 1, 3))}


def test_cursor_listeners_see_prepared_statements(session: Session) -> None:
    statements: list[str] = []
    connection = session.connection()

    def listen(_c: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", listen)
    try:
        Prepared(select(AUDIT.c.id).where(AUDIT.c.id == bindparam("id"))).rows(session, id=1)
    finally:
        event.remove(connection, "before_cursor_execute", listen)
    assert any("audit_event" in s for s in statements)


def test_in_lists_are_refused_up_front(session: Session) -> None:
    listed = Prepared(select(AUDIT.c.id).where(AUDIT.c.action.in_(["a", "b"])))
    with pytest.raises(ValueError, match="scalar parameters only"):
        listed.rows(session)
