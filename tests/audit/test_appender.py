"""Group commit of read audit events: concurrent reads through a real app on a database of
their own; every answer has its committed event, in one verifiable chain."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, bindparam, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal
from credit_hub.app import create_app
from credit_hub.audit import service as audit
from credit_hub.audit.models import AuditEvent
from credit_hub.config import Settings
from credit_hub.db import Database
from credit_hub.pg_loop import LoopConnections
from tests import factories
from tests.live import dedicated_settings, new_client, sessions_on

DATABASE_NAME = "credit_hub_test_appender"
READERS = 8
READS = 15


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    folder: Path = tmp_path_factory.mktemp("appender")
    with dedicated_settings(folder, DATABASE_NAME, webhooks_worker=False) as settings:
        yield settings


@pytest.fixture(scope="module")
def sessions(hub_settings: Settings) -> Iterator[sessionmaker[Session]]:
    with sessions_on(hub_settings) as made:
        yield made


def _events(sessions: sessionmaker[Session], action: str) -> int:
    with sessions() as session:
        return (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
            )
            or 0
        )


def test_concurrent_reads_each_leave_one_committed_event_in_one_chain(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    department = new_client(sessions, ClientKind.DEPARTMENT)[1]
    agency = new_client(sessions, ClientKind.AGENCY)[1]
    usccs = [factories.make_uscc(700 + n) for n in range(READERS)]
    records = [factories.penalty(n, counterpart_uscc=u) for n, u in enumerate(usccs)]
    read = {"purpose": "procurement", "case_ref": "APPENDER-1"}
    with TestClient(create_app(hub_settings)) as client:
        assert client.app.state.audit_appender is not None  # type: ignore[attr-defined]
        pushed = client.post(
            "/v1/records",
            json={"standard": "administrative_penalty", "records": records},
            headers={"Authorization": f"Bearer {department}"},
        )
        assert pushed.status_code == 201, pushed.text
        before = _events(sessions, "profile.read")

        def reader(uscc: str) -> list[int]:
            return [
                client.get(
                    f"/v1/subjects/{uscc}/profile",
                    params=read,
                    headers={"Authorization": f"Bearer {agency}"},
                ).status_code
                for _ in range(READS)
            ]

        with ThreadPoolExecutor(READERS) as pool:
            statuses = [s for answers in pool.map(reader, usccs) for s in answers]
        # Every answer was sent after its event was committed: all of them are there now.
        assert statuses == [200] * READERS * READS
        assert _events(sessions, "profile.read") - before == READERS * READS
        # The same answers as without group commit: 304 for a known ETag, 404 for no subject.
        headers = {"Authorization": f"Bearer {agency}"}
        first = client.get(f"/v1/subjects/{usccs[0]}/profile", params=read, headers=headers)
        again = client.get(
            f"/v1/subjects/{usccs[0]}/profile",
            params=read,
            headers=headers | {"If-None-Match": first.headers["ETag"]},
        )
        assert (first.status_code, again.status_code) == (200, 304)
        unknown = factories.make_uscc(799)
        missing = client.get(f"/v1/subjects/{unknown}/profile", params=read, headers=headers)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert _events(sessions, "profile.read") - before == READERS * READS + 2
        screened = client.post(
            "/v1/profiles/screen",
            json={"identifiers": usccs} | read,
            headers={"Authorization": f"Bearer {agency}"},
        )
        assert screened.status_code == 200
        assert _events(sessions, "profile.screened") == READERS
    with sessions() as session:
        assert audit.verify(session).ok


def test_profile_reads_on_the_event_loop_answer_what_the_thread_pool_answers(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # PostgreSQL's profile reads run their statement on the event loop (pg_loop); SQLite's
    # on the loop's own connection. Either way: the same body and ETag as the read in a
    # worker thread, and an audit event for each.
    department = new_client(sessions, ClientKind.DEPARTMENT)[1]
    agency = new_client(sessions, ClientKind.AGENCY)[1]
    uscc = factories.make_uscc(777)
    batches = {
        "administrative_penalty": [
            factories.penalty(40 + n, counterpart_uscc=uscc) for n in (0, 1, 2)
        ],
        "administrative_licensing": [factories.licence(41, counterpart_uscc=uscc)],
    }
    params = {"purpose": "procurement", "case_ref": "APPENDER-LOOP"}
    headers = {"Authorization": f"Bearer {agency}"}
    postgresql = sessions.kw["bind"].dialect.name == "postgresql"
    with TestClient(create_app(hub_settings)) as client:
        state: Any = client.app.state  # type: ignore[attr-defined]
        assert (state.pg_loop is not None) == postgresql
        for standard, batch in batches.items():
            pushed = client.post(
                "/v1/records",
                json={"standard": standard, "records": batch},
                headers={"Authorization": f"Bearer {department}"},
            )
            assert pushed.status_code == 201, pushed.text
        before = _events(sessions, "profile.read")
        url = f"/v1/subjects/{uscc}/profile"
        on_loop = client.get(url, params=params, headers=headers)
        appender, pg_loop = state.audit_appender, state.pg_loop
        state.audit_appender = state.pg_loop = None  # the thread pool's path
        try:
            in_thread = client.get(url, params=params, headers=headers)
        finally:
            state.audit_appender, state.pg_loop = appender, pg_loop
        assert on_loop.status_code == in_thread.status_code == 200
        assert on_loop.content == in_thread.content
        assert on_loop.headers["ETag"] == in_thread.headers["ETag"]
        assert sum(map(len, on_loop.json()["records"].values())) == 4
        missing = client.get(
            f"/v1/subjects/{factories.make_uscc(778)}/profile", params=params, headers=headers
        )
        assert missing.status_code == 404
        assert _events(sessions, "profile.read") - before == 2  # a 404 read nothing
    with sessions() as session:
        assert audit.verify(session).ok


class _Broken(Database):
    """A database whose every write transaction fails."""

    def __init__(self) -> None:
        pass

    def write(self) -> Iterator[Session]:  # type: ignore[override]
        raise RuntimeError("the database went away")


class _Counted(Database):
    """The test database, counting its write transactions; with `gated`, the first one waits
    to be released."""

    def __init__(self, sessions: sessionmaker[Session], *, gated: bool = False) -> None:
        super().__init__(sessions)
        self.transactions = 0
        self.gated = gated
        self.entered, self.release = threading.Event(), threading.Event()

    @contextmanager
    def write(self) -> Iterator[Session]:
        self.transactions += 1
        if self.gated and self.transactions == 1:
            self.entered.set()
            self.release.wait(10)
        with super().write() as session:
            yield session


def test_a_failed_append_fails_every_read_waiting_on_it(hub_settings: Settings) -> None:
    appender = audit.Appender(_Broken())
    try:
        with pytest.raises(RuntimeError, match="went away"):
            appender.append([audit.read_event(actor=None, action="profile.read")])
    finally:
        appender.close()


def test_reads_arriving_during_an_append_are_appended_together_in_one_transaction(
    sessions: sessionmaker[Session],
) -> None:
    db = _Counted(sessions, gated=True)
    appender = audit.Appender(db)
    before = _events(sessions, "profile.grouped")

    def event(n: int) -> list[dict[str, Any]]:
        return [audit.read_event(actor=None, action="profile.grouped", case_ref=f"G-{n}")]

    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(appender.append, event(0))
        assert db.entered.wait(10)
        rest = [pool.submit(appender.append, event(n)) for n in range(1, 6)]
        deadline = time.monotonic() + 10
        while len(appender._waiting) < 5 and time.monotonic() < deadline:  # all queued up
            time.sleep(0.01)
        db.release.set()
        for future in [first, *rest]:
            future.result(timeout=10)
    assert db.transactions == 2  # the first read's, then one for the five that waited
    assert _events(sessions, "profile.grouped") - before == 6
    with sessions() as session:
        assert audit.verify(session).ok


def test_reads_of_one_turn_of_the_event_loop_are_handed_over_together(
    sessions: sessionmaker[Session],
) -> None:
    # SQLite's profile reads run on the event loop: the events of the reads that finish in
    # the same turn go to one worker thread together, in one transaction, and each read
    # resumes only once they are committed.
    db = _Counted(sessions)
    appender = audit.Appender(db)
    before = _events(sessions, "profile.looped")

    async def read(n: int) -> int:
        event = audit.read_event(actor=None, action="profile.looped", case_ref=f"L-{n}")
        await appender.append_from_loop([event])
        return _events(sessions, "profile.looped") - before  # committed by now

    async def reads() -> list[int]:
        return await asyncio.gather(*(read(n) for n in range(5)))

    seen = asyncio.run(reads())
    assert seen == [5] * 5  # every read saw all five events committed when it resumed
    assert db.transactions == 1
    asyncio.run(appender.append_from_loop([]))  # nothing to append: no transaction
    assert db.transactions == 1
    with sessions() as session:
        assert audit.verify(session).ok


def test_a_failed_append_fails_every_read_of_the_loop_waiting_on_it() -> None:
    appender = audit.Appender(_Broken())

    async def reads() -> list[BaseException | None]:
        events = [[audit.read_event(actor=None, action="profile.read")] for _ in range(3)]
        return await asyncio.gather(
            *(appender.append_from_loop(e) for e in events), return_exceptions=True
        )

    outcomes = asyncio.run(reads())
    assert [type(o) for o in outcomes] == [RuntimeError] * 3


class _CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to its threads."""

    handed = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.handed += 1
        return super().submit(fn, *args, **kwargs)


