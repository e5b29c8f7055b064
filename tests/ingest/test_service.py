"""Storing checked records: what prepare() makes before the write transaction is what is
stored under it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.changes.models import ChangeEvent
from credit_hub.config import Settings
from credit_hub.db import make_engine, new_id
from credit_hub.ingest import service
from credit_hub.ingest.models import Submission
from credit_hub.keyring import load_keyring
from credit_hub.standards.registry import Standards
from tests import factories
from tests.conftest import Caller


def test_change_events_carry_the_ids_prepared_before_the_write(
    session: Session, settings: Settings, department: Caller
) -> None:
    keyring = load_keyring(settings)
    found = Standards.load(settings.schemas_dir).resolve("administrative_penalty")
    client = Principal.of(department.client)
    now = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    first = [factories.penalty(n) for n in range(1, 4)]
    # One record of the second batch is new, one corrected, one rejected, one unchanged.
    second = [
        factories.penalty(4),
        factories.penalty(1, violation_type="销售过期食品"),
        factories.penalty(5, source_org_uscc=factories.make_uscc(99)),
        first[2],
    ]
    prepared_ids = []
    for batch in (first, second):
        checked, rejected, _ = service.check_records(found, batch, client=client, keyring=keyring)
        assert len(rejected) == (0 if batch is first else 1)
        submission = Submission(
            id=new_id(),
            client_id=client.id,
            kind="batch",
            standard=found.standard,
            version=found.version,
            mode="partial",
            status="processing",
            body_sha256="0" * 64,
            received=len(batch),
            created=0,
            updated=0,
            unchanged=0,
            rejected=0,
            created_at=now,
        )
        session.add(submission)
        session.flush()
        prepared = service.prepare(
            session, found, checked, client=client, submission_id=submission.id, now=now
        )
        outcomes, _, written = service.write_records(
            session,
            keyring,
            found,
            checked,
            client=client,
            submission_id=submission.id,
            now=now,
            prepared=prepared,
        )
        service.emit_changes(session, found, written, client=client, now=now)
        position = {item.index: n for n, item in enumerate(checked)}
        prepared_ids += [
            prepared.event_ids[position[o["index"]]]
            for o in outcomes
            if o["outcome"] in ("created", "updated")
        ]
        assert len(prepared.event_ids) == len(checked)

    events = session.execute(
        select(ChangeEvent.event_id, ChangeEvent.kind, ChangeEvent.record_id)
        .where(ChangeEvent.department_id == client.id)
        .order_by(ChangeEvent.position)
    ).all()
    assert [e.kind for e in events] == ["created"] * 4 + ["corrected"]
    assert [e.event_id for e in events] == prepared_ids
    assert len(set(prepared_ids)) == 5


def _try_key_lock(engine: Engine, department_id: uuid.UUID, *, exclusive: bool) -> str | None:
    """In a transaction of its own, with 200 ms to get it: None if granted, else the SQLSTATE."""
    with Session(engine) as session, session.begin():
        session.execute(text("SET LOCAL lock_timeout = '200ms'"))
        try:
            service._lock_natural_keys(session, department_id, "std", exclusive=exclusive)
        except OperationalError as error:
            return str(getattr(error.orig, "sqlstate", "?"))
    return None


def test_pushes_share_the_natural_key_lock_and_an_atomic_file_takes_it_alone(
    settings: Settings,
) -> None:
    """PostgreSQL: batch pushes of one department claim their records in one sorted statement
    and write side by side; a transaction that claims chunk after chunk (an atomic file) waits
    for them, and they for it."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite's write lock serializes every writer")
    engine = make_engine(settings, pool_size=3)
    department_id = uuid.uuid4()
    try:
        with Session(engine) as push, push.begin():
            service._lock_natural_keys(push, department_id, "std", exclusive=False)
            assert _try_key_lock(engine, department_id, exclusive=False) is None
            assert _try_key_lock(engine, department_id, exclusive=True) == "55P03"
            assert _try_key_lock(engine, uuid.uuid4(), exclusive=True) is None  # another dept
        with Session(engine) as atomic_file, atomic_file.begin():
            service._lock_natural_keys(atomic_file, department_id, "std", exclusive=True)
            assert _try_key_lock(engine, department_id, exclusive=False) == "55P03"
        assert _try_key_lock(engine, department_id, exclusive=True) is None  # released at commit
    finally:
        engine.dispose()
