"""Storing checked records: what prepare() makes before the write transaction is what is
stored under it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.changes.models import ChangeEvent
from credit_hub.config import Settings
from credit_hub.db import new_id
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
        outcomes, _ = service.write_checked(
            session,
            keyring,
            found,
            checked,
            client=client,
            submission_id=submission.id,
            now=now,
            prepared=prepared,
        )
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