def test_sqlite_appends_on_the_event_loop_while_the_write_lock_is_free(
    sessions: sessionmaker[Session],
) -> None:
    # SQLite's reads on the event loop append their events there when nobody holds the write
    # lock; when a writer does, in the writers' queue or outside it, the loop hands them to a
    # thread and goes on turning instead of waiting.
    engine: Engine = sessions.kw["bind"]
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's appends")
    appender = audit.Appender(Database(sessions), plain_connection=True)
    executor = _CountingExecutor(2)
    before = _events(sessions, "loop.sqlite")

    def event(n: int) -> list[dict[str, Any]]:
        return [audit.read_event(actor=None, action="loop.sqlite", case_ref=f"S-{n}")]

    async def turning_while(pending: asyncio.Future[None]) -> int:
        turns = 0
        while turns < 5:
            await asyncio.sleep(0.01)
            turns += 1
        assert not pending.done()  # still waiting for the writer, the loop turning meanwhile
        return turns

    async def scenario() -> list[int]:
        asyncio.get_running_loop().set_default_executor(executor)
        handed = []
        await appender.append_from_loop(event(0))
        handed.append(executor.handed)
        # A writer of this process holds the writers' queue.
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with Database(sessions).write() as session:
                session.execute(text("SELECT 1"))  # BEGIN IMMEDIATE, on its turn
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        while not holding.is_set():
            await asyncio.sleep(0.005)
        pending = asyncio.ensure_future(appender.append_from_loop(event(1)))
        assert await turning_while(pending) == 5
        release.set()
        await asyncio.wait_for(pending, 10)
        holder.join(10)
        handed.append(executor.handed)
        # Another program holds SQLite's lock, outside the queue.
        outside = sqlite3.connect(str(engine.url.database), isolation_level=None)
        try:
            outside.execute("BEGIN IMMEDIATE")
            pending = asyncio.ensure_future(appender.append_from_loop(event(2)))
            assert await turning_while(pending) == 5
            outside.execute("COMMIT")
            await asyncio.wait_for(pending, 10)
        finally:
            outside.close()
        handed.append(executor.handed)
        # A failed append on the loop fails its read; the next one appends on the loop again.
        with pytest.raises(Exception, match=r"(?i)not.null"):
            await appender.append_from_loop([audit.read_event(actor=None, action=None)])
        await appender.append_from_loop(event(3))
        handed.append(executor.handed)
        return handed

    try:
        assert asyncio.run(scenario()) == [0, 1, 2, 2]
    finally:
        appender.close()
        executor.shutdown()
    assert _events(sessions, "loop.sqlite") - before == 4
    with sessions() as session:
        assert audit.verify(session).ok


