"""The read side of submissions: status and progress, the department's list, the error file."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.db import Database
from credit_hub.errors import NotAcceptable, NotFound, RequestInvalid
from credit_hub.ingest.models import Submission, SubmissionError
from credit_hub.ingest.schemas import Counts, ErrorSummary, Receipt
from credit_hub.ingest.submission_schemas import (
    FINAL,
    Columns,
    FileError,
    JobStatus,
    Progress,
    SubmissionAccepted,
    SubmissionPage,
    SubmissionRead,
    Timings,
)
from credit_hub.keyring import Keyring

ERROR_COLUMNS = ["_row", "_error_codes", "_error_fields", "_error_messages"]
CSV_MEDIA = "text/csv"
NDJSON_MEDIA = "application/x-ndjson"
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _url(submission_id: uuid.UUID, tail: str = "") -> str:
    return f"/v1/submissions/{submission_id}{tail}"


def accepted(s: Submission) -> SubmissionAccepted:
    return SubmissionAccepted(
        submission_id=s.id,
        status=_status(s.status),
        status_url=_url(s.id),
        errors_url=_url(s.id, "/errors"),
        format=s.format or "",
        encoding=s.encoding,
        filename=s.filename,
        size_bytes=s.size_bytes or 0,
        body_sha256=s.body_sha256,
        received_at=s.created_at,
    )


def _status(value: str) -> JobStatus:
    try:
        return JobStatus(value)
    except ValueError:  # a batch push between its insert and its report
        return JobStatus.RUNNING


def owned(session: Session, client: Principal, submission_id: uuid.UUID) -> Submission:
    """The caller's own submission; 404 for another department's, as for a missing one."""
    found = session.get(Submission, submission_id)
    if found is None or found.client_id != client.id:
        raise NotFound(f"No submission {submission_id} of this department.")
    session.expunge(found)
    return found


def read(
    session: Session, client: Principal, submission_id: uuid.UUID, *, now: datetime
) -> SubmissionRead:
    return to_read(owned(session, client, submission_id), now=now)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0), 3)


def to_read(s: Submission, *, now: datetime) -> SubmissionRead:
    report: dict[str, Any] = s.report or {}
    status = _status(s.status)
    final = status in FINAL
    accepted_rows = s.created + s.updated + s.unchanged
    rows_read = s.rows_read if s.kind == "file" else s.received
    started = s.started_at if s.kind == "file" else s.created_at
    elapsed = _seconds(started, s.finished_at if final else now)
    fraction: float | None = None
    if final:
        fraction = 1.0
    elif s.rows_total:
        fraction = min(rows_read / s.rows_total, 1.0)
    elif s.size_bytes and s.bytes_read:
        fraction = min(s.bytes_read / s.size_bytes, 1.0)
    rate = round(rows_read / elapsed, 1) if elapsed and rows_read else None
    eta = None
    if not final and fraction and elapsed:
        eta = round(elapsed * (1 - fraction) / fraction, 1)
    columns = report.get("columns")
    summary = report.get("error_summary") or []
    file_error = report.get("file_error")
    return SubmissionRead(
        submission_id=s.id,
        kind=s.kind,
        status=status,
        standard=s.standard,
        version=s.version,
        mode=s.mode,
        format=s.format,
        encoding=s.encoding,
        filename=s.filename,
        size_bytes=s.size_bytes,
        body_sha256=s.body_sha256,
        attempts=s.attempts,
        progress=Progress(
            rows_read=rows_read,
            accepted=accepted_rows,
            rejected=s.rejected,
            created=s.created,
            updated=s.updated,
            unchanged=s.unchanged,
            bytes_read=s.bytes_read,
            fraction=fraction,
            rows_per_second=rate,
            eta_seconds=eta,
        ),
        counts=Counts(
            received=s.received,
            created=s.created,
            updated=s.updated,
            unchanged=s.unchanged,
            rejected=s.rejected,
        ),
        timings=Timings(
            received_at=s.created_at,
            started_at=started,
            finished_at=s.finished_at,
            queued_seconds=_seconds(s.created_at, s.started_at) if s.kind == "file" else 0.0,
            processing_seconds=elapsed,
        ),
        columns=Columns.model_validate(columns) if columns else None,
        error_summary=[ErrorSummary.model_validate(e) for e in summary],
        warning_summary=[ErrorSummary.model_validate(e) for e in report.get("warning_summary", [])],
        file_error=FileError.model_validate(file_error) if file_error else None,
        deprecation=report.get("deprecation") or [],
        receipt=Receipt.model_validate(s.receipt) if s.receipt else None,
        errors_url=_url(s.id, "/errors"),
    )


def page(
    session: Session,
    client: Principal,
    *,
    limit: int,
    cursor: str | None,
    kind: str | None,
    now: datetime,
) -> SubmissionPage:
    stmt = select(Submission).where(Submission.client_id == client.id)
    if kind:
        stmt = stmt.where(Submission.kind == kind)
    if cursor:
        try:
            at_text, id_text = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
            at, last = datetime.fromisoformat(at_text), uuid.UUID(id_text)
        except ValueError:
            raise RequestInvalid(
                "The cursor is not one this API gave.",
                errors=[{"parameter": "cursor", "code": "invalid", "message": "unknown cursor"}],
            ) from None
        stmt = stmt.where(
            or_(
                Submission.created_at < at,
                and_(Submission.created_at == at, Submission.id < last),
            )
        )
    found = list(
        session.scalars(
            stmt.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit + 1)
        )
    )
    more = len(found) > limit
    found = found[:limit]
    items = [to_read(s, now=now) for s in found]
    next_cursor = None
    if more:
        last_row = found[-1]
        raw = f"{last_row.created_at.isoformat()}|{last_row.id}"
        next_cursor = base64.urlsafe_b64encode(raw.encode()).decode()
    return SubmissionPage(items=items, next_cursor=next_cursor)


def negotiate(accept: str | None, job: Submission) -> str:
    default = "ndjson" if job.format == "ndjson" or job.kind == "batch" else "csv"
    if not accept or "*/*" in accept:
        return default
    wanted = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    for media in wanted:
        if media in (CSV_MEDIA, "text/*"):
            return "csv"
        if media in (NDJSON_MEDIA, "application/ndjson", "application/jsonl"):
            return "ndjson"
    raise NotAcceptable("The error file is text/csv or application/x-ndjson.")


def neutralize(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe."""
    return "'" + cell if cell.startswith(_DANGEROUS) else cell


