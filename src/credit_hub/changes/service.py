"""The change feed: `emit()` appends changes in the writer's transaction (and queues webhook
deliveries beside them); `read_feed()` pages through them for one agency, masked for it.

Positions are gap-free and in commit order. On PostgreSQL a sequence would not do: values are
handed out at insert time and committed in any order, so a reader could pass position 7 while 6
is still uncommitted and never see it. Appends therefore take the transaction-level advisory
lock the audit chain uses (one lock, so the two can never deadlock each other), read the last
position and write the next ones; the lock is held until the commit, so a position is visible
only after every smaller one. On SQLite every writer holds the database write lock anyway.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import Row, and_, func, or_, select, text
from sqlalchemy.orm import Session, aliased

from credit_hub import bulk
from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.audit.service import _LOCK_KEY as APPEND_LOCK_KEY
from credit_hub.changes.models import ChangeEvent, Watch
from credit_hub.db import new_id, table
from credit_hub.errors import RequestInvalid
from credit_hub.keyring import Keyring
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.subjects.models import Subject

CHUNK = 500
CURSOR_PREFIX = b"cf1:"


class ChangeKind(StrEnum):
    CREATED = "created"
    CORRECTED = "corrected"
    WITHDRAWN = "withdrawn"
    REPAIRED = "repaired"
    PUBLICATION_ENDED = "publication_ended"
    OBJECTION_OPENED = "objection_opened"
    OBJECTION_CLOSED = "objection_closed"


# Changes that end what an agency may show: they carry no record content, only the fact.
TOMBSTONES = frozenset({ChangeKind.WITHDRAWN, ChangeKind.REPAIRED, ChangeKind.PUBLICATION_ENDED})


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    record_id: uuid.UUID
    version: int
    subject_id: uuid.UUID
    standard: str
    department_id: uuid.UUID
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)  # never personal data
    subject_key: str | None = None  # the subject's USCC when the caller knows it already
    event_id: uuid.UUID | None = None  # drawn ahead by a caller that can, outside its lock

    @classmethod
    def about(cls, record: Any, kind: ChangeKind, at: datetime, **detail: Any) -> Change:
        """The change `kind` to a record (an ORM Record or a row with the same columns)."""
        return cls(
            kind=kind,
            record_id=record.id,
            version=record.version,
            subject_id=record.subject_id,
            standard=record.standard,
            department_id=record.department_id,
            at=at,
            detail=detail,
        )


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _subject_keys(session: Session, subject_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    keys: dict[uuid.UUID, str] = {}
    for chunk in _chunks(sorted(set(subject_ids))):
        for subject_id, uscc in session.execute(
            select(Subject.id, Subject.uscc).where(Subject.id.in_(chunk))
        ):
            keys[subject_id] = uscc or str(subject_id)
    return keys


def emit(session: Session, changes: list[Change]) -> None:
    """Append changes to the feed, and one outbox row per matching webhook subscription, in the
    caller's transaction: the feed and the outbox can never disagree with the records."""
    if not changes:
        return
    from credit_hub.changes import webhooks  # webhooks renders events with this module

    keys = _subject_keys(session, (c.subject_id for c in changes if c.subject_key is None))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
    last = session.scalar(
        select(ChangeEvent.position).order_by(ChangeEvent.position.desc()).limit(1)
    )
    start = (last or 0) + 1
    rows = [
        {
            "position": start + n,
            "event_id": new_id() if c.event_id is None else c.event_id,
            "kind": str(c.kind),
            "record_id": c.record_id,
            "version": c.version,
            "subject_id": c.subject_id,
            "subject_key": c.subject_key or keys.get(c.subject_id, str(c.subject_id)),
            "standard": c.standard,
            "department_id": c.department_id,
            "at": c.at,
            "detail": c.detail,
        }
        for n, c in enumerate(changes)
    ]
    bulk.insert_rows(session, table(ChangeEvent), rows)
    webhooks.enqueue(session, rows)


# -- cursors ------------------------------------------------------------------------------------


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(CURSOR_PREFIX + str(position).encode()).decode().rstrip("=")