def _postgresql(sessions: sessionmaker[Session]) -> Engine:
    """The suite's engine; the test is skipped unless it is PostgreSQL's."""
    engine: Engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's appends")
    return engine


def _transactions(sessions: sessionmaker[Session], action: str) -> int:
    """PostgreSQL: how many transactions inserted the events of `action` (rows that one
    transaction inserted share its xmin)."""
    with sessions() as session:
        return session.execute(
            text("SELECT count(DISTINCT xmin::text) FROM audit_event WHERE action = :action"),
            {"action": action},
        ).scalar_one()


def test_postgresql_appends_the_reads_of_the_loop_on_the_loop(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # PostgreSQL's profile reads run on the event loop: their events are appended there too,
    # one batch in flight at a time. The reads of one turn go in one transaction, and each
    # resumes only once it is committed; a failed append fails its reads, and the next goes on.
    engine = _postgresql(sessions)
    payload = {"note": "引号 ' \" \\ ; COMMIT; --"}

    def event(action: str, **spec: Any) -> list[dict[str, Any]]:
        return [audit.read_event(actor=None, action=action, case_ref="O'Brien", **spec)]

    async def reads() -> tuple[list[int], list[BaseException | None], int]:
        connections = LoopConnections(engine, size=2)
        appender = audit.Appender(Database(sessions), loop_connections=connections)
        try:

            async def read(n: int) -> int:
                await appender.append_from_loop(event("loop.appended", payload=payload))
                return _events(sessions, "loop.appended")  # committed by now

            seen = await asyncio.gather(*(read(n) for n in range(5)))
            failed = await asyncio.gather(
                appender.append_from_loop(event("loop.failed")),
                appender.append_from_loop(event("x" * 65)),  # action is VARCHAR(64)
                return_exceptions=True,
            )
            many = [audit.read_event(actor=None, action="loop.many") for _ in range(40)]
            await appender.append_from_loop(many)  # with parameters, not literal rows
            return seen, failed, _events(sessions, "loop.many")
        finally:
            connections.close()

    seen, failed, many = asyncio.run(reads())
    assert seen == [5] * 5
    assert _transactions(sessions, "loop.appended") == 1
    assert [type(f).__name__ for f in failed] == ["StringDataRightTruncation"] * 2
    assert _events(sessions, "loop.failed") == 0  # nothing of the failed batch is stored
    assert many == 40
    with sessions() as session:
        stored = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "loop.appended")
        ).all()
        assert [(e.payload, e.case_ref) for e in stored] == [(payload, "O'Brien")] * 5
        assert audit.verify(session).ok


