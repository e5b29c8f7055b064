"""File submissions as jobs in the database: enqueue, claim, process in chunks, finish.

A job is a `submission` row of kind "file". A worker claims it (PostgreSQL: `FOR UPDATE SKIP
LOCKED`; SQLite: the claim runs under `BEGIN IMMEDIATE`, one writer at a time) and holds a
lease that each chunk renews. Each chunk's records, rejected rows and progress (`rows_read`)
are committed in one transaction guarded by the claim token and the expected `rows_read`, so a
worker that lost its lease can never commit, and a job picked up after a crash resumes after
the last committed chunk: nothing is stored twice and the counts stay exact.

Atomic mode validates the whole file first (rejected rows are kept for the error file), then,
only if every row passed, stores every chunk in one transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session

from credit_hub.access.models import Client
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.clock import Clock
from credit_hub.config import Settings
from credit_hub.db import Database, table
from credit_hub.errors import IdempotencyKeyReused
from credit_hub.ingest import service
from credit_hub.ingest.models import Submission, SubmissionError
from credit_hub.ingest.readers import FileProblem, FileRow, Limits, RowSource, open_rows
from credit_hub.ingest.schemas import Counts, ErrorSummary, Mode, Receipt, Rejection
from credit_hub.ingest.submission_schemas import JobStatus
from credit_hub.keyring import Keyring
from credit_hub.records.models import Record, RecordVersion
from credit_hub.standards.registry import Standards, StandardVersion

log = structlog.get_logger()


class LeaseLost(RuntimeError):
    """Another worker took the job over (this one was too slow or presumed dead)."""


class Stopped(RuntimeError):
    """The worker is shutting down; the job goes back to the queue where it stands."""


@dataclass
class JobContext:
    standards: Standards
    keyring: Keyring
    clock: Clock
    chunk_rows: int = 1_000
    lease_seconds: int = 60
    max_attempts: int = 3
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def of(
        cls, settings: Settings, standards: Standards, keyring: Keyring, clock: Clock
    ) -> JobContext:
        return cls(
            standards,
            keyring,
            clock,
            chunk_rows=settings.job_chunk_rows,
            lease_seconds=settings.job_lease_seconds,
            max_attempts=settings.job_max_attempts,
            limits=Limits(settings.xlsx_max_uncompressed_bytes, settings.xlsx_max_ratio),
        )


@dataclass
class Tally:
    """What a job has done so far; lives in the submission row between chunks."""

    rows_read: int = 0
    bytes_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    warnings: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, job: Submission) -> Tally:
        saved = (job.report or {}).get("tally", {})
        return cls(
            rows_read=job.rows_read,
            bytes_read=job.bytes_read,
            created=job.created,
            updated=job.updated,
            unchanged=job.unchanged,
            rejected=job.rejected,
            errors=Counter({(c, p): n for c, p, n in saved.get("errors", [])}),
            warnings=Counter({(c, p): n for c, p, n in saved.get("warnings", [])}),
            examples=dict(saved.get("examples", {})),
        )

    def count(self, outcomes: list[dict[str, Any]]) -> Counter[str]:
        """Add stored records' outcomes (created, updated, unchanged); their counts."""
        kinds = Counter(o["outcome"] for o in outcomes)
        self.created += kinds["created"]
        self.updated += kinds["updated"]
        self.unchanged += kinds["unchanged"]
        return kinds

    def add(self, kind: str, found: list[Rejection]) -> None:
        counter = self.errors if kind == "errors" else self.warnings
        for r in found:
            counter[(r.code, r.pointer)] += 1
            self.examples.setdefault(f"{r.code} {r.pointer}", r.message)

    def saved(self) -> dict[str, Any]:
        return {
            "errors": [[c, p, n] for (c, p), n in self.errors.items()],
            "warnings": [[c, p, n] for (c, p), n in self.warnings.items()],
            "examples": self.examples,
        }

    def summary(self, kind: str) -> list[dict[str, Any]]:
        counter = self.errors if kind == "errors" else self.warnings
        return [
            ErrorSummary(
                code=c, pointer=p, count=n, example=self.examples.get(f"{c} {p}", "")
            ).model_dump()
            for (c, p), n in counter.most_common()
        ]

    @property
    def stored(self) -> int:
        return self.created + self.updated + self.unchanged


