"""Rules of a push: check every record, then store the good ones in sets, with a receipt.

Checking (validation, normalization, the department's right to push the record) needs no
database and runs before the write transaction opens, and so does preparing the rows (ids,
values in the driver's form): on SQLite the write lock is held for the writes only. Storing
resolves subjects and finds existing records with a fixed number of set queries, then inserts
and updates in bulk.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Row, Select, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from credit_hub import bulk
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.changes import service as changes
from credit_hub.changes.service import Change, ChangeKind
from credit_hub.db import new_id, new_ids, table
from credit_hub.errors import (
    Forbidden,
    IdempotencyKeyReused,
    RecordsInvalid,
    invalid_field,
)
from credit_hub.ingest.models import Submission
from credit_hub.ingest.schemas import (
    Counts,
    ErrorSummary,
    Mode,
    Receipt,
    Rejection,
    SubmissionReport,
    SubmissionStatus,
)
from credit_hub.keyring import Keyring
from credit_hub.objections.minors import withheld_reason
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.standards.engine import Outcome
from credit_hub.standards.registry import StandardVersion
from credit_hub.standards.service import source_id_of
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects import service as subjects

RETENTION_YEARS = 5


@dataclass(frozen=True)
class Batch:
    standard: str
    version: str | None
    mode: Mode
    records: list[Any]


@dataclass(slots=True)
class Checked:
    index: int
    source_id: str
    outcome: Outcome
    content_hash: str
    data: dict[str, Any]
    personal_enc: bytes | None


def parse_batch(body: Any, *, max_records: int) -> Batch:
    """The envelope of `POST /v1/records`, with a precise problem for each way it can be wrong."""

    if not isinstance(body, dict):
        raise invalid_field("", "type", "The body must be a JSON object {standard, mode, records}.")
    unknown = sorted(set(body) - {"standard", "version", "mode", "records"})
    if unknown:
        raise invalid_field(
            f"/{unknown[0]}", "additional_property", f"Unknown member {unknown[0]!r}."
        )
    standard, version, mode = body.get("standard"), body.get("version"), body.get("mode", "partial")
    if not isinstance(standard, str) or not standard:
        raise invalid_field("/standard", "required", "'standard' (a standard id) is required.")
    if version is not None and not isinstance(version, str):
        raise invalid_field("/version", "type", "'version' must be a string such as \"1.0\".")
    if mode not in (Mode.PARTIAL, Mode.ATOMIC):
        raise invalid_field("/mode", "enum", '\'mode\' must be "partial" or "atomic".')
    records = body.get("records")
    if not isinstance(records, list):
        raise invalid_field("/records", "type", "'records' must be a list of records.")
    if not records:
        raise invalid_field(
            "/records", "min_items", "'records' is empty: push one or more records."
        )
    if len(records) > max_records:
        raise invalid_field(
            "/records",
            "max_items",
            f"At most {max_records} records per push; {len(records)} given.",
        )
    return Batch(standard, version, Mode(mode), records)


def authorize(client: Principal, standard: str) -> None:
    if not client.may_use(standard):
        raise Forbidden(f"This department is not registered to push {standard!r}.")


def check_records(
    found: StandardVersion,
    records: Sequence[Any],
    *,
    client: Principal,
    keyring: Keyring,
    first_index: int = 0,
) -> tuple[list[Checked], list[Rejection], list[Rejection]]:
    """(records fit to store, rejections, warnings). Touches no database."""
    allowed_sources = {client.uscc, *client.pushes_for} - {None}
    engine = found.engine
    personal = engine.personal_fields
    kinds = engine.kinds
    good: list[Checked] = []
    rejected: list[Rejection] = []
    warnings: list[Rejection] = []
    seen: dict[str, int] = {}
    for offset, raw in enumerate(records):
        index = first_index + offset
        outcome = engine.check(raw)
        if not outcome.ok or outcome.derived is None or outcome.record is None:
            source_id = source_id_of(found, raw)
            rejected.extend(
                Rejection(index=index, source_id=source_id, **v.as_dict())
                for v in outcome.violations
            )
            continue
        derived, record = outcome.derived, outcome.record
        source_id = derived.source_id
        if derived.data_source_uscc not in allowed_sources:
            field = engine.data_source.get("uscc_field", "")
            rejected.append(
                Rejection(
                    index=index,
                    source_id=source_id,
                    pointer=f"/{field}",
                    code="data_source_not_allowed",
                    message="The data-source USCC must be this department's own, or one it is "
                    "registered to push for.",
                )
            )
            continue
        if source_id in seen:
            rejected.append(
                Rejection(
                    index=index,
                    source_id=source_id,
                    pointer="/source_id",
                    code="duplicate_source_id",
                    message=f"The same source_id is already at index {seen[source_id]} of this "
                    "batch.",
                )
            )
            continue
        seen[source_id] = index
        warnings.extend(
            Rejection(index=index, source_id=source_id, **w.as_dict()) for w in outcome.warnings
        )
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        data = record
        clear = {k: record[k] for k in personal if record.get(k) is not None}
        personal_enc = None
        if clear:
            data = dict(record)
            for name in clear:
                if kinds.get(name) == "id_number":
                    data[name] = ids.mask_id_number(record[name])
            personal_enc = keyring.encrypt(orjson.dumps(clear))
        good.append(
            Checked(index, source_id, outcome, keyring.keyed_digest(canonical), data, personal_enc)
        )
    return good, rejected, warnings


def summarize(rejections: Sequence[Rejection]) -> list[ErrorSummary]:
    counts = Counter((r.code, r.pointer) for r in rejections)
    first: dict[tuple[str, str], str] = {}
    for r in rejections:
        first.setdefault((r.code, r.pointer), r.message)
    return [
        ErrorSummary(code=code, pointer=pointer, count=n, example=first[(code, pointer)])
        for (code, pointer), n in counts.most_common()
    ]


def overall_status(stored: int, rejected: int) -> SubmissionStatus:
    if rejected == 0:
        return SubmissionStatus.ACCEPTED
    return SubmissionStatus.PARTIALLY_ACCEPTED if stored else SubmissionStatus.REJECTED


def body_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def find_replay(
    session: Session, client: Principal, idempotency_key: str, body_sha256: str
) -> dict[str, Any] | None:
    """The stored report of an earlier push with this key; 409 if its body differed."""
    row = session.execute(
        select(Submission.body_sha256, Submission.report).where(
            Submission.client_id == client.id, Submission.idempotency_key == idempotency_key
        )
    ).first()
    if row is None:
        return None
    if row.body_sha256 != body_sha256:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for a different body; use a new key for new content.",
        )
    report: dict[str, Any] = row.report
    return report


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def store(
    session: Session,
    keyring: Keyring,
    found: StandardVersion,
    checked: list[Checked],
    rejected: list[Rejection],
    warnings: list[Rejection],
    *,
    client: Principal,
    mode: Mode,
    body_sha256: str,
    idempotency_key: str | None,
    received: int,
    received_at: datetime,
    kind: str = "batch",
) -> tuple[SubmissionReport, bool]:
    """Store the checked records in the caller's transaction: (report, replayed)."""
    submission_id = new_id()
    # Before the first statement: the transaction (on SQLite, the write lock) is not open yet.
    prepared = prepare(
        session, found, checked, client=client, submission_id=submission_id, now=received_at
    )
    # NULL keys never conflict: only a retry with the same Idempotency-Key can lose here.
    inserted = session.execute(
        _insert(session)(table(Submission))
        .values(
            id=submission_id,
            client_id=client.id,
            kind=kind,
            standard=found.standard,
            version=found.version,
            mode=mode,
            status="processing",
            idempotency_key=idempotency_key,
            body_sha256=body_sha256,
            created_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=["client_id", "idempotency_key"])
        .returning(table(Submission).c.id)
    ).first()
    if inserted is None and idempotency_key is not None:  # a concurrent twin committed first
        replay = find_replay(session, client, idempotency_key, body_sha256)
        assert replay is not None
        return SubmissionReport.model_validate(replay), True

    outcomes, late_rejections, written = write_records(
        session,
        keyring,
        found,
        checked,
        client=client,
        submission_id=submission_id,
        now=received_at,
        prepared=prepared,
    )
    rejected = rejected + late_rejections
    if mode == Mode.ATOMIC and rejected:
        raise nothing_stored(found, rejected, received, mode, body_sha256, received_at)
    counts = Counts(
        received=received,
        created=sum(1 for o in outcomes if o["outcome"] == "created"),
        updated=sum(1 for o in outcomes if o["outcome"] == "updated"),
        unchanged=sum(1 for o in outcomes if o["outcome"] == "unchanged"),
        rejected=received - len(outcomes),
    )
    status = overall_status(len(outcomes), counts.rejected)
    receipt_fields = {
        "submission_id": str(submission_id),
        "client_id": str(client.id),
        "standard": found.standard,
        "version": found.version,
        "mode": str(mode),
        "body_sha256": body_sha256,
        "received_at": received_at.isoformat(),
        "status": str(status),
        "counts": counts.model_dump(),
    }
    payload = orjson.dumps(receipt_fields, option=orjson.OPT_SORT_KEYS).decode()
    receipt = Receipt(
        signed_payload=payload, signature=keyring.sign(payload.encode()), key_id=keyring.key_id()
    )
    report = SubmissionReport(
        submission_id=submission_id,
        status=status,
        standard=found.standard,
        version=found.version,
        mode=mode,
        counts=counts,
        errors=sorted(rejected, key=lambda r: r.index),
        error_summary=summarize(rejected),
        warnings=warnings,
        deprecation=found.warnings(received_at.date()),
        records=outcomes,
        body_sha256=body_sha256,
        received_at=received_at,
        receipt=receipt,
    )
    session.execute(
        update(Submission)
        .where(Submission.id == submission_id)
        .values(
            status=status,
            received=counts.received,
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            rejected=counts.rejected,
            report=report.model_dump(mode="json"),
            receipt=receipt.model_dump(),
            finished_at=received_at,
        )
    )
    # Last: on PostgreSQL the change feed and the audit chain share one lock, held to the
    # commit, that every writer of the hub takes in turn; the report is built by then.
    emit_changes(session, found, written, client=client, now=received_at)
    audit.record(
        session,
        actor=client,
        action="records.pushed",
        submission_id=submission_id,
        result=str(status),
        payload={"standard": found.standard, "version": found.version, **counts.model_dump()},
    )
    return report, False