def _cursor_problem(code: str, message: str) -> RequestInvalid:
    return RequestInvalid(
        message, errors=[{"parameter": "after", "code": code, "message": message}]
    )


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    digits = raw.removeprefix(CURSOR_PREFIX)
    if not raw.startswith(CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise _cursor_problem("cursor.invalid", "The cursor is not one this feed handed out.")
    return int(digits)


# -- reading ------------------------------------------------------------------------------------


_previous = aliased(RecordVersion)


def _select() -> Any:
    return (
        select(
            ChangeEvent.position,
            ChangeEvent.event_id,
            ChangeEvent.kind,
            ChangeEvent.at,
            ChangeEvent.detail,
            ChangeEvent.record_id,
            ChangeEvent.version,
            ChangeEvent.standard,
            ChangeEvent.department_id,
            Record.source_id,
            Record.status,
            Record.subject_id,
            Subject.kind.label("subject_kind"),
            Subject.uscc,
            RecordVersion.data,
            RecordVersion.personal_enc,
            RecordVersion.publish_from,
            RecordVersion.publish_until,
            _previous.data.label("previous_data"),
        )
        .join(Record, Record.id == ChangeEvent.record_id)
        .join(Subject, Subject.id == Record.subject_id)
        .outerjoin(
            RecordVersion,
            and_(
                RecordVersion.record_id == ChangeEvent.record_id,
                RecordVersion.version == ChangeEvent.version,
            ),
        )
        .outerjoin(
            _previous,
            and_(
                _previous.record_id == ChangeEvent.record_id,
                _previous.version == ChangeEvent.version - 1,
                ChangeEvent.kind == ChangeKind.CORRECTED,
            ),
        )
    )


def _shareable(today: date) -> list[Any]:
    """Never shared, checked on the records' state when read (as a profile does): a repaired
    record (except the repair itself, as a tombstone), a record withheld because it concerns a
    minor, and a purged one."""
    del today
    return [
        or_(Record.status != RecordStatus.REPAIRED, ChangeEvent.kind == ChangeKind.REPAIRED),
        Record.withheld_reason.is_(None),
        Record.purged_at.is_(None),
    ]


def rows_at(session: Session, positions: Sequence[int], today: date) -> dict[int, Row[Any]]:
    """The shareable changes at these positions (for webhook deliveries)."""
    found: dict[int, Row[Any]] = {}
    for chunk in _chunks(sorted(set(positions))):
        stmt = _select().where(ChangeEvent.position.in_(chunk), *_shareable(today))
        found.update((row.position, row) for row in session.execute(stmt))
    return found


def _content(row: Row[Any], client: Principal, keyring: Keyring, today: date) -> Any:
    """The record's content at the changed version, as a profile would show it, or None."""
    if row.kind in TOMBSTONES or row.data is None:
        return None
    if not client.has_scope(Scope.UNPUBLISHED) and (
        row.status not in (RecordStatus.ACTIVE, RecordStatus.EXPIRED)
        or row.publish_from > today
        or (row.publish_until is not None and row.publish_until < today)
    ):
        return None
    data: dict[str, Any] = row.data
    if row.personal_enc is not None and client.has_scope(Scope.PERSONAL_DATA):
        clear = keyring.decrypt(row.personal_enc)
        if clear is not None:
            data = data | orjson.loads(clear)
    return data


def render(row: Row[Any], client: Principal, keyring: Keyring, today: date) -> dict[str, Any]:
    """One change as the feed and the webhooks show it to this agency."""
    data = _content(row, client, keyring, today)
    changed = None
    if data is not None and row.previous_data is not None:
        before, after = row.previous_data, row.data
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return {
        "id": str(row.event_id),
        "cursor": encode_cursor(row.position),
        "kind": row.kind,
        "at": row.at.isoformat(),
        "subject": {
            "key": row.uscc or str(row.subject_id),
            "id": str(row.subject_id),
            "kind": row.subject_kind,
            "uscc": row.uscc,
        },
        "record": {
            "id": str(row.record_id),
            "standard": row.standard,
            "source_id": row.source_id,
            "version": row.version,
            "department_id": str(row.department_id),
            "status": row.status,
        },
        "detail": row.detail or {},
        "data": data,
        "changed_fields": changed,
    }


def _standards(client: Principal, standard: str | None) -> list[str]:
    if standard is None:
        return sorted(client.standards)
    if not client.may_use(standard):
        message = f"Not registered to read {standard!r}."
        raise RequestInvalid(
            message,
            errors=[{"parameter": "standard", "code": "standards.not_allowed", "message": message}],
        )
    return [standard]


def read_feed(
    session: Session,
    client: Principal,
    keyring: Keyring,
    *,
    after: str | None,
    limit: int,
    standard: str | None,
    watched: bool,
    today: date,
) -> dict[str, Any]:
    """One page of the agency's feed after a cursor (from the start without one, from the
    head with `now`)."""
    standards = _standards(client, standard)
    # The head first: every position up to it is committed, so a page never skips one.
    head = session.scalar(select(func.max(ChangeEvent.position))) or 0
    if after is None:
        start = 0
    elif after == "now":
        start = head
    else:
        start = decode_cursor(after)
        if start > head:
            raise _cursor_problem("cursor.unknown", "The cursor is ahead of this feed.")
        oldest = session.scalar(select(func.min(ChangeEvent.position))) or 1
        if start < oldest - 1:
            raise _cursor_problem(
                "cursor.expired", "The changes after this cursor were pruned; start again."
            )
    conditions = [
        ChangeEvent.position > start,
        ChangeEvent.position <= head,
        ChangeEvent.standard.in_(standards),
        *_shareable(today),
    ]
    if watched:
        conditions.append(
            ChangeEvent.subject_key.in_(
                select(Watch.subject_key).where(Watch.client_id == client.id)
            )
        )
    rows = session.execute(
        _select().where(*conditions).order_by(ChangeEvent.position).limit(limit)
    ).all()
    full = len(rows) == limit
    return {
        "changes": [render(row, client, keyring, today) for row in rows],
        "next_cursor": encode_cursor(rows[-1].position if full else head),
        "has_more": full,
    }


def prune(session: Session, *, before: datetime) -> int:
    """Drop changes older than `before` (their cursors then answer 422 cursor.expired)."""
    from credit_hub.changes.models import Delivery

    last = session.scalar(select(func.max(ChangeEvent.position)).where(ChangeEvent.at < before))
    if last is None:
        return 0
    session.execute(table(Delivery).delete().where(Delivery.position <= last))
    result = session.execute(table(ChangeEvent).delete().where(ChangeEvent.position <= last))
    return int(getattr(result, "rowcount", 0) or 0)
