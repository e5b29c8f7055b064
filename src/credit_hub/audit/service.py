"""Writing and verifying the audit chain.

Each event stores `prev_hash` (the hash of the event before it) and its own `hash`, a SHA-256
over `prev_hash` and its canonical content. Appends are serialized: on PostgreSQL by a
transaction-level advisory lock taken just before the insert (so it is held only until the
commit that follows), on SQLite by the write lock every writing transaction holds anyway.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit.models import AuditEvent
from credit_hub.db import utcnow
from credit_hub.log import current_request_id

GENESIS = "0" * 64
_LOCK_KEY = 0x63726564  # "cred": the advisory lock that orders appends to the chain


def _digest(prev_hash: str, event: AuditEvent) -> str:
    content = {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "actor_kind": event.actor_kind,
        "action": event.action,
        "subject_id": str(event.subject_id) if event.subject_id else None,
        "record_id": str(event.record_id) if event.record_id else None,
        "submission_id": str(event.submission_id) if event.submission_id else None,
        "purpose": event.purpose,
        "case_ref": event.case_ref,
        "request_id": event.request_id,
        "result": event.result,
        "payload": event.payload,
    }
    body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def record(
    session: Session,
    *,
    actor: Principal | None,
    action: str,
    actor_kind: str | None = None,
    subject_id: uuid.UUID | None = None,
    record_id: uuid.UUID | None = None,
    submission_id: uuid.UUID | None = None,
    purpose: str | None = None,
    case_ref: str | None = None,
    result: str | None = None,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction. Never put personal data in `payload`."""
    return record_many(
        session,
        [
            {
                "actor": actor,
                "action": action,
                "actor_kind": actor_kind,
                "subject_id": subject_id,
                "record_id": record_id,
                "submission_id": submission_id,
                "purpose": purpose,
                "case_ref": case_ref,
                "result": result,
                "payload": payload,
                "at": at,
            }
        ],
    )[0]


def record_many(session: Session, events: Sequence[dict[str, Any]]) -> list[AuditEvent]:
    """Append events in order, chained, with one lock, one read and one insert."""
    if not events:
        return []
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    last = session.execute(
        select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    ).first()
    next_id, prev_hash = ((last.id + 1), last.hash) if last else (1, GENESIS)
    request_id = current_request_id()
    now = utcnow()
    made: list[AuditEvent] = []
    for spec in events:
        actor: Principal | None = spec.get("actor")
        event = AuditEvent(
            id=next_id,
            at=spec.get("at") or now,
            actor_id=actor.id if actor else None,
            actor_kind=spec.get("actor_kind") or (actor.kind if actor else "system"),
            action=spec["action"],
            subject_id=spec.get("subject_id"),
            record_id=spec.get("record_id"),
            submission_id=spec.get("submission_id"),
            purpose=spec.get("purpose"),
            case_ref=spec.get("case_ref"),
            request_id=request_id,
            result=spec.get("result"),
            payload=spec.get("payload"),
            prev_hash=prev_hash,
        )
        event.hash = _digest(prev_hash, event)
        made.append(event)
        next_id, prev_hash = next_id + 1, event.hash
    session.execute(
        insert(AuditEvent),
        [{c.key: getattr(e, c.key) for c in AuditEvent.__table__.columns} for e in made],
    )
    return made


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_at: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    after = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].id
        session.expunge_all()


def verify(session: Session) -> ChainReport:
    """Walk the chain in id order; name the first event whose link or content does not hold."""
    expected_prev, expected_id, checked = GENESIS, 1, 0
    for event in _events(session):
        if event.id != expected_id:
            return ChainReport(checked, expected_id, f"event {expected_id} is missing")
        if event.prev_hash != expected_prev:
            return ChainReport(checked, event.id, "prev_hash does not match the previous event")
        if _digest(event.prev_hash, event) != event.hash:
            return ChainReport(checked, event.id, "the content does not match its hash")
        expected_prev, expected_id, checked = event.hash, event.id + 1, checked + 1
    return ChainReport(checked, None, None)