def emit_changes(
    session: Session,
    found: StandardVersion,
    written: list[Written],
    *,
    client: Principal,
    now: datetime,
) -> None:
    """Feed entries of the created and corrected records, in batch order."""
    written.sort(key=lambda w: w[0].index)
    changes.emit(
        session,
        [
            Change(
                kind=kind,
                record_id=record_id,
                version=version,
                subject_id=subject_id,
                standard=found.standard,
                department_id=client.id,
                at=now,
                subject_key=item.outcome.derived.subject.uscc if item.outcome.derived else None,
                event_id=event_id,
            )
            for item, kind, record_id, version, subject_id, event_id in written
        ],
    )


def nothing_stored(
    found: StandardVersion,
    rejected: list[Rejection],
    received: int,
    mode: Mode,
    body_sha256: str,
    received_at: datetime,
) -> RecordsInvalid:
    report = rejection_report(found, rejected, [], received, mode, body_sha256, received_at)
    return RecordsInvalid(
        f"{len({r.index for r in rejected})} of {received} record(s) rejected; "
        f"{'nothing was stored (atomic mode)' if mode == Mode.ATOMIC else 'nothing to store'}.",
        submission_status=str(report.status),
        **report.model_dump(mode="json", exclude={"records", "receipt", "status"}),
    )