def test_a_loop_append_waits_for_the_reads_in_flight_and_no_longer_than_it_may(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # A read that hands its event over while other reads on the loop are still at their
    # statement: the append waits for them (at most JOIN_SECONDS), so that one transaction
    # serves them all. A read that fails hands nothing over and holds nobody up; a read
    # slower than JOIN_SECONDS is not waited for.
    engine = _postgresql(sessions)
    Read = tuple[str, str | None, bool]  # action, what its statement ends after, fails

    async def reads(join_seconds: float, *spec: Read) -> list[str]:
        connections = LoopConnections(engine, size=2)
        appender = audit.Appender(Database(sessions), loop_connections=connections)
        await appender.append_from_loop([audit.read_event(actor=None, action="join.warm")])
        appender.JOIN_SECONDS = join_seconds
        log: list[str] = []

        async def read(action: str, after: str | None, fail: bool) -> None:
            with appender.reading_on_loop():
                while after is not None and after not in log:  # the statement
                    await asyncio.sleep(0)
                for _ in range(3):  # the append `after` started is waiting by now
                    await asyncio.sleep(0)
                if fail:
                    raise LookupError(action)
                event = audit.read_event(actor=None, action=action)
                appended = appender.hand_over_from_loop([event])
                log.append(f"handed {action}")
            await appended
            log.append(f"committed {action}")

        try:
            await asyncio.gather(*(read(*s) for s in spec), return_exceptions=True)
        finally:
            connections.close()
        return log

    started = time.monotonic()
    joined = asyncio.run(
        reads(
            5.0,
            ("join.a", None, False),
            ("join.b", "handed join.a", False),
            ("join.failed", "handed join.a", True),
        )
    )
    assert joined == ["handed join.a", "handed join.b", "committed join.a", "committed join.b"]
    assert time.monotonic() - started < 4  # the failed read did not hold the append to its cap
    slow = asyncio.run(
        reads(0.05, ("join.fast", None, False), ("join.slow", "committed join.fast", False))
    )
    assert slow == [
        "handed join.fast",
        "committed join.fast",
        "handed join.slow",
        "committed join.slow",
    ]
    with sessions() as session:
        transactions = [
            session.execute(
                text(
                    "SELECT count(DISTINCT xmin::text) FROM audit_event WHERE action IN :actions"
                ).bindparams(bindparam("actions", expanding=True)),
                {"actions": actions},
            ).scalar_one()
            for actions in (["join.a", "join.b"], ["join.fast", "join.slow"])
        ]
        assert transactions == [1, 2]
        assert audit.verify(session).ok


class _Stalled:
    """Loop connections that never hand one out: an append on the loop waits until cancelled."""

    dialect = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None


def test_reads_waiting_on_a_cancelled_loop_append_are_cancelled_not_left_waiting() -> None:
    appender = audit.Appender(_Broken(), loop_connections=_Stalled())  # type: ignore[arg-type]

    async def reads() -> list[type[BaseException]]:
        first = asyncio.ensure_future(appender.append_from_loop(_one_event()))
        await asyncio.sleep(0.05)  # the leader is appending (stalled)
        second = asyncio.ensure_future(appender.append_from_loop(_one_event()))
        await asyncio.sleep(0.05)  # waiting for the next batch
        assert appender._loop_leader is not None
        appender._loop_leader.cancel()
        done = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), timeout=5
        )
        return [type(outcome) for outcome in done]

    assert asyncio.run(reads()) == [asyncio.CancelledError] * 2

    # Cancelled while waiting for a read in flight to join the batch: the same.
    appender = audit.Appender(_Broken(), loop_connections=_Stalled())  # type: ignore[arg-type]
    appender.JOIN_SECONDS = 60

    async def joining() -> type[BaseException]:
        with appender.reading_on_loop():  # a read in flight, its statement not yet done
            handed = asyncio.ensure_future(appender.append_from_loop(_one_event()))
            await asyncio.sleep(0.05)  # the leader waits for the read in flight
            assert appender._loop_leader is not None
            appender._loop_leader.cancel()
            outcome = await asyncio.wait_for(
                asyncio.gather(handed, return_exceptions=True), timeout=5
            )
        return type(outcome[0])

    assert asyncio.run(joining()) is asyncio.CancelledError


