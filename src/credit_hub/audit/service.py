"""Writing and verifying the audit chain.

Each event stores `prev_hash` (the hash of the event before it) and its own `hash`, a SHA-256
over `prev_hash` and its canonical content. Appends are serialized: on PostgreSQL by a
transaction-level advisory lock taken just before the insert (so it is held only until the
commit that follows), on SQLite by the write lock every writing transaction holds anyway.
The server's appends on PostgreSQL are one statement, the migration's `audit_append`, which
chains the rows inside the database: it hashes the content as `_halves` splits it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections import deque, namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from sqlalchemy import Connection, Engine, bindparam, insert, select, text
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit.models import AuditEvent
from credit_hub.db import Database, table, utcnow
from credit_hub.fastsql import Prepared
from credit_hub.log import current_request_id
from credit_hub.pg_loop import LoopConnections

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


_SORTED = orjson.OPT_SORT_KEYS
_CONTENT_BUT_ID = tuple(name for name in _CONTENT if name != "id")
# In the canonical content, "payload" is the key after "id" (keys sorted): the first bytes
# `,"payload":` are where the id goes, as a quote inside a string value is always escaped.
_AFTER_ID = b',"payload":'


def _halves(event: Mapping[str, Any]) -> tuple[str, str]:
    """An event's canonical content (as `_digest` hashes it) as the text before its id and
    the text after it: the content is head + str(id) + tail, which PostgreSQL's
    `audit_append` hashes once it knows the id."""
    body = orjson.dumps({name: _text(event[name]) for name in _CONTENT_BUT_ID}, option=_SORTED)
    split = body.index(_AFTER_ID)
    return body[:split].decode() + ',"id":', body[split:].decode()


def _digest(prev_hash: str, event: Any) -> str:
    """The hash of an event (a row, a mapping or an AuditEvent) chained after `prev_hash`:
    SHA-256 over `prev_hash` and the event's canonical content (JSON, keys sorted, compact)."""
    get = event.get if isinstance(event, Mapping) else lambda name: getattr(event, name)
    content = {name: _text(get(name)) for name in _CONTENT}
    body = orjson.dumps(content, option=_SORTED)
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
    statements on the session's connection; the server's reads append through an Appender,
    which on PostgreSQL does the same in one statement, `audit_append`)."""
    return _append(session.connection(), events)


def _append(connection: Connection, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`record_many` on a connection in a transaction (a Session's, or the Appender's own)."""
    if not events:
        return []
    if connection.dialect.name == "postgresql":
        _LOCK.rows(connection)
    made = _chained(_LAST.first(connection), events)
    if len(made) == 1:
        _APPEND_ONE.rows(connection, **made[0])
    else:
        connection.execute(insert(_AUDIT), made)
    return made


