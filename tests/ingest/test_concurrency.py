"""Concurrent pushes with real commits: one record per natural key, versions gap-free and in
commit order, no lost update, and one submission per Idempotency-Key.

These tests cannot run inside the rolled-back `session`: each request must commit for real. The
module builds its own database (a temp SQLite file, or a separate PostgreSQL database next to
CREDIT_HUB_TEST_DATABASE_URL) and drives the app without dependency overrides.
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.ingest.jobs import JobContext, Worker
from credit_hub.ingest.models import Submission
from credit_hub.records.models import Record, RecordVersion
from tests import factories
from tests.live import dedicated_settings, new_department, running_server, sessions_on

DATABASE_NAME = "credit_hub_test_concurrency"
URL = "/v1/records"

THREADS = 8
PROCESSES = 4
ROUNDS = 4
KEYS = tuple(range(1, 9))
FINES = ("0.5", "0.6", "0.7")


@dataclass(frozen=True)
class Push:
    """One push: the fine it sent per source_id, and the answer."""

    sent: dict[str, str]
    status: int
    report: dict[str, Any]


def batch(worker: int, round_: int) -> list[dict[str, Any]]:
    """Overlapping batches: most keys in every batch, the content varying with worker and
    round (so some pushes change a record and some do not), odd workers in reverse order."""
    keys = [n for n in KEYS if (n + worker + round_) % 4]
    if worker % 2:
        keys.reverse()
    return [
        factories.penalty(n, fine_amount_wan=FINES[(n + worker + 2 * round_) % len(FINES)])
        for n in keys
    ]


def push(client: httpx.Client, key: str, worker: int, round_: int) -> Push:
    records = batch(worker, round_)
    response = client.post(
        URL,
        json={"standard": "administrative_penalty", "records": records},
        headers={"Authorization": f"Bearer {key}"},
    )
    is_json = response.headers.get("content-type", "").endswith("json")
    return Push(
        {r["decision_doc_no"]: r["fine_amount_wan"] for r in records},
        response.status_code,
        response.json() if is_json else {"body": response.text},
    )


def pusher(app: Any, key: str, start: threading.Barrier) -> Callable[[int], list[Push]]:
    """A thread's work: its own TestClient, then ROUNDS pushes once every thread is ready."""

    def work(worker: int) -> list[Push]:
        client = TestClient(app, raise_server_exceptions=False)
        try:
            start.wait(timeout=30)
            return [push(client, key, worker, round_) for round_ in range(ROUNDS)]
        finally:
            client.close()

    return work


# -- the module's own database ----------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with dedicated_settings(tmp_path_factory.mktemp("concurrency"), DATABASE_NAME) as settings:
        yield settings


@pytest.fixture(scope="module")
def sessions(hub_settings: Settings) -> Iterator[sessionmaker[Session]]:
    with sessions_on(hub_settings) as made:
        yield made


