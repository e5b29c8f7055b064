"""Writing and verifying the audit chain.

Each event stores `prev_hash` (the hash of the event before it) and its own `hash`, a SHA-256
over `prev_hash` and its canonical content. Appends are serialized: on PostgreSQL by a
transaction-level advisory lock taken just before the insert (so it is held only until the
commit that follows), on SQLite by the write lock every writing transaction holds anyway.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit.models import AuditEvent
from credit_hub.db import Database, table, utcnow
from credit_hub.fastsql import Prepared
from credit_hub.log import current_request_id

Result = TypeVar("Result")

GENESIS = "0" * 64
_LOCK_KEY = 0x63726564  # "cred": the advisory lock that orders appends to the chain


_CONTENT = (
    "id",
    "at",
    "actor_id",
    "actor_kind",
    "action",
    "subject_id",
    "record_id",
    "submission_id",
    "purpose",
    "case_ref",
    "request_id",
    "result",
    "payload",
)
_AUDIT = table(AuditEvent)
_LAST = Prepared(select(_AUDIT.c.id, _AUDIT.c.hash).order_by(_AUDIT.c.id.desc()).limit(1))
_APPEND_ONE = Prepared(insert(_AUDIT).values({c.key: bindparam(c.key) for c in _AUDIT.c}))
_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_LOCK_KEY))


def _text(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _digest(prev_hash: str, event: Any) -> str:
    """The hash of an event (a row, a mapping or an AuditEvent) chained after `prev_hash`."""
    get = event.get if isinstance(event, Mapping) else lambda name: getattr(event, name)
    content = {name: _text(get(name)) for name in _CONTENT}
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
) -> dict[str, Any]:
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


def record_many(session: Session, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append events in order, chained, with one lock, one read and one insert (Core
    statements on the session's connection: this runs on every profile read)."""
    if not events:
        return []
    if session.get_bind().dialect.name == "postgresql":
        _LOCK.rows(session)
    last = _LAST.first(session)
    next_id, prev_hash = ((last.id + 1), last.hash) if last else (1, GENESIS)
    request_id = current_request_id()
    now = utcnow()
    made: list[dict[str, Any]] = []
    for spec in events:  # events queued by an Appender carry their request's id
        actor: Principal | None = spec.get("actor")
        event = {
            "id": next_id,
            "at": spec.get("at") or now,
            "actor_id": actor.id if actor else None,
            "actor_kind": spec.get("actor_kind") or (actor.kind if actor else "system"),
            "action": spec["action"],
            "subject_id": spec.get("subject_id"),
            "record_id": spec.get("record_id"),
            "submission_id": spec.get("submission_id"),
            "purpose": spec.get("purpose"),
            "case_ref": spec.get("case_ref"),
            "request_id": spec.get("request_id", request_id),
            "result": spec.get("result"),
            "payload": spec.get("payload"),
            "prev_hash": prev_hash,
        }
        event["hash"] = _digest(prev_hash, event)
        made.append(event)
        next_id, prev_hash = next_id + 1, event["hash"]
    if len(made) == 1:
        _APPEND_ONE.rows(session, **made[0])
    else:
        session.connection().execute(insert(_AUDIT), made)
    return made


def read_event(**spec: Any) -> dict[str, Any]:
    """An event to append later (by an Appender): its time and request id are taken now."""
    return spec | {"at": utcnow(), "request_id": current_request_id()}


class Appender:
    """Appends the audit events of concurrent reads in batches (group commit).

    A read hands its events over and waits until they are committed; one thread takes every
    event waiting and appends them with one chain lock, one insert and one commit. On
    PostgreSQL the chain lock is held from the append to the commit, so appending one read
    at a time caps a server at one read per lock-and-commit cycle whatever its cores; on SQLite
    each append is a write transaction queued for the database's one write lock.
    """

    MAX_BATCH = 500

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[tuple[list[dict[str, Any]], Future[None]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="audit-appender", daemon=True)
        self._thread.start()

    def append(self, events: list[dict[str, Any]], timeout: float = 60) -> None:
        """Append `events` (from `read_event`); returns once committed, raises if not."""
        if not events:
            return
        done: Future[None] = Future()
        self._queue.put((events, done))
        done.result(timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            size = len(item[0])
            while size < self.MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
                size += len(more[0])
            try:
                with self.db.write() as session:
                    record_many(session, [event for events, _ in batch for event in events])
            except Exception as exc:  # every waiting read fails: no answer without its event
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)


def audited_read(
    db: Database,
    read: Callable[[Session], Result],
    events: Callable[[Result], list[dict[str, Any]]],
    appender: Appender | None = None,
) -> Result:
    """Run `read`, then append its audit `events`, committed before the caller answers.

    With an `appender` (the server), the read runs in a read-only transaction and its events
    are appended with those of concurrent reads right after it. Without one (tests, tools), on
    PostgreSQL both run in one transaction; on SQLite, where a write transaction holds the
    only write lock from its first statement (holding it through the read would serialize
    every reader of every worker), the read runs in a snapshot and the events are appended in a
    short write transaction right after. Either way no answer leaves without its committed
    audit event, and a failed append fails the request.
    """
    if appender is not None:
        with db.read() as session:
            result = read(session)
        appender.append(events(result))
        return result
    if db.one_writer:
        with db.read() as session:
            result = read(session)
        with db.write() as session:
            record_many(session, events(result))
        return result
    with db.write() as session:
        result = read(session)
        record_many(session, events(result))
    return result


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
