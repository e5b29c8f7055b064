"""Database plumbing: the declarative Base, engines for SQLite and PostgreSQL, request sessions."""

from __future__ import annotations

import os
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar, cast

import orjson
from fastapi import Depends, Request
from sqlalchemy import (
    JSON,
    URL,
    DateTime,
    Engine,
    MetaData,
    Table,
    create_engine,
    event,
    exc,
    make_url,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator
from starlette.concurrency import run_in_threadpool

from credit_hub import sqlite_checkpoint, sqlite_search, sqlite_writers
from credit_hub.config import Settings
from credit_hub.errors import ServiceUnavailable

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

# JSON on SQLite, JSONB on PostgreSQL.
JsonDoc = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return (
            value.astimezone(UTC)
            if dialect.name == "postgresql"
            else value.astimezone(UTC).replace(tzinfo=None)
        )

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JsonDoc}


def table(model: type[Base]) -> Table:
    """A mapped class's Table, typed as one (for bulk Core statements)."""
    return cast(Table, model.__table__)


def utcnow() -> datetime:
    return datetime.now(UTC)


_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 80) - 1)


_MS_BITS = (1 << 48) - 1
_new_object = object.__new__
_set_slot = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown
_ENTROPY_BYTES = 10 * 1024  # the random part of 1,024 ids


class _Entropy(threading.local):
    """Random bytes drawn ahead, per thread (so no two threads share any)."""

    pool = b""
    at = 0


_entropy = _Entropy()


def _fresh_entropy() -> None:
    # A forked child must not hand out the ids its parent's pool holds next.
    global _entropy
    _entropy = _Entropy()


os.register_at_fork(after_in_child=_fresh_entropy)


def new_id() -> uuid.UUID:
    """Time-ordered ids (UUIDv7 layout): B-tree inserts stay at the right edge as tables grow."""
    ms = time.time_ns() // 1_000_000
    # os.urandom() per id released the GIL thousands of times a batch, and every release can
    # cost a switch interval (5 ms) when another thread of the worker is running: one draw per
    # 1,024 ids instead.
    local = _entropy
    at = local.at
    if at == len(local.pool):
        local.pool, at = os.urandom(_ENTROPY_BYTES), 0
    local.at = at + 10
    rand = int.from_bytes(local.pool[at : at + 10], "big") & _RANDOM_BITS
    # What UUID(int=...) builds, without its argument checks (a batch makes thousands of ids;
    # the value is in range by construction).
    value = _new_object(uuid.UUID)
    _set_slot(value, "int", (ms & _MS_BITS) << 80 | rand | _VERSION_7 | _VARIANT)
    _set_slot(value, "is_safe", _UNKNOWN)
    return value


def new_ids(count: int) -> list[uuid.UUID]:
    """`count` ids as new_id() makes them, for a batch: one clock read and one draw of random
    bytes for all (a third of the time of `count` calls to new_id())."""
    high = (time.time_ns() // 1_000_000 & _MS_BITS) << 80 | _VERSION_7 | _VARIANT
    entropy = os.urandom(10 * count)
    ids = []
    for at in range(0, 10 * count, 10):
        value = _new_object(uuid.UUID)
        _set_slot(value, "int", high | int.from_bytes(entropy[at : at + 10], "big") & _RANDOM_BITS)
        _set_slot(value, "is_safe", _UNKNOWN)
        ids.append(value)
    return ids


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling is broken).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 4 MiB per connection. Each connection's cache is emptied whenever another one commits
    # (WAL), so it rarely stays full; its peaks come from writes, which touch more pages as the
    # store grows, and set glibc's heap high-water mark: with 16 MiB a soak's worker grew by
    # 10 % in 3 minutes after warm-up, with 4 MiB by 2-4 % at the same throughput.
    cursor.execute("PRAGMA cache_size=-4096")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading a read lock.
    # Read-only work asks for `execution_options(read_only=True)` and never waits for writers.
    read_only = connection.get_execution_options().get("read_only", False)
    if sqlite_writers.begin(connection.connection.driver_connection, read_only):
        return  # a queued writer: BEGIN IMMEDIATE issued on its turn
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _json_dumps(value: Any) -> str:
    # orjson: about ten times json.dumps on record payloads, the bulk of every insert.
    return orjson.dumps(value).decode()


def make_engine(settings: Settings, **overrides: Any) -> Engine:
    url = settings.database_url
    overrides = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads} | overrides
    if url.startswith("sqlite"):
        # SQLite writers queue on one lock anyway: a few connections (each with its own page
        # cache, at most 4 MiB) serve a worker as well as many, and keep its memory bounded. But
        # enough of them to stay pooled: each concurrent read and the audit append it leads
        # hold one, and with 4 the overflow ones were closed and reopened (pragmas, attaching
        # the name index) under 8 readers: 1,443-1,612 against 1,860-2,062 reads/s with 8.
        sqlite_options: dict[str, Any] = {"pool_size": 8, "max_overflow": 4}
        if ":memory:" in url:
            sqlite_options = {}
        # sqlite3 keeps each connection's last N prepared statements (default 128). Expanding
        # `IN (?, ?, ...)` lists make a new statement text per list length, ~100 KB each for
        # 500 values: 128 of them on each pooled connection grew a soak's worker by 20+ MB over
        # 10 minutes. 32 still holds every hot statement.
        connect_args: dict[str, Any] = {"check_same_thread": False, "cached_statements": 32}
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            queue = sqlite_writers.queue_for(database, timeout=30)
            connect_args["factory"] = sqlite_writers.connection_factory(queue)
            connect_args["uri"] = True  # attaches the name index read-only; a path stays a path
        engine = create_engine(url, connect_args=connect_args, **(sqlite_options | overrides))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        if database and "factory" in connect_args:  # a file: checkpoints off the commit path
            sqlite_checkpoint.attach(engine, database)
            sqlite_search.attach(engine, database)
        return engine
    options: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.pool_size,
        # No pre-ping (a round trip per checkout, a sixth of a profile read's): a connection
        # the server closed is found by its socket instead (`_closed_by_server`).
        "pool_pre_ping": False,
        # psycopg's own executemany (one prepared statement, pipelined) beats SQLAlchemy's
        # multi-VALUES batches here: psycopg re-parses every long multi-row statement.
        "use_insertmanyvalues": False,
    }
    engine = create_engine(_with_connect_timeout(url), **(options | overrides))
    event.listen(engine, "checkout", _closed_by_server)
    return engine