def assert_history(
    sessions: sessionmaker[Session], department_id: uuid.UUID, pushes: list[Push]
) -> None:
    """The stored records and versions agree with every report, and nothing was lost."""
    assert [(p.status, p.report) for p in pushes if p.status != 201] == []
    seen: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for p in pushes:
        assert p.report["counts"]["rejected"] == 0, p.report["errors"]
        for outcome in p.report["records"]:
            source_id = outcome["source_id"]
            seen[source_id].append((outcome["outcome"], outcome["version"], p.sent[source_id]))
    sent_keys = {source_id for p in pushes for source_id in p.sent}
    with sessions() as session:
        records = session.scalars(select(Record).where(Record.department_id == department_id)).all()
        versions = session.scalars(
            select(RecordVersion)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.department_id == department_id)
            .order_by(RecordVersion.record_id, RecordVersion.version)
        ).all()
        submissions = session.scalar(
            select(func.count())
            .select_from(Submission)
            .where(Submission.client_id == department_id)
        )
    assert submissions == len(pushes)
    # One record per natural key (department, standard, source_id).
    assert sorted(r.source_id for r in records) == sorted(sent_keys)
    by_record: dict[uuid.UUID, list[RecordVersion]] = defaultdict(list)
    for version in versions:
        by_record[version.record_id].append(version)
    updates = 0
    for record in records:
        kept = by_record[record.id]
        numbers = [v.version for v in kept]
        assert numbers == list(range(1, len(kept) + 1)), record.source_id
        assert record.version == numbers[-1]
        assert record.content_hash == kept[-1].content_hash
        # A new version only for a content change.
        assert all(a.content_hash != b.content_hash for a, b in pairwise(kept)), record.source_id
        outcomes = seen[record.source_id]
        created = [o for o in outcomes if o[0] == "created"]
        updated = sorted(o[1] for o in outcomes if o[0] == "updated")
        assert [o[1] for o in created] == [1], record.source_id
        # Each version is one reported change: N versions == 1 + the "updated" outcomes.
        assert updated == list(range(2, len(kept) + 1)), record.source_id
        # Each reported version holds what its own push sent: no update was lost.
        stored = {v.version: Decimal(v.data["fine_amount_wan"]) for v in kept}
        for outcome, version, fine in outcomes:
            assert stored[version] == Decimal(fine), (record.source_id, outcome, version)
        updates += len(updated)
    assert updates > 0  # the batches did race on changed content


# -- (a) threads, each with its own TestClient --------------------------------------------------


