"""Ids: time-ordered, unique across threads and forked workers. PostgreSQL connections: a
pooled connection whose server side ended is replaced on checkout, without a ping round trip
and without an error for the caller. A write rolled back as one side of a deadlock runs again."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind
from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import (
    CONNECT_TIMEOUT_SECONDS,
    Database,
    make_engine,
    make_sessionmaker,
    new_id,
    new_ids,
    retryable,
)
from credit_hub.errors import ServiceUnavailable
from tests import live

RANDOM_BITS = (1 << 62) - 1 | ((1 << 12) - 1) << 64  # rand_a (12 bits) and rand_b (62 bits)


def _random_part(value: uuid.UUID) -> int:
    return value.int & RANDOM_BITS


def test_new_ids_are_uuid7_time_ordered_and_unique() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_id() for _ in range(5_000)]  # several draws of the random pool
    after = time.time_ns() // 1_000_000

    assert len(set(made)) == len(made)
    assert len({_random_part(value) for value in made}) == len(made)
    assert {value.version for value in made} == {7}
    assert {value.variant for value in made} == {uuid.RFC_4122}
    stamps = [value.int >> 80 for value in made]
    assert stamps == sorted(stamps)
    assert before <= stamps[0]
    assert stamps[-1] <= after


def test_a_batch_of_ids_is_made_as_new_id_makes_one() -> None:
    before = time.time_ns() // 1_000_000
    made = new_ids(3_000)
    after = time.time_ns() // 1_000_000
    assert len(made) == 3_000
    assert new_ids(0) == []
    assert len({_random_part(value) for value in made}) == len(made)
    assert {value.version for value in made} == {7}
    assert {value.variant for value in made} == {uuid.RFC_4122}
    assert {type(value) for value in made} == {uuid.UUID}
    assert all(uuid.UUID(str(value)) == value and hash(value) == hash(value.int) for value in made)
    stamps = {value.int >> 80 for value in made}
    assert len(stamps) == 1
    assert before <= stamps.pop() <= after
    # Ids made after the batch sort after it (another millisecond), as new_id()'s would.
    time.sleep(0.002)
    assert max(made) < new_id()
    assert max(made) < new_ids(1)[0]


def test_threads_never_share_random_bits() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def draw(into: list[uuid.UUID]) -> None:
        into.extend(new_id() for _ in range(3_000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    parts = [_random_part(value) for into in made for value in into]
    assert len(parts) == 12_000
    assert len(set(parts)) == len(parts)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent's pool now holds the random bits of its next ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids' random bits, then leave at once
        try:
            os.write(write_end, b"".join(_random_part(new_id()).to_bytes(10) for _ in range(8)))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        sent = pipe.read()
    os.waitpid(pid, 0)
    child = {int.from_bytes(sent[at : at + 10]) for at in range(0, len(sent), 10)}
    parent = {_random_part(new_id()) for _ in range(8)}

    assert len(child) == 8
    assert not child & parent


@pytest.fixture
def pg_engine(settings: Settings) -> Iterator[Engine]:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL connections")
    engine = make_engine(settings, pool_size=2)
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(settings: Settings, pids: set[int]) -> None:
    """What a restart does to every backend: end it (the client's socket gets its FATAL)."""
    url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
            ).fetchone()
            if alive == (0,):
                return
            time.sleep(0.02)
    raise AssertionError("the backends did not end")


def test_postgresql_connections_give_up_connecting_after_a_timeout(tmp_path: Path) -> None:
    # Both the engine's connections and the event loop's (pg_loop) are made from the URL.
    def connect_args(url: str) -> dict[str, object]:
        settings = Settings(database_url=url, secrets_file=tmp_path / "secrets.json")
        engine = make_engine(settings)
        try:
            return dict(engine.dialect.create_connect_args(engine.url)[1])
        finally:
            engine.dispose()

    given = connect_args("postgresql://postgres@127.0.0.1:5432/test")
    assert given["connect_timeout"] == str(CONNECT_TIMEOUT_SECONDS)
    chosen = connect_args("postgresql://postgres@127.0.0.1:5432/test?connect_timeout=3")
    assert chosen["connect_timeout"] == "3"


def test_a_healthy_pooled_connection_is_reused(pg_engine: Engine) -> None:
    assert _backend(pg_engine) == _backend(pg_engine)


def test_connections_the_server_ended_are_replaced_on_checkout(
    settings: Settings, pg_engine: Engine
) -> None:
    with pg_engine.connect() as first, pg_engine.connect() as second:
        pids = {
            int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)
        }
    assert pg_engine.pool.checkedin() == 2  # type: ignore[attr-defined]
    _terminate(settings, pids)
    with pg_engine.connect() as first, pg_engine.connect() as second:
        now = {
            int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)
        }
    assert len(now) == 2
    assert not now & pids


