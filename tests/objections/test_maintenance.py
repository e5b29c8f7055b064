"""Publication end and the retention purge, on a FixedClock: through the operator's route,
the `credit-hub maintenance` command and the in-process schedule."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from credit_hub import cli
from credit_hub.audit.models import AuditEvent
from credit_hub.changes.models import ChangeEvent
from credit_hub.clock import FixedClock
from credit_hub.config import get_settings
from credit_hub.objections import maintenance
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.sqlite_threads import BACKGROUND_NICENESS
from credit_hub.subjects.models import Subject
from tests import conftest, factories
from tests.conftest import Caller
from tests.objections.due_process import push

COUNTS = ("expired", "purged_records", "purged_subjects")


def run(client: TestClient, operator: Caller) -> dict[str, int]:
    response = client.post("/v1/admin/maintenance", headers=operator.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return {k: body[k] for k in COUNTS}


def test_publication_ends_then_retention_purges(
    app_client: TestClient,
    department: Caller,
    operator: Caller,
    agency: Caller,
    clock: FixedClock,
    session: Session,
) -> None:
    uscc = factories.make_uscc(800)
    outcomes = push(
        app_client,
        department,
        [factories.penalty(1, counterpart_uscc=uscc), factories.person_penalty(2)],
    )
    ids = [uuid.UUID(o["record_id"]) for o in outcomes]
    person = session.get(Subject, uuid.UUID(outcomes[1]["subject_id"]))
    assert person is not None
    assert person.person_id_enc is not None
    assert run(app_client, operator) == {k: 0 for k in COUNTS}
    assert app_client.post("/v1/admin/maintenance", headers=agency.headers).status_code == 403

    clock.at = datetime(2027, 4, 3, 2, 0, tzinfo=UTC)  # the year of publication is over
    assert run(app_client, operator) == {"expired": 2, "purged_records": 0, "purged_subjects": 0}
    for record_id in ids:
        stored = session.get(Record, record_id)
        assert stored is not None
        session.refresh(stored)
        assert (stored.status, stored.purged_at) == ("expired", None)

    clock.at = datetime(2032, 4, 3, 2, 0, tzinfo=UTC)  # five years after publication ended
    assert run(app_client, operator) == {"expired": 0, "purged_records": 2, "purged_subjects": 1}
    session.expire_all()
    versions = session.scalars(select(RecordVersion).where(RecordVersion.record_id.in_(ids))).all()
    assert {(v.personal_enc, str(v.data)) for v in versions} == {
        (None, str({"purged": True, "purged_on": "2032-04-03"}))
    }
    records = session.scalars(select(Record).where(Record.id.in_(ids))).all()
    assert {(r.fine_amount_wan, r.purged_at is not None) for r in records} == {(None, True)}
    person = session.get(Subject, person.id)
    assert person is not None
    assert person.person_id_enc is None
    event = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "maintenance.ran")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).one()
    assert event.payload is not None
    assert (event.payload["purged_records"], event.payload["purged_subjects"]) == (2, 1)
    assert run(app_client, operator) == {k: 0 for k in COUNTS}  # idempotent


def test_maintenance_runs_once_in_process(session: Session, department: Caller) -> None:
    report = maintenance.run_once(
        conftest.TestDatabase(session), FixedClock(datetime(2040, 1, 1, tzinfo=UTC))
    )
    assert not report.skipped


@pytest.mark.parametrize(
    ("now", "every_hours", "expected"),
    [
        (datetime(2026, 11, 27, 0, 5, tzinfo=UTC), 24, datetime(2026, 11, 27, 0, 10, tzinfo=UTC)),
        (datetime(2026, 11, 27, 0, 10, tzinfo=UTC), 24, datetime(2026, 11, 28, 0, 10, tzinfo=UTC)),
        (datetime(2026, 11, 27, 23, 59, tzinfo=UTC), 24, datetime(2026, 11, 28, 0, 10, tzinfo=UTC)),
        (datetime(2026, 11, 27, 12, 0, tzinfo=UTC), 6, datetime(2026, 11, 27, 12, 10, tzinfo=UTC)),
        (datetime(2026, 11, 27, 0, 5, tzinfo=UTC), 6, datetime(2026, 11, 27, 0, 10, tzinfo=UTC)),
        (
            datetime(2026, 11, 27, 12, 10, 1, tzinfo=UTC),
            6,
            datetime(2026, 11, 27, 18, 10, tzinfo=UTC),
        ),
        (datetime(2026, 11, 27, 0, 5, tzinfo=UTC), 48, datetime(2026, 11, 27, 0, 10, tzinfo=UTC)),
    ],
)
def test_runs_keep_to_the_clock_not_to_the_start(
    now: datetime, every_hours: float, expected: datetime
) -> None:
    assert maintenance.next_run(now, at=time(0, 10), every_hours=every_hours) == expected


class WatchedDatabase(conftest.TestDatabase):
    """The test's Database, noting each statement with whether a write transaction was open,
    the thread and niceness of each read, and signalling each write's end."""

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.writing = False
        self.written = threading.Event()
        self.statements: list[tuple[bool, str]] = []
        self.readers: list[tuple[str, int]] = []  # thread name, niceness

    def note(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append((self.writing, statement))

    @contextmanager
    def read(self) -> Iterator[Session]:
        self.readers.append((threading.current_thread().name, _niceness()))
        with super().read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        self.writing = True
        try:
            with super().write() as session:
                yield session
        finally:
            self.writing = False
        self.written.set()


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_run_due_now_runs_and_the_schedule_stops_with_the_app(session: Session) -> None:
    db = WatchedDatabase(session)
    clock = FixedClock(datetime(2040, 1, 1, 0, 10, tzinfo=UTC) - timedelta(milliseconds=50))
    thread, stop = maintenance.schedule(db, clock, every_hours=24, at=time(0, 10))
    assert thread.daemon
    assert db.written.wait(10)  # the run at 00:10; the next one is a day later
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    ran = session.scalars(select(AuditEvent).where(AuditEvent.action == "maintenance.ran")).all()
    assert [event.payload["on"] for event in ran if event.payload] == ["2040-01-01"]


def test_maintenance_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDIT_HUB_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CREDIT_HUB_SECRETS_FILE", str(tmp_path / "secrets.json"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["maintenance"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "0 record(s) expired" in result.output


def test_the_scan_runs_outside_the_write_transaction(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    push(app_client, department, [factories.penalty(1), factories.person_penalty(2)])
    db = WatchedDatabase(session)
    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", db.note)
    try:
        report = maintenance.run_once(db, FixedClock(datetime(2032, 4, 3, 2, 0, tzinfo=UTC)))
    finally:
        event.remove(engine, "before_cursor_execute", db.note)
    assert (report.expired, report.purged_records) == (2, 2)
    scans = [
        writing
        for writing, statement in db.statements
        if statement.lstrip().upper().startswith("SELECT")
        and "publish_until" in statement
        and "retain_until" in statement
    ]
    assert scans == [False]  # one pass, read-only
    assert any(writing and "UPDATE record" in statement for writing, statement in db.statements)
    # In a thread of its own, at a lower CPU priority; the caller's thread keeps its own.
    [(thread, niceness)] = db.readers
    assert thread.startswith("credit-hub-maintenance-scan")
    assert niceness == min(19, _niceness() + BACKGROUND_NICENESS)


def test_records_changed_after_the_scan_are_left_as_they_are(
    app_client: TestClient, department: Caller, session: Session
) -> None:
    outcomes = push(app_client, department, [factories.penalty(1), factories.penalty(2)])
    kept, ended = (uuid.UUID(o["record_id"]) for o in outcomes)
    db = conftest.TestDatabase(session)
    year_after = datetime(2027, 4, 3, 2, 0, tzinfo=UTC)
    due = maintenance.find_due(session, year_after.date())
    assert set(due.to_expire) == {kept, ended}
    with db.write() as writing:  # withdrawn between the scan and the write
        writing.execute(
            update(Record).where(Record.id == kept).values(status=RecordStatus.WITHDRAWN)
        )
    with db.write() as writing:
        report = maintenance.apply(writing, due, now=year_after)
    assert report.expired == 1
    session.expire_all()
    assert {r.id: r.status for r in session.scalars(select(Record))} == {
        kept: "withdrawn",
        ended: "expired",
    }
    feed = session.scalars(select(ChangeEvent).where(ChangeEvent.kind == "publication_ended"))
    assert [c.record_id for c in feed] == [ended]

    purge_time = datetime(2032, 4, 3, 2, 0, tzinfo=UTC)
    due = maintenance.find_due(session, purge_time.date())
    assert set(due.to_purge) == {kept, ended}
    with db.write() as writing:
        assert maintenance.apply(writing, due, now=purge_time).purged_records == 2
    with db.write() as writing:  # a second run with the same scan: purged already
        again = maintenance.apply(writing, due, now=purge_time)
    assert (again.expired, again.purged_records) == (0, 0)