def test_parallel_threads_keep_one_record_per_key_and_gap_free_versions(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    department_id, key = new_department(sessions)
    app = create_app(hub_settings)  # no overrides: every request commits
    work = pusher(app, key, threading.Barrier(THREADS))
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            pushes = [p for found in pool.map(work, range(THREADS)) for p in found]
    finally:
        app.state.engine.dispose()
    assert len(pushes) == THREADS * ROUNDS
    assert_history(sessions, department_id, pushes)


# -- (b) the real server with two worker processes, four pushing processes ----------------------


def _push_from_process(
    base_url: str,
    key: str,
    worker: int,
    start: Any,
    results: Any,
) -> None:
    """Runs in a child process: push ROUNDS batches, hand back (sent, status, report) tuples."""
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            start.wait(timeout=60)
            pushes = [push(client, key, worker, round_) for round_ in range(ROUNDS)]
        results.put((worker, [(p.sent, p.status, p.report) for p in pushes], None))
    except BaseException:
        results.put((worker, [], traceback.format_exc()))


def test_parallel_processes_against_the_served_app(
    hub_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    department_id, key = new_department(sessions)
    context = multiprocessing.get_context("spawn")
    with running_server(hub_settings, tmp_path / "server.log", workers=2) as base_url:
        start = context.Barrier(PROCESSES)
        results = context.Queue()
        workers = [
            context.Process(target=_push_from_process, args=(base_url, key, n, start, results))
            for n in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        try:
            answers = [results.get(timeout=120) for _ in workers]
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
    assert [error for _, _, error in answers if error] == []
    assert all(worker.exitcode == 0 for worker in workers)
    pushes = [Push(*found) for _, pushed, _ in answers for found in pushed]
    assert len(pushes) == PROCESSES * ROUNDS
    assert_history(sessions, department_id, pushes)


# -- (c) the same Idempotency-Key from many threads at once ------------------------------------


def test_parallel_retries_with_one_idempotency_key_store_one_submission(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    department_id, key = new_department(sessions)
    app = create_app(hub_settings)
    records = [factories.penalty(n) for n in KEYS]
    body = {"standard": "administrative_penalty", "records": records}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "batch-2026-04-02-007"}
    start = threading.Barrier(THREADS)

    def work(_: int) -> httpx.Response:
        client = TestClient(app, raise_server_exceptions=False)
        try:
            start.wait(timeout=30)
            return client.post(URL, json=body, headers=headers)
        finally:
            client.close()

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            responses = list(pool.map(work, range(THREADS)))
    finally:
        app.state.engine.dispose()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (THREADS - 1) + [201], [r.text for r in responses]
    assert all(
        r.headers.get("idempotent-replayed") == "true" for r in responses if r.status_code == 200
    )
    submission_ids = {r.json()["submission_id"] for r in responses}
    assert len(submission_ids) == 1
    assert {r.json()["counts"]["created"] for r in responses} == {len(records)}
    with sessions() as session:
        stored = session.scalars(
            select(Submission.id).where(Submission.client_id == department_id)
        ).all()
        record_count = session.scalar(
            select(func.count()).select_from(Record).where(Record.department_id == department_id)
        )
        version_count = session.scalar(
            select(func.count())
            .select_from(RecordVersion)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.department_id == department_id)
        )
    assert [str(s) for s in stored] == list(submission_ids)
    assert record_count == version_count == len(records)


# -- (d) an atomic file and batch pushes of one department, at the same time --------------------


def test_an_atomic_file_and_pushes_of_its_department_run_at_once_without_losing_anything(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """An atomic file stores chunk after chunk in one transaction (on PostgreSQL it holds the
    department's key lock exclusive, see ingest.service._lock_natural_keys) while pushes of the
    same department send the same source ids: no push fails, the file ends accepted, and every
    record's versions are whole and account for every reported change."""
    department_id, key = new_department(sessions)
    app = create_app(hub_settings.model_copy(update={"job_chunk_rows": 3}))
    state = app.state
    # In the reverse of the order pushes claim in: chunk by chunk, the file takes the keys the
    # pushes would take last first.
    file_records = [factories.penalty(n, fine_amount_wan="0.9") for n in reversed(KEYS)]
    auth = {"Authorization": f"Bearer {key}"}
    start = threading.Barrier(THREADS + 1)
    pushes = pusher(app, key, start)

    def run_file() -> int:
        context = JobContext.of(state.settings, state.standards, state.keyring, state.clock)
        start.wait(timeout=30)
        return Worker(state.db, context, name="test").run_until_idle()

    try:
        with TestClient(app, raise_server_exceptions=False) as hub:
            uploaded = hub.post(
                "/v1/submissions",
                content=b"".join(orjson.dumps(r) + b"\n" for r in file_records),
                params={"standard": "administrative_penalty", "mode": "atomic"},
                headers=auth | {"Content-Type": "application/x-ndjson"},
            )
            assert uploaded.status_code == 202, uploaded.text
            with ThreadPoolExecutor(THREADS + 1) as pool:
                file_run = pool.submit(run_file)
                pushed = [pool.submit(pushes, worker) for worker in range(THREADS)]
                all_pushes = [p for future in pushed for p in future.result()]
                # Run once: a deadlock would have rolled the file back and had it run again.
                assert file_run.result() == 1
            done = hub.get(f"/v1/submissions/{uploaded.json()['submission_id']}", headers=auth)
    finally:
        state.engine.dispose()
    assert [(p.status, p.report) for p in all_pushes if p.status != 201] == []
    report = done.json()
    assert report["status"] == "accepted", report
    file_counts = report["counts"]
    assert file_counts["created"] + file_counts["updated"] + file_counts["unchanged"] == len(KEYS)
    with sessions() as session:
        versions = session.execute(
            select(RecordVersion.record_id, RecordVersion.version, RecordVersion.content_hash)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.department_id == department_id)
            .order_by(RecordVersion.record_id, RecordVersion.version)
        ).all()
        records = session.scalar(
            select(func.count()).select_from(Record).where(Record.department_id == department_id)
        )
    assert records == len(KEYS)  # one record per natural key
    by_record: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in versions:
        by_record[row.record_id].append(row)
    for kept in by_record.values():
        assert [v.version for v in kept] == list(range(1, len(kept) + 1))
        assert all(a.content_hash != b.content_hash for a, b in pairwise(kept))
    outcomes = Counter(o["outcome"] for p in all_pushes for o in p.report["records"])
    # Every version is one reported change, by a push or by the file.
    assert outcomes["created"] + file_counts["created"] == len(KEYS)
    assert len(versions) == len(KEYS) + outcomes["updated"] + file_counts["updated"]


# -- (e) a write PostgreSQL ends as one side of a deadlock runs again ---------------------------

_FAULT = (
    "CREATE SEQUENCE fault_runs",
    # A sequence is not transactional: the first insert of versions fails, the next ones pass.
    "CREATE FUNCTION fault_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF nextval('fault_runs') = 1 THEN "
    "RAISE EXCEPTION 'injected' USING ERRCODE = 'deadlock_detected'; END IF; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER fault_once BEFORE INSERT ON record_version "
    "FOR EACH STATEMENT EXECUTE FUNCTION fault_once()",
)
_UNFAULT = (
    "DROP TRIGGER IF EXISTS fault_once ON record_version",
    "DROP FUNCTION IF EXISTS fault_once()",
    "DROP SEQUENCE IF EXISTS fault_runs",
)


@pytest.fixture
def deadlock_once(
    hub_settings: Settings, sessions: sessionmaker[Session]
) -> Iterator[Callable[[], int]]:
    """The first insert of record versions after `arm()` fails as a deadlock victim would."""
    if not hub_settings.database_url.startswith("postgresql"):
        pytest.skip("deadlocks are PostgreSQL's; SQLite writers queue on one lock")

    def execute(statements: tuple[str, ...]) -> None:
        with sessions() as session, session.begin():
            for statement in statements:
                session.execute(text(statement))

    def fired() -> int:
        with sessions() as session:
            return int(session.scalar(text("SELECT last_value FROM fault_runs")) or 0)

    execute(_UNFAULT)
    execute(_FAULT)
    try:
        yield fired
    finally:
        execute(_UNFAULT)


def test_a_push_and_a_file_chunk_that_deadlock_run_again_and_store_once(
    hub_settings: Settings, sessions: sessionmaker[Session], deadlock_once: Callable[[], int]
) -> None:
    department_id, key = new_department(sessions)
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(hub_settings)
    state = app.state
    try:
        with TestClient(app, raise_server_exceptions=False) as hub:
            pushed = hub.post(
                URL,
                json={
                    "standard": "administrative_penalty",
                    "records": [factories.penalty(n) for n in (101, 102)],
                },
                headers=auth,
            )
            assert pushed.status_code == 201, pushed.text
            assert deadlock_once() >= 2  # the first run failed, the second stored
            assert pushed.json()["counts"]["created"] == 2

            uploaded = hub.post(
                "/v1/submissions",
                content=b"".join(orjson.dumps(factories.penalty(n)) + b"\n" for n in (103, 104)),
                params={"standard": "administrative_penalty", "mode": "partial"},
                headers=auth | {"Content-Type": "application/x-ndjson"},
            )
            assert uploaded.status_code == 202, uploaded.text
            with sessions() as session, session.begin():  # arm it again for the file's chunk
                session.execute(text("SELECT setval('fault_runs', 1, false)"))
            context = JobContext.of(state.settings, state.standards, state.keyring, state.clock)
            assert Worker(state.db, context, name="test").run_until_idle() == 1
            assert deadlock_once() >= 2
            done = hub.get(f"/v1/submissions/{uploaded.json()['submission_id']}", headers=auth)
    finally:
        state.engine.dispose()
    report = done.json()
    assert report["status"] == "accepted", report
    assert report["counts"]["created"] == 2
    with sessions() as session:
        job = session.get(Submission, uuid.UUID(uploaded.json()["submission_id"]))
        assert job is not None
        assert job.attempts == 1  # the chunk ran again inside the job, the job did not restart
        versions = session.execute(
            select(Record.source_id, func.count(RecordVersion.version))
            .join(RecordVersion, RecordVersion.record_id == Record.id)
            .where(Record.department_id == department_id)
            .group_by(Record.source_id)
        ).all()
    assert sorted(n for _, n in versions) == [1, 1, 1, 1]  # each record stored once