def _one_event() -> list[dict[str, Any]]:
    return [audit.read_event(actor=None, action="profile.read")]


def test_postgresql_appends_in_one_statement_store_what_sqlalchemy_stores(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    _postgresql(sessions)
    appender = audit.Appender(Database(sessions), plain_connection=True)
    payload = {"note": "引号 ' \" \\ ; COMMIT; --", "nested": {"n": [1, 2.5, None]}}
    quoted = {"action": "literal.checked", "case_ref": "O'Brien", "payload": payload}
    appender.append([audit.read_event(actor=None, **quoted) for _ in range(3)])
    with sessions() as session:
        stored = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "literal.checked")
        ).all()
        assert [e.payload for e in stored] == [payload] * 3
        assert [e.case_ref for e in stored] == ["O'Brien"] * 3
        assert audit.verify(session).ok  # times and ids stored exactly: every hash matches
    too_long = audit.read_event(actor=None, action="x" * 65)  # action is VARCHAR(64)
    with pytest.raises(Exception, match="too long"):
        appender.append([too_long])
    appender.append([audit.read_event(actor=None, action="literal.checked")])  # pool still sound
    # A screening's many events go in the same one statement.
    appender.append([audit.read_event(actor=None, **quoted) for _ in range(40)])
    with sessions() as session:
        assert _events(sessions, "literal.checked") == 44
        assert audit.verify(session).ok
    # Column for column what SQLAlchemy stores (record_many, in a Session, chained in Python):
    # an actor, UUIDs, a time to the microsecond, text that needs escaping in JSON or takes
    # four bytes in UTF-8 (hashed by PostgreSQL as Python hashes it), a payload of None.
    actor = Principal(
        id=uuid.uuid4(),
        kind=ClientKind.AGENCY,
        name="采购中心",
        uscc=None,
        standards=frozenset(),
        scopes=frozenset(),
        pushes_for=frozenset(),
    )
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    specs = [
        {"subject_id": uuid.uuid4(), "case_ref": 'tab\t "q" \\ 引号 \u2028 𠀀', "payload": payload},
        {"subject_id": None, "case_ref": None, "payload": None},
    ]

    def spec(source: str, n: int) -> dict[str, Any]:
        given = {"actor": actor, "action": f"stored.{source}", "at": at, "request_id": "r"}
        return given | specs[n]

    appender.append([spec("appender", n) for n in range(2)])
    with sessions() as session:
        audit.record_many(session, [spec("session", n) for n in range(2)])
        session.commit()
    columns = "at, actor_id, actor_kind, subject_id, case_ref, request_id, payload::text"
    with sessions() as session:
        stored = {
            source: session.execute(
                text(f"SELECT {columns} FROM audit_event WHERE action = :a ORDER BY id"),
                {"a": f"stored.{source}"},
            ).all()
            for source in ("appender", "session")
        }
        assert audit.verify(session).ok
    assert stored["appender"] == stored["session"]
    assert [row[0] for row in stored["appender"]] == [at, at]
    assert [row[6] for row in stored["appender"]][1] == "null"  # JSON null, not SQL NULL