def _error_rows(db: Database, keyring: Keyring, job: Submission) -> Iterator[dict[str, Any]]:
    """Rejected rows in file order, a page per read transaction (never all in memory)."""
    if job.kind != "file":
        by_index: dict[int, list[dict[str, Any]]] = {}
        for e in (job.report or {}).get("errors", []):
            by_index.setdefault(e["index"], []).append(e)
        for index, errors in sorted(by_index.items()):
            yield {"row": index, "errors": errors, "cells": None}
        return
    after = 0
    while True:
        with db.read() as session:
            rows = [
                (r.row, r.errors, r.cells_enc)
                for r in session.scalars(
                    select(SubmissionError)
                    .where(SubmissionError.submission_id == job.id, SubmissionError.row > after)
                    .order_by(SubmissionError.row)
                    .limit(1000)
                )
            ]
        if not rows:
            return
        for number, errors, cells_enc in rows:
            clear = keyring.decrypt(cells_enc) if cells_enc else None
            yield {
                "row": number,
                "errors": errors,
                "cells": orjson.loads(clear) if clear else None,
            }
        after = rows[-1][0]


def error_file(
    db: Database, keyring: Keyring, job: Submission, fmt: str
) -> tuple[Iterator[bytes], str, str]:
    columns = (job.report or {}).get("columns") or {}
    headers: list[str] = columns.get("headers") or []
    field_header = {f: h for h, f in (columns.get("mapped") or {}).items()}
    rows = _error_rows(db, keyring, job)
    if fmt == "ndjson":
        return _ndjson(rows, headers), NDJSON_MEDIA, "ndjson"
    encoding = job.encoding or "utf-8-sig"
    return (
        _csv(rows, headers, field_header, encoding),
        f"{CSV_MEDIA}; charset={encoding.removesuffix('-sig')}",
        "csv",
    )


def _field(pointer: str, field_header: dict[str, str]) -> str:
    name = pointer.lstrip("/").split("/", 1)[0]
    return field_header.get(name, name)


def _csv(
    rows: Iterator[dict[str, Any]], headers: list[str], field_header: dict[str, str], encoding: str
) -> Iterator[bytes]:
    tabular = bool(headers)
    out_encoding = "utf-8" if encoding == "utf-8-sig" else encoding
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralize(h) for h in (headers if tabular else ["_record"])] + ERROR_COLUMNS)
    prefix = "\ufeff" if encoding == "utf-8-sig" else ""
    for count, item in enumerate(rows, start=1):
        errors = item["errors"]
        cells = item["cells"]
        if tabular:
            data = list(cells or [])
            data = (data + [""] * len(headers))[: len(headers)]
        else:
            data = [cells if isinstance(cells, str) else orjson.dumps(cells).decode()]
        writer.writerow(
            [neutralize(str(c)) for c in data]
            + [
                str(item["row"]),
                neutralize("; ".join(e["code"] for e in errors)),
                neutralize("; ".join(_field(e["pointer"], field_header) for e in errors)),
                neutralize(" | ".join(e["message"] for e in errors)),
            ]
        )
        if count % 500 == 0:
            yield (prefix + buffer.getvalue()).encode(out_encoding, "replace")
            prefix = ""
            buffer.seek(0)
            buffer.truncate()
    yield (prefix + buffer.getvalue()).encode(out_encoding, "replace")


def _ndjson(rows: Iterator[dict[str, Any]], headers: list[str]) -> Iterator[bytes]:
    lines: list[bytes] = []
    for item in rows:
        cells = item["cells"]
        errors = [
            {k: e[k] for k in ("pointer", "code", "message") if k in e} for e in item["errors"]
        ]
        record: dict[str, Any]
        if headers and isinstance(cells, list):
            record = {h: c for h, c in zip(headers, cells, strict=False) if h and c != ""}
        elif isinstance(cells, str):
            try:
                parsed = orjson.loads(cells)
            except orjson.JSONDecodeError:
                parsed = None
            record = dict(parsed) if isinstance(parsed, dict) else {"_line": cells}
        else:
            record = {}
        record |= {"_row": item["row"], "_errors": errors}
        lines.append(orjson.dumps(record) + b"\n")
        if len(lines) >= 500:
            yield b"".join(lines)
            lines = []
    yield b"".join(lines)
