"""File submissions with real processes and real commits: a `credit-hub worker` killed with
SIGKILL mid-job and the job finished by another, exactly once; `credit-hub push` against a
running `credit-hub serve`.

Like test_concurrency.py, the module builds its own database (a temp SQLite file, or a separate
PostgreSQL database next to CREDIT_HUB_TEST_DATABASE_URL).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.app import create_app
from credit_hub.audit.models import AuditEvent
from credit_hub.config import Settings
from credit_hub.ingest.models import Submission
from credit_hub.records.models import Record, RecordVersion
from tests import factories
from tests.live import (
    BIN,
    dedicated_settings,
    environment,
    new_department,
    running_server,
    sessions_on,
)

DATABASE_NAME = "credit_hub_test_jobs"
STANDARD = "administrative_penalty"


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with dedicated_settings(tmp_path_factory.mktemp("jobs"), DATABASE_NAME) as settings:
        yield settings


@pytest.fixture(scope="module")
def sessions(hub_settings: Settings) -> Iterator[sessionmaker[Session]]:
    with sessions_on(hub_settings) as made:
        yield made


def job(sessions: sessionmaker[Session], submission_id: str) -> Submission:
    with sessions() as session:
        found = session.get(Submission, uuid.UUID(submission_id))
        assert found is not None
        session.expunge(found)
        return found


def stored_counts(sessions: sessionmaker[Session], department_id: uuid.UUID) -> tuple[int, int]:
    with sessions() as session:
        records = session.scalar(
            select(func.count()).select_from(Record).where(Record.department_id == department_id)
        )
        versions = session.scalar(
            select(func.count())
            .select_from(RecordVersion)
            .join(Record, Record.id == RecordVersion.record_id)
            .where(Record.department_id == department_id)
        )
    return int(records or 0), int(versions or 0)


def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_once(
    hub_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    department_id, key = new_department(sessions)
    total = 3000
    bad_rows = {500, 2500}
    records = [
        factories.penalty(n, counterpart_uscc="914403001922038217")
        if n in bad_rows
        else factories.penalty(n)
        for n in range(1, total + 1)
    ]
    body = b"".join(orjson.dumps(r) + b"\n" for r in records)
    app = create_app(hub_settings)
    with TestClient(app) as client:
        response = client.post(
            "/v1/submissions",
            content=body,
            params={"standard": STANDARD},
            headers={"Authorization": f"Bearer {key}"},
        )
    app.state.engine.dispose()
    assert response.status_code == 202, response.text
    submission_id = response.json()["submission_id"]
    env = environment(
        hub_settings, CREDIT_HUB_JOB_CHUNK_ROWS="25", CREDIT_HUB_JOB_LEASE_SECONDS="2"
    )
    with (tmp_path / "worker.log").open("wb") as log:
        first = subprocess.Popen(
            [str(BIN / "credit-hub"), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while job(sessions, submission_id).rows_read < 300:
            assert first.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    killed = job(sessions, submission_id)
    assert killed.status == "running"
    assert 300 <= killed.rows_read < total, "the kill came too late to test a resume"
    assert stored_counts(sessions, department_id)[0] == killed.created

    time.sleep(2.5)  # the dead worker's lease runs out
    finished = subprocess.run(
        [str(BIN / "credit-hub"), "worker", "--until-idle"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    done = job(sessions, submission_id)
    assert done.status == "partially_accepted"
    assert done.attempts == 2
    assert (done.rows_read, done.created, done.rejected) == (total, total - 2, 2)
    assert (done.updated, done.unchanged) == (0, 0)
    assert stored_counts(sessions, department_id) == (total - 2, total - 2)
    with sessions() as session:
        chunks = session.scalars(
            select(AuditEvent.payload).where(
                AuditEvent.submission_id == done.id, AuditEvent.action == "records.pushed"
            )
        ).all()
    assert sum(p["created"] for p in chunks) == total - 2  # no chunk audited twice
    assert not list(Path(str(hub_settings.spool_dir)).glob(f"{submission_id}*"))


def test_credit_hub_push_against_a_running_service(
    hub_settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    department_id, key = new_department(sessions)
    app = create_app(hub_settings)
    props = app.state.standards.get(STANDARD).current.engine.properties
    app.state.engine.dispose()
    records = [factories.penalty(n + 5000) for n in range(40)]
    records[7]["counterpart_uscc"] = "914403001922038217"
    names = list(records[0])
    rows = [[props[n]["title"] for n in names]]
    rows += [
        [";".join(r[n]) if isinstance(r[n], list) else str(r[n]) for n in names] for r in records
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    path = tmp_path / "处罚信息.csv"
    path.write_bytes(buffer.getvalue().encode("gb18030"))

    with running_server(
        hub_settings, tmp_path / "server.log", CREDIT_HUB_WORKER_POLL_SECONDS="0.2"
    ) as base_url:
        env = os.environ | {"CREDIT_HUB_URL": base_url, "CREDIT_HUB_KEY": key}
        pushed = subprocess.run(
            [str(BIN / "credit-hub"), "push", str(path), "--standard", STANDARD],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        out = pushed.stdout.decode()
        assert pushed.returncode == 1, out + pushed.stderr.decode()
        assert "partially_accepted" in out
        assert "rejected 1" in out
        error_file = Path(out.strip().splitlines()[-1])
        assert error_file == tmp_path / "处罚信息.errors.csv"
        got = list(csv.reader(io.StringIO(error_file.read_bytes().decode("gb18030"))))
        assert got[1][got[0].index("_error_codes")] == "format.uscc"

        got[1][got[0].index("统一社会信用代码")] = factories.make_uscc(5007 + 1000)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(got)
        error_file.write_bytes(buffer.getvalue().encode("gb18030"))
        again = subprocess.run(
            [
                str(BIN / "credit-hub"),
                *("push", str(error_file), "--standard", STANDARD, "--url", base_url),
                *("--key", key),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
        assert "accepted" in again.stdout.decode()
    assert stored_counts(sessions, department_id) == (40, 40)