def rejection_report(
    found: StandardVersion,
    rejected: list[Rejection],
    warnings: list[Rejection],
    received: int,
    mode: Mode,
    body_sha256: str,
    received_at: datetime,
    *,
    dry_run: bool = False,
    valid: int = 0,
) -> SubmissionReport:
    bad = len({r.index for r in rejected})
    status = (
        SubmissionStatus.VALID
        if dry_run and not rejected
        else (overall_status(valid, bad) if dry_run else SubmissionStatus.REJECTED)
    )
    return SubmissionReport(
        submission_id=None,
        status=status,
        standard=found.standard,
        version=found.version,
        mode=mode,
        dry_run=dry_run,
        counts=Counts(received=received, rejected=bad),
        errors=sorted(rejected, key=lambda r: r.index),
        error_summary=summarize(rejected),
        warnings=warnings,
        deprecation=found.warnings(received_at.date()),
        body_sha256=body_sha256,
        received_at=received_at,
    )


_NATURAL_KEY_LOCKS = 0x6B657973  # "keys": advisory locks per (department, standard)


def _lock_natural_keys(
    session: Session, department_id: uuid.UUID, standard: str, *, exclusive: bool
) -> None:
    """On PostgreSQL, the lock a transaction takes before it claims records of a (department,
    standard): shared when it claims them all in one sorted statement (_claim_records), as a
    batch push and each chunk of a partial file do; exclusive when it claims set after set
    (an atomic file, every chunk in one transaction), since two sorted sets are not one sorted
    order and could deadlock with a concurrent push. Pushes of one department thus write side
    by side, and wait only for an atomic file. SQLite's write lock already serializes every
    writer.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = zlib.crc32(f"{department_id}:{standard}".encode()) - 2**31
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    session.execute(
        text(f"SELECT {function}(:space, :key)"),
        {"space": _NATURAL_KEY_LOCKS - 2**31, "key": key},
    )


# The record and version columns no database state decides: their values are made ready for the
# driver before the write transaction opens (see prepare()).
_RECORD_BOUND = frozenset(
    {
        "department_id",
        "standard",
        "source_id",
        "schema_id",
        "content_hash",
        "status",
        "severity",
        "severity_source",
        "decision_date",
        "publish_from",
        "publish_until",
        "repair_from",
        "retain_until",
        "withheld_reason",
        "fine_amount_wan",
        "created_at",
        "updated_at",
    }
)
_VERSION_BOUND = frozenset(
    {
        "schema_id",
        "content_hash",
        "data",
        "originals",
        "personal_enc",
        "submission_id",
        "publish_from",
        "publish_until",
        "created_at",
    }
)


@dataclass(slots=True)
class Prepared:
    """Per checked record, in order: its record row should it be new (a fresh id, no subject
    yet), its version's columns, the `_BOUND` ones ready for the driver, and the id of its
    change-feed event should one be written (about a microsecond per id, saved under the lock)."""

    records: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    event_ids: list[uuid.UUID]


# (checked record, change, record id, version, subject id, change-feed event id)
Written = tuple[Checked, ChangeKind, uuid.UUID, int, uuid.UUID, uuid.UUID]


def prepare(
    session: Session,
    found: StandardVersion,
    checked: list[Checked],
    *,
    client: Principal,
    submission_id: uuid.UUID,
    now: datetime,
) -> Prepared:
    """What storing `checked` needs that no database state decides; touches no database, so
    that a caller can make it before its write transaction opens."""
    dialect = session.get_bind().dialect
    ids = new_ids(len(checked))
    records = [
        _record_row(item, record_id, found, client, now)
        for item, record_id in zip(checked, ids, strict=True)
    ]
    versions = [_version_columns(item, found, submission_id, now) for item in checked]
    return Prepared(
        bulk.bind_rows(dialect, table(Record), records, _RECORD_BOUND),
        bulk.bind_rows(dialect, table(RecordVersion), versions, _VERSION_BOUND),
        new_ids(len(checked)),
    )


def write_records(
    session: Session,
    keyring: Keyring,
    found: StandardVersion,
    checked: list[Checked],
    *,
    client: Principal,
    submission_id: uuid.UUID,
    now: datetime,
    prepared: Prepared | None = None,
    exclusive: bool = False,
) -> tuple[list[dict[str, Any]], list[Rejection], list[Written]]:
    """Write checked records under an existing submission, in the caller's transaction:
    (outcomes, late rejections, the changes to pass to emit_changes()). A batch push and each
    chunk of a file submission both come through here; `prepared` is prepare()'s for these
    records, when the caller made it before its transaction opened. `exclusive`: the
    transaction will write more sets of records of this department and standard after these
    (see _lock_natural_keys). The changes are emitted apart, as late in the transaction as the
    caller can: on PostgreSQL appending to the feed takes a lock every writer shares."""
    if not checked:
        return [], [], []
    if prepared is None:
        prepared = prepare(
            session, found, checked, client=client, submission_id=submission_id, now=now
        )
    _lock_natural_keys(session, client.id, found.standard, exclusive=exclusive)
    derived = [c.outcome.derived for c in checked]
    subject_ids = subjects.resolve(
        session,
        keyring,
        [d.subject for d in derived if d],
        [d.decision_date for d in derived if d],
    )
    rows = [
        prepared.records[position] | {"subject_id": subject_id}
        for position, subject_id in enumerate(subject_ids)
    ]
    rows.sort(key=lambda row: str(row["source_id"]))  # one lock order for every batch
    if session.get_bind().dialect.name == "postgresql":
        created_rows, existing = _claim_records(session, client.id, found.standard, rows)
    else:
        created_rows, existing = _insert_new_records(session, client.id, found.standard, rows)
    pending = [  # (position in checked, subject id) of the records stored before
        (position, subject_ids[position])
        for position, item in enumerate(checked)
        if item.source_id not in created_rows
    ]
    outcomes: list[dict[str, Any]] = []
    written: list[Written] = []
    versions: list[dict[str, Any]] = []
    record_updates: list[dict[str, Any]] = []
    late: list[Rejection] = []
    for position, item in enumerate(checked):
        row = created_rows.get(item.source_id)
        if row is not None:
            record_id, subject_id = row["id"], row["subject_id"]
            versions.append(
                prepared.versions[position]
                | {"record_id": record_id, "version": 1, "subject_id": subject_id}
            )
            outcomes.append(_outcome(item, record_id, 1, "created", subject_id))
            event_id = prepared.event_ids[position]
            written.append((item, ChangeKind.CREATED, record_id, 1, subject_id, event_id))
    for position, subject_id in pending:
        item = checked[position]
        current = existing[item.source_id]
        if current.content_hash == item.content_hash:
            outcomes.append(_outcome(item, current.id, current.version, "unchanged", subject_id))
            continue
        if current.status != RecordStatus.ACTIVE:
            late.append(
                Rejection(
                    index=item.index,
                    source_id=item.source_id,
                    pointer="",
                    code=f"record_{current.status}",
                    message=f"This record is {current.status}; it can no longer be corrected.",
                )
            )
            continue
        version = current.version + 1
        row = prepared.records[position]
        update = {
            k: v
            for k, v in row.items()
            if k not in ("department_id", "standard", "source_id", "created_at")
        } | {"id": current.id, "version": version}
        if subject_id != current.subject_id:  # SQLite rewrites an assigned column's index entry
            update["subject_id"] = subject_id
        record_updates.append(update)
        versions.append(
            prepared.versions[position]
            | {"record_id": current.id, "version": version, "subject_id": subject_id}
        )
        outcomes.append(_outcome(item, current.id, version, "updated", subject_id))
        event_id = prepared.event_ids[position]
        written.append((item, ChangeKind.CORRECTED, current.id, version, subject_id, event_id))
    # One statement per set of columns: corrections that keep their subject leave it alone.
    for moved in (False, True):
        updates = [u for u in record_updates if ("subject_id" in u) is moved]
        if updates:
            updates.sort(key=lambda row: str(row["id"]))
            bulk.update_rows(session, table(Record), updates, key=["id"], bound=_RECORD_BOUND)
    if versions:
        bulk.insert_rows(session, table(RecordVersion), versions, bound=_VERSION_BOUND)
    outcomes.sort(key=lambda o: int(o["index"]))
    return outcomes, late, written


_NATURAL_KEY = ["source_id", "department_id", "standard"]

# (the rows inserted, by source id; the records stored before, by source id)
Claimed = tuple[dict[str, dict[str, Any]], dict[str, Row[Any]]]


def _claim_records(
    session: Session, department_id: uuid.UUID, standard: str, rows: list[dict[str, Any]]
) -> Claimed:
    """PostgreSQL: insert the new records and lock the stored ones in one statement, in the
    rows' (source id) order, so that concurrent pushes sharing source ids wait for each other
    instead of deadlocking; then read the locked ones."""
    created_ids = set(
        bulk.claim_rows(session, table(Record), rows, key=_NATURAL_KEY, returning="id")
    )
    created = {row["source_id"]: row for row in rows if row["id"] in created_ids}
    stored = [row["source_id"] for row in rows if row["id"] not in created_ids]
    return created, _existing(session, department_id, standard, stored)


def _insert_new_records(
    session: Session, department_id: uuid.UUID, standard: str, rows: list[dict[str, Any]]
) -> Claimed:
    """SQLite, where this transaction holds the only write lock: read which records exist,
    insert the others."""
    existing = _existing(session, department_id, standard, [row["source_id"] for row in rows])
    new_rows = [row for row in rows if row["source_id"] not in existing]
    inserted = bulk.insert_rows(
        session, table(Record), new_rows, on_conflict_do_nothing=_NATURAL_KEY, bound=_RECORD_BOUND
    )
    created_ids = {row["id"] for row in new_rows}
    if inserted != len(new_rows):  # written by another connection outside the writers' queue
        created_ids = _present(session, sorted(created_ids))
        lost = [row["source_id"] for row in new_rows if row["id"] not in created_ids]
        existing.update(_existing(session, department_id, standard, lost))
    return {row["source_id"]: row for row in new_rows if row["id"] in created_ids}, existing


def _present(session: Session, record_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    found: set[uuid.UUID] = set()
    for start in range(0, len(record_ids), 500):
        chunk = record_ids[start : start + 500]
        found.update(session.scalars(select(Record.id).where(Record.id.in_(chunk))))
    return found


def _existing(
    session: Session, department_id: uuid.UUID, standard: str, source_ids: Sequence[str]
) -> dict[str, Row[Any]]:
    """The stored records of these source ids: (id, source_id, version, content_hash, status,
    subject_id)."""
    found: dict[str, Row[Any]] = {}
    stmt = _existing_statement(session.get_bind().dialect)
    source_ids = sorted(source_ids)
    for start in range(0, len(source_ids), 500):
        rows = session.execute(
            stmt,
            {
                "department_id": department_id,
                "standard": standard,
                "source_ids": source_ids[start : start + 500],
            },
        )
        found.update({row.source_id: row for row in rows})
    return found


@lru_cache(maxsize=4)
def _existing_statement(dialect: Dialect) -> Select[Any]:
    """Core columns, built once: no ORM loading or statement building per batch."""
    c = table(Record).c
    stmt = (
        select(c.id, c.source_id, c.version, c.content_hash, c.status, c.subject_id)
        .where(
            c.department_id == bindparam("department_id"),
            c.standard == bindparam("standard"),
            bulk.in_values(c.source_id, "source_ids", dialect),
        )
        .order_by(c.source_id)
    )
    return stmt


def _record_row(
    item: Checked, record_id: uuid.UUID, found: StandardVersion, client: Principal, now: datetime
) -> dict[str, Any]:
    derived = item.outcome.derived
    assert derived is not None
    until = derived.publish_until
    return {
        "id": record_id,
        "department_id": client.id,
        "standard": found.standard,
        "source_id": item.source_id,
        "version": 1,
        "schema_id": found.schema_id,
        "content_hash": item.content_hash,
        "status": RecordStatus.ACTIVE,
        "severity": derived.severity,
        "severity_source": derived.severity_source,
        "decision_date": derived.decision_date,
        "publish_from": derived.publish_from,
        "publish_until": until,
        "repair_from": derived.repair_from,
        "retain_until": _retain_until(until),
        "withheld_reason": withheld_reason(derived),  # nothing about minors is published
        "fine_amount_wan": _fine(item.data),
        "created_at": now,
        "updated_at": now,
    }


def _fine(data: dict[str, Any]) -> str | None:
    fine = data.get("fine_amount_wan")
    return None if fine is None else str(fine)


def _retain_until(publish_until: date | None) -> date | None:
    if publish_until is None:
        return None
    try:
        return publish_until.replace(year=publish_until.year + RETENTION_YEARS)
    except ValueError:  # 29 February
        return publish_until.replace(year=publish_until.year + RETENTION_YEARS, day=28)


def _version_columns(
    item: Checked, found: StandardVersion, submission_id: uuid.UUID, now: datetime
) -> dict[str, Any]:
    """A version row but for its record, number and subject."""
    derived = item.outcome.derived
    assert derived is not None
    return {
        "schema_id": found.schema_id,
        "content_hash": item.content_hash,
        "data": item.data,
        "originals": item.outcome.originals or None,
        "personal_enc": item.personal_enc,
        "submission_id": submission_id,
        "publish_from": derived.publish_from,
        "publish_until": derived.publish_until,
        "created_at": now,
    }


def _outcome(
    item: Checked, record_id: uuid.UUID, version: int, outcome: str, subject_id: uuid.UUID
) -> dict[str, Any]:
    return {
        "index": item.index,
        "source_id": item.source_id,
        "record_id": str(record_id),
        "subject_id": str(subject_id),
        "version": version,
        "outcome": outcome,
    }
