"""The maintenance job: end publication on time, forget on time, say what was done.

Run by `credit-hub maintenance`, `POST /v1/admin/maintenance` and the in-process schedule
(`schedule()`, a daemon thread the app starts). A run finds what is due in a read-only
transaction and then changes it in a short write transaction that checks every row again, so
the scan of the record table never holds SQLite's only write lock (profile reads append audit
events, and waited seconds behind it). Every step is idempotent, so overlapping runs (two
workers) do no harm; on PostgreSQL an advisory lock makes a second concurrent run skip.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, exists, or_, select, text, update
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.changes import service as changes
from credit_hub.changes.service import Change, ChangeKind
from credit_hub.clock import Clock
from credit_hub.db import Database
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.selfservice.models import SubjectSession
from credit_hub.sqlite_threads import lower_priority
from credit_hub.subjects.models import Subject, SubjectKind

log = structlog.get_logger()

CHUNK = 500
_LOCK_KEY = 0x6D61696E  # "main": one maintenance run at a time on PostgreSQL


@dataclass(frozen=True)
class MaintenanceReport:
    on: date
    expired: int
    purged_records: int
    purged_subjects: int
    sessions_deleted: int
    skipped: bool = False


@dataclass(frozen=True)
class Due:
    """The records a run found due, as of `on`: candidates only, checked again when written."""

    on: date
    to_expire: list[uuid.UUID]
    to_purge: list[uuid.UUID]


def _chunks(values: Sequence[Any]) -> Any:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _expiring(today: date) -> Any:
    return (Record.status == RecordStatus.ACTIVE, Record.publish_until < today)


def _purgeable(today: date) -> Any:
    return (Record.retain_until < today, Record.purged_at.is_(None))


def find_due(session: Session, today: date) -> Due:
    """Scan for what is due, in one pass over the record table; reads only, so it may run in
    a read-only transaction."""
    expiring, purgeable = and_(*_expiring(today)), and_(*_purgeable(today))
    rows = session.execute(
        select(Record.id, expiring, purgeable).where(or_(expiring, purgeable))
    ).all()
    return Due(
        today,
        [record_id for record_id, expires, _ in rows if expires],
        [record_id for record_id, _, purges in rows if purges],
    )


def apply(
    session: Session, due: Due, *, now: datetime, actor: Principal | None = None
) -> MaintenanceReport:
    """Change what `due` names, in the caller's write transaction. Each update checks its
    condition again, so a record changed since the scan (or by a concurrent run) is left as
    it is and not counted."""
    today = due.on
    if session.get_bind().dialect.name == "postgresql":
        got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if not got:
            return MaintenanceReport(today, 0, 0, 0, 0, skipped=True)
    expired = _expire(session, due.to_expire, today, now)
    purged_records, purged_subjects = _purge(session, due.to_purge, today, now)
    sessions = session.execute(
        delete(SubjectSession)
        .where(SubjectSession.expires_at < now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    report = MaintenanceReport(today, expired, purged_records, purged_subjects, sessions)
    audit.record(
        session,
        actor=actor,
        actor_kind=None if actor else "system",
        action="maintenance.ran",
        result="ok",
        payload={k: v for k, v in asdict(report).items() if k not in ("on", "skipped")}
        | {"on": today.isoformat()},
        at=now,
    )
    return report


def run_once(db: Database, clock: Clock, *, actor: Principal | None = None) -> MaintenanceReport:
    """One run as two transactions: the scan reads, then a short write changes what is due.

    The scan runs in a thread of its own at a lower CPU priority: it reads the whole record
    table (about a second of a core at 3M records, in every worker at once), and at normal
    priority the requests served meanwhile waited for the cores. The write keeps the caller's
    priority: a low-priority thread holding SQLite's write lock would keep every audit append
    waiting longer."""
    now = clock.now()
    with ThreadPoolExecutor(1, "credit-hub-maintenance-scan", lower_priority) as scanner:
        due = scanner.submit(_scan, db, now.date()).result()
    with db.write() as session:
        report = apply(session, due, now=now, actor=actor)
    log.info("maintenance_ran", **{k: str(v) for k, v in asdict(report).items()})
    return report


def _scan(db: Database, today: date) -> Due:
    with db.read() as session:
        return find_due(session, today)


def _expire(session: Session, ids: Sequence[uuid.UUID], today: date, now: datetime) -> int:
    """Active records past their maximum publication period become `expired`."""
    statement = (
        update(Record)
        .where(*_expiring(today))
        .values(status=RecordStatus.EXPIRED, updated_at=now)
        .returning(
            Record.id, Record.version, Record.subject_id, Record.standard, Record.department_id
        )
        .execution_options(synchronize_session=False)
    )
    ended = [
        row
        for chunk in _chunks(ids)
        for row in session.execute(statement.where(Record.id.in_(chunk)))
    ]
    changes.emit(session, [Change.about(r, ChangeKind.PUBLICATION_ENDED, now) for r in ended])
    return len(ended)


def _purge(
    session: Session, ids: Sequence[uuid.UUID], today: date, now: datetime
) -> tuple[int, int]:
    """Past retention: erase the payload and the encrypted identifiers of every version; a
    natural person's encrypted ID number goes once none of its records is retained."""
    tombstone = {"purged": True, "purged_on": today.isoformat()}
    subject_ids: set[uuid.UUID] = set()
    purged = 0
    for chunk in _chunks(ids):
        rows = session.execute(
            update(Record)
            .where(Record.id.in_(chunk), *_purgeable(today))
            .values(purged_at=now, updated_at=now, fine_amount_wan=None)
            .returning(Record.id, Record.subject_id)
            .execution_options(synchronize_session=False)
        ).all()
        if not rows:
            continue
        session.execute(
            update(RecordVersion)
            .where(RecordVersion.record_id.in_([r.id for r in rows]))
            .values(data=tombstone, originals=None, personal_enc=None)
            .execution_options(synchronize_session=False)
        )
        subject_ids.update(r.subject_id for r in rows)
        purged += len(rows)
    purged_subjects = 0
    retained = exists().where(Record.subject_id == Subject.id, Record.purged_at.is_(None))
    for chunk in _chunks(sorted(subject_ids, key=str)):
        result = session.execute(
            update(Subject)
            .where(
                Subject.id.in_(chunk),
                Subject.kind == SubjectKind.NATURAL_PERSON,
                Subject.person_id_enc.is_not(None),
                ~retained,
            )
            .values(person_id_enc=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        purged_subjects += result.rowcount  # type: ignore[attr-defined]
    return purged, purged_subjects


def next_run(now: datetime, *, at: time, every_hours: float) -> datetime:
    """The first scheduled run after `now`: `at` (UTC, the hub's calendar) on any day, plus
    whole multiples of `every_hours`."""
    step = timedelta(hours=every_hours)
    anchor = datetime.combine(now.date(), at, tzinfo=UTC)
    return anchor + ((now - anchor) // step + 1) * step


def schedule(
    db: Database, clock: Clock, *, every_hours: float, at: time
) -> tuple[threading.Thread, threading.Event]:
    """Start a daemon thread running maintenance at `next_run`'s times; set the event to stop.

    Runs keep to the clock, not to the process's start: every worker runs at the hour the
    operator chose (`CREDIT_HUB_MAINTENANCE_AT`), and a restart at a busy hour does not scan
    the record table."""
    stop = threading.Event()

    def loop() -> None:
        due = clock.now()
        while True:
            due = next_run(max(clock.now(), due), at=at, every_hours=every_hours)
            if stop.wait(max(0.0, (due - clock.now()).total_seconds())):
                return
            try:
                run_once(db, clock)
            except Exception as exc:  # a failed run is logged; the next one tries again
                log.error("maintenance_failed", error=type(exc).__name__)

    thread = threading.Thread(target=loop, name="credit-hub-maintenance", daemon=True)
    thread.start()
    return thread, stop