# -- enqueue --------------------------------------------------------------------------------


def enqueue(
    session: Session,
    *,
    client: Principal,
    found: StandardVersion,
    path: Path,
    fmt: str,
    encoding: str | None,
    mode: Mode,
    filename: str | None,
    size: int,
    sha256: str,
    sheet: str | None,
    columns: dict[str, Any] | None,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Submission, bool]:
    """Queue a file submission: (submission, replayed). With an Idempotency-Key seen before,
    the earlier submission (same file) or a 409 (another file)."""
    if idempotency_key is not None:
        earlier = session.scalar(
            select(Submission).where(
                Submission.client_id == client.id, Submission.idempotency_key == idempotency_key
            )
        )
        if earlier is not None:
            if earlier.body_sha256 != sha256:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different file; use a new key."
                )
            return earlier, True
    submission = Submission(
        id=uuid.UUID(path.stem) if _is_uuid(path.stem) else None,
        client_id=client.id,
        kind="file",
        standard=found.standard,
        version=found.version,
        mode=mode,
        status=JobStatus.QUEUED,
        idempotency_key=idempotency_key,
        body_sha256=sha256,
        format=fmt,
        encoding=encoding,
        filename=filename,
        file_path=str(path),
        size_bytes=size,
        options={"sheet": sheet} if sheet else None,
        report={"columns": columns} if columns else None,
        created_at=now,
    )
    session.add(submission)
    session.flush()
    audit.record(
        session,
        actor=client,
        action="submission.uploaded",
        submission_id=submission.id,
        payload={"standard": found.standard, "format": fmt, "size_bytes": size},
        at=now,
    )
    return submission, False


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- claim ----------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    return and_(
        Submission.kind == "file",
        or_(
            Submission.status == JobStatus.QUEUED,
            and_(Submission.status == JobStatus.RUNNING, Submission.lease_until < now),
        ),
    )