def test_postgresql_appends_of_many_connections_make_one_chain(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # Appenders of several processes each append in one statement on a connection of their
    # own, while writes chain their events in Python in their own transactions: the chain lock
    # orders them all, and each statement after the lock reads the last event committed.
    _postgresql(sessions)
    appenders = [audit.Appender(Database(sessions), plain_connection=True) for _ in range(4)]

    def append(n: int) -> None:
        for round_ in range(10):
            if n == 0:
                with sessions() as session:
                    audit.record_many(session, [{"actor": None, "action": "many.written"}] * 2)
                    session.commit()
            else:
                events = [audit.read_event(actor=None, action="many.read")] * (round_ % 3 + 1)
                appenders[n].append(events)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(append, range(4)))
    assert _events(sessions, "many.written") == 20
    assert _events(sessions, "many.read") == 3 * sum(r % 3 + 1 for r in range(10))
    with sessions() as session:
        assert audit.verify(session).ok  # no gap, no fork: every id and link in order


def test_appender_on_a_plain_connection_appends_without_a_session(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    # On a plain connection, an Appender appends without a Session (SQLite: in BEGIN
    # IMMEDIATE on its turn in the writers' queue; PostgreSQL: in one statement).
    appender = audit.Appender(Database(sessions), plain_connection=True)
    payload = {"note": "引号 ' \" \\", "nested": {"n": [1, 2.5, None]}}
    appender.append([audit.read_event(actor=None, action="plain.appended", payload=payload)])
    appender.append([audit.read_event(actor=None, action="plain.appended") for _ in range(3)])
    broken = audit.read_event(actor=None, action=None)  # action is NOT NULL
    with pytest.raises(Exception, match=r"(?i)not.null"):
        appender.append([broken])
    # The failed transaction let go of its connection and its turn to write.
    started = time.monotonic()
    appender.append([audit.read_event(actor=None, action="plain.appended")])
    assert time.monotonic() - started < 5
    assert _events(sessions, "plain.appended") == 5
    with sessions() as session:
        stored = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "plain.appended").order_by(AuditEvent.id)
        ).all()
        assert stored[0].payload == payload
        assert audit.verify(session).ok  # times and ids stored exactly: every hash matches