# -- write_retrying: a transaction PostgreSQL rolled back as one side of a deadlock runs again --

_RUNS = Table("retry_probe", MetaData(), Column("run", Integer, primary_key=True))
_DEADLOCK = "DO $$ BEGIN RAISE EXCEPTION 'probe' USING ERRCODE = 'deadlock_detected'; END $$"


@pytest.fixture
def retry_db(settings: Settings) -> Iterator[Database]:
    """A table of its own, committed for real: what a rolled-back run wrote must be gone."""
    engine = make_engine(settings, pool_size=2)
    _RUNS.drop(engine, checkfirst=True)
    _RUNS.create(engine)
    yield Database(make_sessionmaker(engine))
    _RUNS.drop(engine)
    engine.dispose()


@pytest.fixture
def pg_retry_db(retry_db: Database) -> Database:
    if retry_db.engine.dialect.name != "postgresql":
        pytest.skip("deadlocks are PostgreSQL's; SQLite writers queue on one lock")
    return retry_db


def _stored_runs(db: Database) -> list[int]:
    with db.read() as session:
        return list(session.scalars(select(_RUNS.c.run).order_by(_RUNS.c.run)))


def test_a_deadlocked_transaction_runs_again_from_the_start(pg_retry_db: Database) -> None:
    runs: list[int] = []

    def work(session: Session) -> str:
        runs.append(len(runs) + 1)
        session.execute(insert(_RUNS).values(run=runs[-1]))
        if len(runs) == 1:
            session.execute(text(_DEADLOCK))
        return "stored"

    assert pg_retry_db.write_retrying(work) == "stored"
    assert runs == [1, 2]
    assert _stored_runs(pg_retry_db) == [2]  # the first run's row was rolled back


def test_a_transaction_that_keeps_deadlocking_fails_after_its_attempts(
    pg_retry_db: Database,
) -> None:
    runs: list[int] = []

    def work(session: Session) -> None:
        runs.append(len(runs) + 1)
        session.execute(insert(_RUNS).values(run=runs[-1]))
        session.execute(text(_DEADLOCK))

    with pytest.raises(ServiceUnavailable) as failed:  # a 503 with Retry-After, not a 500
        pg_retry_db.write_retrying(work, attempts=3)
    assert failed.value.status == 503
    assert failed.value.headers == {"Retry-After": "1"}
    assert isinstance(failed.value.__cause__, DBAPIError)
    assert retryable(failed.value.__cause__)
    assert runs == [1, 2, 3]
    assert _stored_runs(pg_retry_db) == []


def test_other_errors_are_not_retried(retry_db: Database) -> None:
    runs: list[int] = []

    def work(session: Session) -> None:
        runs.append(len(runs) + 1)
        session.execute(insert(_RUNS).values(run=1))
        session.execute(insert(_RUNS).values(run=1))  # the primary key, twice

    with pytest.raises(IntegrityError) as failed:
        retry_db.write_retrying(work)
    assert not retryable(failed.value)
    assert runs == [1]
    assert _stored_runs(retry_db) == []


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (ClientKind.AGENCY, "/v1/subjects?q=示例科技"),
        (ClientKind.AGENCY, "/v1/watchlist"),
        (ClientKind.AGENCY, "/v1/subscriptions"),
        (ClientKind.OPERATOR, "/v1/admin/clients"),
        (ClientKind.OPERATOR, "/v1/admin/audit"),
    ],
)
def test_read_only_routes_never_queue_for_the_sqlite_write_lock(
    tmp_path: Path, kind: ClientKind, path: str
) -> None:
    # A search or a listing reads a snapshot: it must answer while a push holds the write lock
    # (here another connection does), not wait for its turn (up to the 30 s busy timeout).
    if live.SERVER_DATABASE_URL:
        pytest.skip("SQLite's one write lock; PostgreSQL readers never wait for writers")
    with live.dedicated_settings(tmp_path, "read_lock") as settings:
        with live.sessions_on(settings) as sessions:
            _, key = live.new_client(sessions, kind)
        headers = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(settings)) as client:
            assert client.get(path, headers=headers).status_code == 200  # the key is known
            database = settings.database_url.removeprefix("sqlite:///")
            holder = sqlite3.connect(database, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                started = time.monotonic()
                answer = client.get(path, headers=headers)
                waited = time.monotonic() - started
            finally:
                holder.rollback()
                holder.close()
    assert answer.status_code == 200, answer.text
    assert waited < 5