def claim(db: Database, ctx: JobContext, token: str) -> uuid.UUID | None:
    """Take the oldest queued (or abandoned) job, or None. The cheap read comes first so that
    an idle worker never takes SQLite's write lock."""
    now = ctx.clock.now()
    with db.read() as session:
        if session.scalar(select(Submission.id).where(_claimable(now)).limit(1)) is None:
            return None
    with db.write() as session:
        row = session.execute(
            select(Submission.id, Submission.started_at)
            .where(_claimable(now))
            .order_by(Submission.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        session.execute(
            update(Submission)
            .where(Submission.id == row.id)
            .values(
                status=JobStatus.RUNNING,
                claimed_by=token,
                lease_until=now + timedelta(seconds=ctx.lease_seconds),
                attempts=Submission.attempts + 1,
                started_at=row.started_at or now,
            )
        )
        job_id: uuid.UUID = row.id
        return job_id


# -- process --------------------------------------------------------------------------------


@dataclass
class _Job:
    """A claimed job: its row (detached), its caller and standard, the worker's token."""

    row: Submission
    client: Principal
    found: StandardVersion
    token: str
    tally: Tally


def process(
    db: Database,
    ctx: JobContext,
    job_id: uuid.UUID,
    token: str,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run a claimed job to its end (or until the worker stops or loses the lease). Every way
    out leaves the job final with a report, or back in the queue to be resumed."""
    with db.read() as session:
        row = session.get(Submission, job_id)
        assert row is not None
        client = session.get(Client, row.client_id)
        assert client is not None
        principal = Principal.of(client)
        session.expunge(row)
    bound = log.bind(submission_id=str(job_id), attempt=row.attempts)
    if row.claimed_by != token:
        return
    try:
        found = ctx.standards.resolve(row.standard, row.version)
    except Exception:
        _finish(
            db, ctx, row, token, Tally.of(row), FileProblem("standard", "The standard is gone.")
        )
        return
    job = _Job(row, principal, found, token, Tally.of(row))
    if row.attempts > ctx.max_attempts:
        problem = FileProblem(
            "interrupted",
            f"Processing was interrupted {row.attempts - 1} times; the file is given up.",
        )
        _finish(db, ctx, row, token, job.tally, problem)
        return
    bound.info("job_started", rows_done=row.rows_read)
    try:
        if row.mode == Mode.ATOMIC:
            _run_atomic(db, ctx, job, should_stop)
        else:
            _run_partial(db, ctx, job, should_stop)
    except FileProblem as problem:
        _finish(db, ctx, row, token, job.tally, problem)
    except LeaseLost:
        bound.warning("job_lease_lost")
    except Stopped:
        _release(db, row.id, token)
        bound.info("job_released", rows_done=job.tally.rows_read)
    except Exception as exc:
        bound.error("job_crashed", error=type(exc).__name__)
        if row.attempts >= ctx.max_attempts:
            failure = FileProblem("internal_error", "The hub failed to process the file.")
            _finish(db, ctx, row, token, Tally.of(_reload(db, row.id)), failure)
        else:
            _release(db, row.id, token)
    bound.info("job_ended")


def _reload(db: Database, job_id: uuid.UUID) -> Submission:
    with db.read() as session:
        row = session.get(Submission, job_id)
        assert row is not None
        session.expunge(row)
        return row


def _release(db: Database, job_id: uuid.UUID, token: str) -> None:
    with db.write() as session:
        session.execute(
            update(Submission)
            .where(Submission.id == job_id, Submission.claimed_by == token)
            .values(status=JobStatus.QUEUED, claimed_by=None, lease_until=None)
        )


def _chunks(rows: Iterator[FileRow], size: int) -> Iterator[list[FileRow]]:
    chunk: list[FileRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _skip(rows: Iterator[FileRow], count: int) -> None:
    for _ in range(count):
        if next(rows, None) is None:
            return


@contextmanager
def _open(job: _Job, ctx: JobContext) -> Iterator[RowSource]:
    path = Path(job.row.file_path or "")
    if not job.row.file_path or not path.is_file():
        raise FileProblem(
            "file_missing",
            "The uploaded file is no longer in the spool folder (is the spool shared by every "
            "worker?); upload it again.",
        )
    sheet = (job.row.options or {}).get("sheet")
    fmt, encoding = job.row.format or "csv", job.row.encoding
    with open_rows(path, fmt, encoding, job.found.engine, sheet=sheet, limits=ctx.limits) as source:
        yield source


@dataclass
class _Checked:
    checked: list[service.Checked]
    rejections: list[Rejection]  # `index` is the file's row number
    warnings: list[Rejection]


def _check(job: _Job, ctx: JobContext, chunk: list[FileRow]) -> _Checked:
    readable = [r for r in chunk if r.record is not None]
    rejections = [
        Rejection(index=r.number, source_id=None, pointer="", code=r.error[0], message=r.error[1])
        for r in chunk
        if r.error is not None
    ]
    checked, rejected, warnings = service.check_records(
        job.found, [r.record for r in readable], client=job.client, keyring=ctx.keyring
    )
    numbers = [r.number for r in readable]
    for item in checked:
        item.index = numbers[item.index]
    for r in rejected:
        r.index = numbers[r.index]
        if r.code == "duplicate_source_id":
            r.message = "The same source_id is in an earlier row of this file."
    for w in warnings:
        w.index = numbers[w.index]
    return _Checked(checked, rejections + rejected, warnings)


def _earlier_in_file(session: Session, job: _Job, source_ids: list[str]) -> set[str]:
    """Source ids whose current version this submission wrote: a row repeated in the file."""
    found: set[str] = set()
    for start in range(0, len(source_ids), 500):
        found.update(
            session.scalars(
                select(Record.source_id)
                .join(
                    RecordVersion,
                    and_(
                        RecordVersion.record_id == Record.id,
                        RecordVersion.version == Record.version,
                    ),
                )
                .where(
                    Record.department_id == job.client.id,
                    Record.standard == job.found.standard,
                    Record.source_id.in_(source_ids[start : start + 500]),
                    RecordVersion.submission_id == job.row.id,
                )
            )
        )
    return found


def _store(
    session: Session,
    job: _Job,
    ctx: JobContext,
    checked: list[service.Checked],
    now: datetime,
    *,
    more_to_come: bool = False,
) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Write checked rows under the job's submission: (outcomes, rejections found on the way).
    `more_to_come`: the transaction goes on with the next chunk (atomic mode)."""
    repeated = _earlier_in_file(session, job, [c.source_id for c in checked])
    late = [
        Rejection(
            index=c.index,
            source_id=c.source_id,
            pointer="/source_id",
            code="duplicate_source_id",
            message="The same source_id is in an earlier row of this file.",
        )
        for c in checked
        if c.source_id in repeated
    ]
    if repeated:
        checked = [c for c in checked if c.source_id not in repeated]
    outcomes, rejected, written = service.write_records(
        session,
        ctx.keyring,
        job.found,
        checked,
        client=job.client,
        submission_id=job.row.id,
        now=now,
        exclusive=more_to_come,
    )
    service.emit_changes(session, job.found, written, client=job.client, now=now)
    return outcomes, late + rejected


def _error_rows(
    job: _Job, ctx: JobContext, rows: dict[int, FileRow], rejections: list[Rejection]
) -> list[dict[str, Any]]:
    by_row: dict[int, list[Rejection]] = {}
    for r in rejections:
        by_row.setdefault(r.index, []).append(r)
    return [
        {
            "submission_id": job.row.id,
            "row": number,
            # The column holds 200 characters; a rejected row's id may be any length (PostgreSQL
            # would refuse it and fail the whole job). The full id is in the encrypted cells.
            "source_id": next((r.source_id[:200] for r in found if r.source_id), None),
            "errors": [{"pointer": r.pointer, "code": r.code, "message": r.message} for r in found],
            "cells_enc": ctx.keyring.encrypt(orjson.dumps(rows[number].cells)),
        }
        for number, found in sorted(by_row.items())
    ]


def _save_progress(
    session: Session, job: _Job, ctx: JobContext, tally: Tally, expected_rows: int, **values: Any
) -> None:
    """The guarded progress update: fails (rolling the chunk back) if the job changed hands."""
    now = ctx.clock.now()
    report = dict(job.row.report or {}) | {"tally": tally.saved()}
    result = session.execute(
        update(Submission)
        .where(
            Submission.id == job.row.id,
            Submission.claimed_by == job.token,
            Submission.status == JobStatus.RUNNING,
            Submission.rows_read == expected_rows,
        )
        .values(
            rows_read=tally.rows_read,
            bytes_read=tally.bytes_read,
            received=tally.rows_read,
            created=tally.created,
            updated=tally.updated,
            unchanged=tally.unchanged,
            rejected=tally.rejected,
            lease_until=now + timedelta(seconds=ctx.lease_seconds),
            report=report,
            **values,
        )
    )
    if getattr(result, "rowcount", 1) != 1:
        raise LeaseLost(str(job.row.id))
    job.row.report = report


def _copy(tally: Tally) -> Tally:
    return Tally(
        tally.rows_read,
        tally.bytes_read,
        tally.created,
        tally.updated,
        tally.unchanged,
        tally.rejected,
        Counter(tally.errors),
        Counter(tally.warnings),
        dict(tally.examples),
    )


def _audit_pushed(session: Session, job: _Job, result: str, **counts: int) -> None:
    """The audit event of records a file stored (per chunk, or at once in atomic mode)."""
    audit.record(
        session,
        actor=job.client,
        action="records.pushed",
        submission_id=job.row.id,
        result=result,
        payload={"standard": job.found.standard, "version": job.found.version, **counts},
    )


def _write_chunk(
    job: _Job,
    ctx: JobContext,
    chunk: list[FileRow],
    found: _Checked,
    source: RowSource,
    session: Session,
    *,
    store: bool,
) -> Tally:
    """One chunk's transaction: its records (if `store`), rejected rows, audit event and
    progress; the job's tally after it (a new copy on each run, so a run again starts over)."""
    tally = _copy(job.tally)
    rejections = found.rejections
    if store:
        outcomes, late = _store(session, job, ctx, found.checked, ctx.clock.now())
        rejections = rejections + late
        kinds = tally.count(outcomes)
        if outcomes:
            _audit_pushed(
                session,
                job,
                "chunk",
                first_row=chunk[0].number,
                last_row=chunk[-1].number,
                **{k: kinds[k] for k in ("created", "updated", "unchanged")},
            )
    errors = _error_rows(job, ctx, {r.number: r for r in chunk}, rejections)
    if errors:
        session.execute(insert(table(SubmissionError)), errors)
    tally.rejected += len(errors)
    tally.add("errors", rejections)
    tally.add("warnings", found.warnings)
    expected = tally.rows_read
    tally.rows_read += len(chunk)
    tally.bytes_read = source.position()
    _save_progress(session, job, ctx, tally, expected, rows_total=source.rows_total)
    return tally


def _run_chunks(
    db: Database, ctx: JobContext, job: _Job, should_stop: Callable[[], bool], *, store: bool
) -> None:
    """Read the rest of the file chunk by chunk; one transaction per chunk (partial mode stores
    records, atomic mode's first pass only keeps the rejected rows)."""
    with _open(job, ctx) as source:
        if source.columns is not None and not (job.row.report or {}).get("columns"):
            job.row.report = dict(job.row.report or {}) | {
                "columns": {"headers": source.columns.headers, **source.columns.describe()}
            }
        rows = source.rows
        _skip(rows, job.tally.rows_read)
        for chunk in _chunks(rows, ctx.chunk_rows):
            if should_stop():
                raise Stopped
            found = _check(job, ctx, chunk)
            # A chunk PostgreSQL ends as one side of a deadlock runs again, as a push does.
            write = partial(_write_chunk, job, ctx, chunk, found, source, store=store)
            job.tally = db.write_retrying(write)


def _run_partial(db: Database, ctx: JobContext, job: _Job, should_stop: Callable[[], bool]) -> None:
    _run_chunks(db, ctx, job, should_stop, store=True)
    _finish(db, ctx, job.row, job.token, job.tally, None)


class _AtomicRejected(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _run_atomic(db: Database, ctx: JobContext, job: _Job, should_stop: Callable[[], bool]) -> None:
    if (job.row.report or {}).get("phase") != "store":
        _run_chunks(db, ctx, job, should_stop, store=False)
        if job.tally.rejected or job.tally.rows_read == 0:
            _finish(db, ctx, job.row, job.token, job.tally, None)
            return
    # Every row passed: store them all in one transaction (a crash rolls it all back).
    tally = _copy(job.tally)
    try:
        with _open(job, ctx) as source, db.write() as session:
            job.row.report = dict(job.row.report or {}) | {"phase": "store"}
            _save_progress(session, job, ctx, tally, tally.rows_read)
            errors: list[dict[str, Any]] = []
            for chunk in _chunks(source.rows, ctx.chunk_rows):
                if should_stop():
                    raise Stopped
                found = _check(job, ctx, chunk)
                outcomes, late = _store(
                    session, job, ctx, found.checked, ctx.clock.now(), more_to_come=True
                )
                rejections = found.rejections + late
                if rejections:
                    errors += _error_rows(job, ctx, {r.number: r for r in chunk}, rejections)
                    tally.add("errors", rejections)
                    continue
                tally.count(outcomes)
            if errors:
                raise _AtomicRejected(errors)
            _audit_pushed(
                session,
                job,
                "atomic",
                created=tally.created,
                updated=tally.updated,
                unchanged=tally.unchanged,
            )
            _finish(db, ctx, job.row, job.token, tally, None, session=session)
    except _AtomicRejected as rejected:
        tally = _copy(job.tally)
        tally.created = tally.updated = tally.unchanged = 0
        with db.write() as session:
            session.execute(insert(table(SubmissionError)), rejected.errors)
            tally.rejected = len(rejected.errors)
            for error in rejected.errors:
                for e in error["errors"]:
                    tally.errors[(e["code"], e["pointer"])] += 1
                    tally.examples.setdefault(f"{e['code']} {e['pointer']}", e["message"])
            _finish(db, ctx, job.row, job.token, tally, None, session=session)
    _unlink(job.row)


def _unlink(row: Submission) -> None:
    if row.file_path:
        Path(row.file_path).unlink(missing_ok=True)


# -- finish ---------------------------------------------------------------------------------


def _finish(
    db: Database,
    ctx: JobContext,
    row: Submission,
    token: str,
    tally: Tally,
    problem: FileProblem | None,
    *,
    session: Session | None = None,
) -> None:
    """Make the job final with its report and signed receipt; drop the spooled file."""
    if session is None:
        if problem is not None:  # the in-memory tally may be ahead of what was committed
            fresh = _reload(db, row.id)
            tally, row.report = Tally.of(fresh), fresh.report
        with db.write() as own:
            _finish(db, ctx, row, token, tally, problem, session=own)
        _unlink(row)
        return
    now = ctx.clock.now()
    if problem is None and tally.rows_read == 0:
        problem = FileProblem("no_rows", "The file has a header but no rows.")
    atomic = row.mode == Mode.ATOMIC
    if problem is not None:
        status = JobStatus.FAILED
    elif atomic and tally.rejected:
        status = JobStatus.REJECTED
    else:
        status = JobStatus(service.overall_status(tally.stored, tally.rejected))
    counts = Counts(
        received=tally.rows_read,
        created=tally.created,
        updated=tally.updated,
        unchanged=tally.unchanged,
        rejected=tally.rejected,
    )
    received_at = row.created_at
    fields = {
        "submission_id": str(row.id),
        "client_id": str(row.client_id),
        "standard": row.standard,
        "version": row.version,
        "mode": str(row.mode),
        "body_sha256": row.body_sha256,
        "received_at": received_at.isoformat(),
        "status": str(status),
        "counts": counts.model_dump(),
    }
    payload = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
    receipt = Receipt(
        signed_payload=payload,
        signature=ctx.keyring.sign(payload.encode()),
        key_id=ctx.keyring.key_id(),
    )
    found = ctx.standards.by_id.get(row.standard)
    version = found.versions.get(row.version) if found else None
    report = {
        "columns": (row.report or {}).get("columns"),
        "tally": tally.saved(),
        "error_summary": tally.summary("errors"),
        "warning_summary": tally.summary("warnings"),
        "file_error": problem.as_dict() if problem else None,
        "deprecation": version.warnings(received_at.date()) if version else [],
    }
    result = session.execute(
        update(Submission)
        .where(Submission.id == row.id, Submission.claimed_by == token)
        .values(
            status=status,
            received=counts.received,
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            rejected=counts.rejected,
            rows_read=tally.rows_read,
            bytes_read=max(tally.bytes_read, 0),
            report=report,
            receipt=receipt.model_dump(),
            finished_at=now,
            claimed_by=None,
            lease_until=None,
            file_path=None,
        )
    )
    if getattr(result, "rowcount", 1) != 1:
        raise LeaseLost(str(row.id))
    client = session.get(Client, row.client_id)
    audit.record(
        session,
        actor=Principal.of(client) if client else None,
        action="submission.processed",
        submission_id=row.id,
        result=str(status),
        payload={"standard": row.standard, "version": row.version, **counts.model_dump()},
    )
    log.info("job_finished", submission_id=str(row.id), status=str(status), **counts.model_dump())


# -- the worker -----------------------------------------------------------------------------


class Worker:
    """Claims and processes jobs until stopped: a thread of the service, or `credit-hub worker`."""

    def __init__(self, db: Database, ctx: JobContext, *, name: str, poll_seconds: float = 1.0):
        self.db, self.ctx, self.name = db, ctx, name[:40]
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def run_once(self) -> bool:
        """Claim one job and run it; False when the queue is empty."""
        token = f"{self.name}:{uuid.uuid4().hex[:16]}"
        job_id = claim(self.db, self.ctx, token)
        if job_id is None:
            return False
        process(self.db, self.ctx, job_id, token, should_stop=self.stopping.is_set)
        return True

    def run_until_idle(self) -> int:
        done = 0
        while self.run_once():
            done += 1
        return done

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # the database is away: try again after a pause
                log.error("worker_error", error=type(exc).__name__)
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="credit-hub-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