def _chained(last: Any, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `events` chained after `last` (the chain's last (id, hash), or None)."""
    next_id, prev_hash = ((last.id + 1), last.hash) if last else (1, GENESIS)
    made = _unchained(events)
    for event in made:
        event["id"], event["prev_hash"] = next_id, prev_hash
        event["hash"] = _digest(prev_hash, event)
        next_id, prev_hash = next_id + 1, event["hash"]
    return made


def _unchained(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `events` without their place in the chain (id, prev_hash, hash)."""
    request_id = current_request_id()
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for spec in events:  # events queued by an Appender carry their request's id
        actor: Principal | None = spec.get("actor")
        rows.append(
            {
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
            }
        )
    return rows


def _append_document(events: Sequence[dict[str, Any]]) -> str:
    """What PostgreSQL's `audit_append` takes: the events as one JSON array of the two parts
    of their canonical content either side of the id each will get (`_halves`). The content
    is the row: the function stores what it hashed."""
    return orjson.dumps([_halves(row) for row in _unchained(events)]).decode()


# One statement: the chain lock, the last event, the batch chained and inserted (the function
# is the migration's f3a9d2c7b814). In autocommit it is a transaction of its own, and the
# lock is held for it and its commit only: never while a worker's turn comes round between
# two round trips (docs/performance.md).
_APPEND_CALL = "SELECT audit_append(%s::json)"


def _append_in_one_statement(engine: Engine, events: Sequence[dict[str, Any]]) -> None:
    """`record_many` in a transaction of its own on PostgreSQL: one statement in autocommit
    (`_APPEND_CALL`), on a pooled connection."""
    fairy = engine.raw_connection()
    try:
        connection: Any = fairy.driver_connection
        connection.autocommit = True  # the statement is its own transaction
        try:
            connection.execute(_APPEND_CALL, (_append_document(events),))
        finally:
            try:
                connection.autocommit = False
            except psycopg.Error:
                fairy.invalidate()  # never back into the pool in autocommit
    finally:
        fairy.close()  # back to the pool


async def _append_on_loop(
    connection: psycopg.AsyncConnection[Any], events: Sequence[dict[str, Any]]
) -> None:
    """`_append_in_one_statement` on a connection of the event loop's (`pg_loop`), which is
    in autocommit."""
    await connection.execute(_APPEND_CALL, (_append_document(events),))


_Head = namedtuple("_Head", ["id", "hash"])


def read_event(**spec: Any) -> dict[str, Any]:
    """An event to append later (by an Appender): its time and request id are taken now."""
    return spec | {"at": utcnow(), "request_id": current_request_id()}


class Appender:
    """Appends the audit events of concurrent reads in batches (group commit).

    A read hands its events over and returns once they are committed. A read that finds no
    append in progress appends, in its own thread, every event waiting (its own first): one
    chain lock, one insert, one commit. Reads arriving meanwhile wait; when the append ends,
    the next of them whose events are still waiting does the same for all that queued up. On
    PostgreSQL the chain lock is held until the commit, so appending one read at a time caps
    a server at one read per lock-and-commit cycle whatever its cores; on SQLite each append
    is a write transaction queued for the database's one write lock. No thread of its own:
    a read alone on a server appends without a hand-over to another thread and back.
    """

    MAX_BATCH = 500
    JOIN_SECONDS = 0.002

    def __init__(
        self,
        db: Database,
        *,
        plain_connection: bool = False,
        loop_connections: LoopConnections | None = None,
    ) -> None:
        self.db = db
        # PostgreSQL: the events of reads made on the event loop are appended on it too.
        self._loop_connections = loop_connections
        self._loop_leader: asyncio.Task[None] | None = None
        self._reads_on_loop = 0  # reads on the loop whose events are still to come
        self._joined: asyncio.Future[None] | None = None  # done when they have all come
        # plain_connection (the server): on PostgreSQL, batches are appended in one statement
        # (`audit_append`); on SQLite in a transaction on a plain Connection (a Session's set-up and
        # tear-down cost as much as the statements). Otherwise in a transaction of `db.write()`.
        self._engine = db.engine if plain_connection else None
        self._changed = threading.Condition()
        self._waiting: deque[tuple[list[dict[str, Any]], Future[None]]] = deque()
        self._appending = False
        self._from_loop: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._loop_connection: Connection | None = None
        self._loop_writer: Any = None  # SQLite: the loop's connection for appends
        self._appends_on_loop = True  # until the pool proves not to be a queued SQLite file

    def append(self, events: list[dict[str, Any]], timeout: float = 60) -> None:
        """Append `events` (from `read_event`); returns once committed, raises if not."""
        if not events:
            return
        done: Future[None] = Future()
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiting.append((events, done))
            while not done.done():
                if not self._appending:
                    self._lead()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the audit append did not finish in time")
                self._changed.wait(left)
        done.result()  # the append's error, if it failed

    def read_on_loop(self, read: Callable[[Connection], Result]) -> Result:
        """A single-statement read in the calling thread, the event loop's: SQLite's (WAL)
        readers never wait for a writer, and a thread-pool hop cost as much CPU as the read.
        It runs on a connection kept for the loop, so that the loop never waits for the pool
        (threads queued for the write lock can hold all of it), and in autocommit."""
        connection = self._loop_connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self.db.engine.connect().execution_options(read_only=True)
            self._loop_connection = connection
        try:
            return read(connection)
        finally:
            if connection.in_transaction():  # begun by SQLAlchemy (statements watched)
                connection.rollback()

    async def append_from_loop(self, events: list[dict[str, Any]]) -> None:
        """`append` for a read made on the event loop itself: the events of every read that
        finishes in the same turn of the loop are appended together, on the loop if SQLite's
        write lock is free (`_append_if_free`), else by a worker thread; returns once they
        are committed. For the one loop of a server process (its reads share one list)."""
        await self.hand_over_from_loop(events)

    def hand_over_from_loop(self, events: list[dict[str, Any]]) -> asyncio.Future[None]:
        """`append_from_loop` without waiting: the future is done once the events are
        committed (for a read that hands over inside `reading_on_loop`)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not events:
            done.set_result(None)
            return done
        self._from_loop.append((events, done))
        if self._loop_connections is not None:
            if self._loop_leader is None:  # appends from the loop until none are waiting
                self._loop_leader = loop.create_task(self._lead_on_loop(self._loop_connections))
        elif len(self._from_loop) == 1:  # the first since the last hand-over: hand over soon
            loop.call_soon(self._hand_over, loop)
        return done

    @contextmanager
    def reading_on_loop(self) -> Iterator[None]:
        """Around a read on the event loop that will hand its events over before the block
        ends: on PostgreSQL an append about to start waits (up to JOIN_SECONDS) for the reads
        in flight, so that their events go in the same transaction."""
        self._reads_on_loop += 1
        try:
            yield
        finally:
            self._reads_on_loop -= 1
            joined = self._joined
            if self._reads_on_loop == 0 and joined is not None and not joined.done():
                joined.set_result(None)

    async def _lead_on_loop(self, connections: LoopConnections) -> None:
        """PostgreSQL: append what reads on the loop left waiting, batch after batch, on a
        connection of the loop's; the reads of one batch resume once it is committed. A batch
        first waits for the reads still in flight (at most JOIN_SECONDS): with one read at a
        time there are none, and with several, one transaction serves them all."""
        try:
            while self._from_loop:
                batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
                try:
                    await self._join_reads_in_flight()
                    batch, self._from_loop = self._from_loop, []
                    events = [event for events, _ in batch for event in events]
                    async with connections.connection() as connection:
                        await _append_on_loop(connection, events)
                except Exception as error:  # this batch's reads fail; the next batch goes on
                    _settle(batch, error)
                except BaseException as error:  # cancelled: no later batch is appended either
                    waiting, self._from_loop = self._from_loop, []
                    _settle(batch + waiting, error)
                    raise
                else:
                    _settle(batch, None)
        finally:
            self._loop_leader = None

    async def _join_reads_in_flight(self) -> None:
        if not self._reads_on_loop:
            return
        self._joined = asyncio.get_running_loop().create_future()
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._joined, self.JOIN_SECONDS)
        finally:
            self._joined = None

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._from_loop = self._from_loop, []
        events = [event for events, _ in batch for event in events]
        try:
            done_here = self._append_if_free(events)
        except Exception as error:  # this batch's reads fail
            _settle(batch, error)
            return
        if done_here:
            _settle(batch, None)
            return
        try:
            appended = loop.run_in_executor(None, self.append, events)
        except RuntimeError as error:  # the loop's executor has shut down: nowhere to append
            _settle(batch, error)
            return
        appended.add_done_callback(lambda done: _settle(batch, _failure(done)))

    def _append_if_free(self, events: list[dict[str, Any]]) -> bool:
        """SQLite, on the event loop: append `events` here if the write lock is free this
        instant (the usual case: an append holds it for ~0.1 ms), else False, nothing done.
        Handing a batch to a worker thread cost more of the loop's CPU than the append (the
        wake-up of the thread and the GIL passed back and forth: docs/performance.md); a
        commit waits for no disk (WAL, `synchronous=NORMAL`, checkpoints in a thread)."""
        writer = self._writer_on_loop()
        if writer is None or not writer.try_begin_write():
            return False
        try:
            dialect = self.db.engine.dialect
            last = _LAST.compiled(dialect)
            cursor = writer.cursor()
            cursor.execute(last.sql, last.parameters({}))
            head = cursor.fetchone()
            made = _chained(_Head._make(head) if head else None, events)
            append = _APPEND_ONE.compiled(dialect)
            cursor.executemany(append.sql, [append.parameters(event) for event in made])
            writer.commit()
        except BaseException:
            fairy, self._loop_writer = self._loop_writer, None
            try:
                writer.rollback()  # and the turn to write goes to the next in the queue
            finally:
                fairy.invalidate()  # a fresh connection for the next append here
            raise
        return True

    def _writer_on_loop(self) -> Any:
        """The event loop's own SQLite connection for appends (None where appends on the loop
        do not apply): from the pool, kept, with `busy_timeout` 0 so that a writer outside the
        writers' queue makes it give up instead of wait."""
        engine = self._engine
        if not self._appends_on_loop or engine is None or engine.dialect.name != "sqlite":
            return None
        fairy = self._loop_writer
        if fairy is None or not fairy.is_valid:
            fairy = engine.raw_connection()
            driver: Any = fairy.driver_connection
            if not hasattr(driver, "try_begin_write"):  # not a file in the writers' queue
                self._appends_on_loop = False
                fairy.close()
                return None
            driver.execute("PRAGMA busy_timeout=0")
            self._loop_writer = fairy
        return fairy.driver_connection

    def close(self) -> None:
        """Nothing to stop (appends run in the threads of the reads waiting for them); the
        loop's connections go back to the pool (the appending one, whose `busy_timeout` is
        its own, closed)."""
        connection, self._loop_connection = self._loop_connection, None
        if connection is not None:
            connection.close()
        writer, self._loop_writer = self._loop_writer, None
        if writer is not None:
            writer.invalidate()

    def _lead(self) -> None:
        """Append what is waiting (called holding `_changed`, released while appending)."""
        batch: list[tuple[list[dict[str, Any]], Future[None]]] = []
        size = 0
        while self._waiting and size < self.MAX_BATCH:
            batch.append(self._waiting.popleft())
            size += len(batch[-1][0])
        self._appending = True
        self._changed.release()
        try:
            self._write(batch)
        finally:
            self._changed.acquire()
            self._appending = False
            self._changed.notify_all()

    def _write(self, batch: list[tuple[list[dict[str, Any]], Future[None]]]) -> None:
        events = [event for events, _ in batch for event in events]
        engine = self._engine
        try:
            if engine is None:
                with self.db.write() as session:
                    record_many(session, events)
            elif engine.dialect.name == "postgresql":
                _append_in_one_statement(engine, events)
            else:  # BEGIN IMMEDIATE on its turn in the writers' queue: `db.make_engine`
                with engine.begin() as connection:
                    _append(connection, events)
        except BaseException as exc:  # every read in the batch fails: no answer without its event
            for _, done in batch:
                done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, done in batch:
                done.set_result(None)


def _failure(appended: asyncio.Future[None]) -> BaseException | None:
    """Why an append did not commit (None if it did); cancelled counts as not committed."""
    if appended.cancelled():
        return asyncio.CancelledError()
    return appended.exception()


def _settle(
    batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]], error: BaseException | None
) -> None:
    """Wake the reads of a hand-over: their events are committed, or `error` failed them."""
    for _, done in batch:
        if done.done():  # the read was cancelled meanwhile
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


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


def audited_statement(
    db: Database,
    read: Callable[[Connection], Result],
    events: Callable[[Result], list[dict[str, Any]]],
    appender: Appender | None = None,
) -> Result:
    """`audited_read` for a read of a single statement, which sees one snapshot by itself.

    With an `appender` it runs on a pooled connection in autocommit: no Session, no BEGIN and
    no ROLLBACK (on PostgreSQL two round trips fewer; a Session's set-up and tear-down were a
    tenth of a profile read's CPU). Without one, as `audited_read` runs it, on the Session's
    connection.
    """
    if appender is None:
        return audited_read(db, lambda session: read(session.connection()), events)
    with _autocommit(db) as connection:
        result = read(connection)
    appender.append(events(result))
    return result


@contextmanager
def _autocommit(db: Database) -> Iterator[Connection]:
    """A pooled connection whose statements commit one by one. SQLite's connections are in
    autocommit already (`isolation_level = None`; BEGIN is SQLAlchemy's, and statements run
    by `fastsql` never make it issue one); `read_only` in case one runs through SQLAlchemy."""
    engine = db.engine
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
        else:
            yield connection.execution_options(read_only=True)


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