# Seconds a new PostgreSQL connection may take (libpq waits for the OS otherwise: minutes,
# for a host that drops packets); a `connect_timeout` in the URL takes precedence.
CONNECT_TIMEOUT_SECONDS = 10


def _with_connect_timeout(url: str) -> URL:
    parsed = make_url(url)
    if "connect_timeout" in parsed.query:
        return parsed
    return parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_SECONDS)})


def _closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled PostgreSQL connection whose server side is gone, without a round trip.

    An idle connection's socket has nothing to read unless the server wrote to it: when a
    backend ends (a restart, `pg_terminate_backend`, an idle timeout) it sends its last error
    and closes the socket, which then polls readable. The pool then reconnects this one (and
    finds each other one the same way on its checkout). Anything else unsolicited (we use no
    LISTEN) costs a reconnect, never an error.
    """
    if dbapi_connection.closed:
        raise exc.DisconnectionError("the connection is closed")
    if written_unasked(dbapi_connection.fileno()):
        raise exc.DisconnectionError("the server closed the connection, or wrote unasked")


def written_unasked(socket_fd: int) -> bool:
    """Whether an idle connection's socket has something to read (without blocking): the
    server ended it, or wrote what nobody asked for (see `_closed_by_server`)."""
    poller = select.poll()
    poller.register(socket_fd, select.POLLIN)
    return bool(poller.poll(0))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


T = TypeVar("T")

# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back as
# one side of a conflict and may simply be run again.
_RETRYABLE_STATES = frozenset({"40P01", "40001"})


def retryable(error: Exception) -> bool:
    """Whether a database error (SQLAlchemy's, or the driver's own from a raw COPY) is one."""
    cause = error.orig if isinstance(error, exc.DBAPIError) else error
    return getattr(cause, "sqlstate", None) in _RETRYABLE_STATES


class Database:
    """Transactions on the app's engine. Handlers that do CPU work before writing (a batch
    push validates first) open their write transaction late, through `write()`, so that on
    SQLite the write lock is held for the inserts only."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    @property
    def engine(self) -> Engine:
        engine: Engine = self.factory.kw["bind"]
        return engine

    @property
    def one_writer(self) -> bool:
        """True on SQLite, where a write transaction holds the only write lock from its start."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.factory.begin() as session:
            yield session

    def write_retrying(self, work: Callable[[Session], T], *, attempts: int = 3) -> T:
        """`work(session)` in one write transaction, run again from the start in a new one
        when PostgreSQL rolled it back as one side of a deadlock (at most `attempts` runs;
        then 503 with Retry-After, nothing written). Writers that take their row locks in one
        order never get there; this covers the rare cycles across tables (subjects, names)
        that no single order rules out."""
        attempt = 1
        while True:
            try:
                with self.write() as session:
                    return work(session)
            except Exception as error:
                if not retryable(error):
                    raise
                if attempt >= attempts:
                    raise ServiceUnavailable(
                        f"The write conflicted with concurrent writes {attempts} times and "
                        "nothing was stored; send it again.",
                        headers={"Retry-After": "1"},
                        retry_after_seconds=1,
                    ) from error
                attempt += 1

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction that never waits for SQLite's write lock."""
        with self.factory() as session:
            session.connection(execution_options={"read_only": True})
            yield session
            session.rollback()

    async def read_in_thread(self, work: Callable[[Session], T]) -> T:
        """`work` in a read-only transaction (`read()`), in one hop to the thread pool, for an
        async handler. A sync handler with `ReadSessionDep` pays three hops (the dependency's
        enter and exit in the pool, then the handler): on a slow 2-core machine each cost ~200
        µs of CPU, and a search took ~11% less CPU in one (median of 11 runs)."""

        def run() -> T:
            with self.read() as session:
                return work(session)

        return await run_in_threadpool(run)


async def get_db(request: Request) -> Database:
    # async: a plain attribute read needs no thread-pool hop
    db: Database = request.app.state.db
    return db


DbDep = Annotated[Database, Depends(get_db)]


def database_of(request: Request) -> Database:
    """What `DbDep` answers, for a route that FastAPI does not solve (the profile read's):
    the app's Database, or what the app's `dependency_overrides` put in place of `get_db`
    (as the tests do; an override taking no parameters)."""
    override = request.app.dependency_overrides.get(get_db)
    db: Database = request.app.state.db if override is None else override()
    return db


def get_session(db: DbDep) -> Iterator[Session]:
    """One transaction per request: commit when the handler returns, roll back if it raises."""
    with db.write() as session:
        yield session


# scope="function" commits before the response is sent: a failed COMMIT is a 500, never a 201.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_read_session(db: DbDep) -> Iterator[Session]:
    """A read-only transaction for a handler that writes nothing: on SQLite it reads a snapshot
    and never queues for the write lock behind pushes (a write transaction holds it from its
    first statement)."""
    with db.read() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
