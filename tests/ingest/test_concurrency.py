"""Concurrent pushes with real commits: one record per natural key, versions gap-free and in
commit order, no lost update, and one submission per Idempotency-Key.

These tests cannot run inside the rolled-back `session`: each request must commit for real. The
module builds its own database (a temp SQLite file, or a separate PostgreSQL database next to
CREDIT_HUB_TEST_DATABASE_URL) and drives the app without dependency overrides.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from credit_hub.access import service as access
from credit_hub.access.models import ClientKind
from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import make_engine, make_sessionmaker
from credit_hub.ingest.models import Submission
from credit_hub.keyring import SECRET_NAMES, generate_env, load_keyring
from credit_hub.migrate import upgrade
from credit_hub.records.models import Record, RecordVersion
from tests import factories

SERVER_DATABASE_URL = os.environ.get("CREDIT_HUB_TEST_DATABASE_URL")
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


# -- the module's own database ----------------------------------------------------------------


def _server_admin_url() -> Any:
    assert SERVER_DATABASE_URL
    return make_url(SERVER_DATABASE_URL).set(drivername="postgresql+psycopg")


def _recreate_database(*, create: bool) -> None:
    admin = create_engine(
        _server_admin_url().set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
    )
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)"))
        if create:
            connection.execute(text(f"CREATE DATABASE {DATABASE_NAME}"))
    admin.dispose()


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    folder = tmp_path_factory.mktemp("concurrency")
    secrets: dict[str, str] = {}
    if SERVER_DATABASE_URL:
        _recreate_database(create=True)
        url = _server_admin_url().set(database=DATABASE_NAME).render_as_string(hide_password=False)
        assignments = dict(line.split("=", 1) for line in generate_env().splitlines())
        secrets = {k.removeprefix("CREDIT_HUB_").lower(): v for k, v in assignments.items()}
    else:
        url = f"sqlite:///{folder / 'hub.db'}"
    settings = Settings(
        database_url=url,
        secrets_file=folder / "secrets.json",
        **secrets,  # type: ignore[arg-type]
    )
    upgrade(settings)
    load_keyring(settings)  # on SQLite: write the secrets file once, before any server starts
    yield settings
    if SERVER_DATABASE_URL:
        _recreate_database(create=False)


@pytest.fixture(scope="module")
def sessions(hub_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(hub_settings)
    yield make_sessionmaker(engine)
    engine.dispose()


def new_department(sessions: sessionmaker[Session]) -> tuple[uuid.UUID, str]:
    """A department registered in a committed transaction: (client id, API key)."""
    with sessions.begin() as session:
        client = access.create_client(
            session,
            kind=ClientKind.DEPARTMENT,
            name="福州市市场监督管理局",
            uscc=factories.DEPARTMENT_USCC,
            standards=["administrative_penalty"],
            scopes=[],
            pushes_for=[],
        )
        _, key = access.issue_key(session, client)
        return client.id, key


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
        assert [v.superseded_at is None for v in kept] == [False] * (len(kept) - 1) + [True]
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
    start = threading.Barrier(THREADS)

    def work(worker: int) -> list[Push]:
        client = TestClient(app, raise_server_exceptions=False)
        try:
            start.wait(timeout=30)
            return [push(client, key, worker, round_) for round_ in range(ROUNDS)]
        finally:
            client.close()

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            pushes = [p for found in pool.map(work, range(THREADS)) for p in found]
    finally:
        app.state.engine.dispose()
    assert len(pushes) == THREADS * ROUNDS
    assert_history(sessions, department_id, pushes)


# -- (b) the real server with two worker processes, four pushing processes ----------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(settings: Settings, log_path: Path) -> Iterator[str]:
    """`credit-hub serve --workers 2` on a free port; yields its base URL once /readyz says so."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = os.environ | {"CREDIT_HUB_DATABASE_URL": settings.database_url}
    env["CREDIT_HUB_LOG_LEVEL"] = "warning"
    if settings.is_sqlite:
        env["CREDIT_HUB_SECRETS_FILE"] = str(settings.secrets_file)
    else:
        for name in SECRET_NAMES:
            secret = getattr(settings, name)
            env[f"CREDIT_HUB_{name.upper()}"] = secret.get_secret_value()
    command = [
        str(Path(sys.executable).with_name("credit-hub")),
        *("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--no-migrate"),
    ]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"the server exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready within 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)  # polling for readiness, not synchronizing the pushes
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


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
    with running_server(hub_settings, tmp_path / "server.log") as base_url:
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
