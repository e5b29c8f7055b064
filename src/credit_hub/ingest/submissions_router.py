"""`/v1/submissions`: upload a file of records, follow its job, fetch its rejected rows."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from credit_hub.access.auth import DepartmentDep
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep
from credit_hub.errors import (
    Forbidden,
    IdempotencyKeyReused,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    RequestInvalid,
    StandardNotFound,
    Unauthorized,
    problem_responses,
)
from credit_hub.ingest import jobs, queries, service
from credit_hub.ingest.readers import (
    FileProblem,
    Limits,
    choose_encoding,
    choose_format,
    open_rows,
)
from credit_hub.ingest.schemas import Mode
from credit_hub.ingest.submission_schemas import SubmissionAccepted, SubmissionPage, SubmissionRead
from credit_hub.ingest.uploads import FileUnreadable, MalformedUpload, Upload, receive

router = APIRouter(prefix="/v1/submissions", tags=["ingestion"])

UPLOAD_BODY = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string", "format": "binary"}},
        "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
            "schema": {"type": "string", "format": "binary"}
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    **{
                        name: {"type": "string"}
                        for name in ("standard", "version", "mode", "format", "encoding", "sheet")
                    },
                },
            }
        },
    },
}


def _param(upload: Upload, given: str | None, name: str) -> str | None:
    return given if given is not None else (upload.fields.get(name) or None)


@router.post(
    "",
    status_code=202,
    response_model=SubmissionAccepted,
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        200: {"description": "A replay: this Idempotency-Key and file were submitted before"},
        **problem_responses(
            MalformedUpload,
            Unauthorized,
            Forbidden,
            StandardNotFound,
            IdempotencyKeyReused,
            PayloadTooLarge,
            FileUnreadable,
            RequestInvalid,
        ),
    },
)
async def upload_submission(
    request: Request,
    client: DepartmentDep,
    db: DbDep,
    clock: ClockDep,
    standard: Annotated[str | None, Query(description="Standard id (or a form field)")] = None,
    version: Annotated[str | None, Query(description="Standard version; default: current")] = None,
    mode: Annotated[Mode | None, Query(description="partial (default) or atomic")] = None,
    format: Annotated[
        str | None,
        Query(description="ndjson, csv or xlsx; default: from the media type, name or bytes"),
    ] = None,
    encoding: Annotated[
        str | None, Query(description="CSV/NDJSON: utf-8 or gb18030; default: detected")
    ] = None,
    sheet: Annotated[str | None, Query(description="XLSX: the sheet to read")] = None,
    filename: Annotated[str | None, Query(max_length=255, description="The file's name")] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Upload a file of records for a standard, as the raw body or the `file` part of a
    multipart form: NDJSON, CSV (UTF-8 with or without BOM, or GB18030) or XLSX.

    The file is streamed to disk and answered at once with 202, the submission id and its
    status URL (`Location`); a worker validates and stores it in chunks through the same path
    as `POST /v1/records`. Headers may be snake_case names, Chinese names or national codes.
    A file that cannot be read at all (empty, no known column, wrong encoding, not an XLSX,
    a zip bomb, several sheets without `sheet`) is refused here with 422 `file-unreadable`.
    """
    state = request.app.state
    settings = state.settings
    received_at = clock.now()
    if standard is not None:  # refuse before receiving a large body
        service.authorize(client, standard)
        state.standards.get(standard).version(version, received_at.date())
    upload = await receive(request, settings.upload_dir)
    try:
        standard = _param(upload, standard, "standard")
        if not standard:
            raise RequestInvalid(
                "Name the standard (query parameter or form field `standard`).",
                errors=[{"parameter": "standard", "code": "required", "message": "required"}],
            )
        version = _param(upload, version, "version")
        found = state.standards.get(standard).version(version, received_at.date())
        service.authorize(client, standard)
        chosen_mode = mode or Mode(upload.fields.get("mode") or "partial")
        if upload.size == 0:
            raise FileUnreadable("The file is empty.", code="empty")
        name = _param(upload, filename, "filename") or upload.filename
        sheet = _param(upload, sheet, "sheet")
        try:
            fmt = choose_format(
                _param(upload, format, "format"), upload.media_type, name, upload.head
            )
            chosen = choose_encoding(_param(upload, encoding, "encoding"), fmt, upload.head)
            columns = await run_in_threadpool(
                _preflight, upload, fmt, chosen, found.engine, sheet, settings
            )
        except FileProblem as problem:
            raise FileUnreadable(problem.message, **problem.as_dict()) from None
        path = upload.path.with_suffix(".upload")
        upload.path.rename(path)
        upload.path = path

        def enqueue() -> tuple[Any, bool]:
            with db.write() as session:
                submission, replayed = jobs.enqueue(
                    session,
                    client=client,
                    found=found,
                    path=path,
                    fmt=fmt,
                    encoding=chosen,
                    mode=chosen_mode,
                    filename=name,
                    size=upload.size,
                    sha256=upload.sha256,
                    sheet=sheet,
                    columns=columns,
                    idempotency_key=idempotency_key,
                    now=received_at,
                )
                return queries.accepted(submission), replayed

        accepted, replayed = await run_in_threadpool(enqueue)
    except BaseException:
        upload.discard()
        raise
    if replayed:
        upload.discard()
        return JSONResponse(
            accepted.model_dump(mode="json"), 200, headers={"Idempotent-Replayed": "true"}
        )
    worker = getattr(state, "worker", None)
    if worker is not None:
        worker.wake()
    return JSONResponse(
        accepted.model_dump(mode="json"), 202, headers={"Location": accepted.status_url}
    )


def _preflight(
    upload: Upload, fmt: str, encoding: str | None, engine: Any, sheet: str | None, settings: Any
) -> dict[str, Any] | None:
    """Open the file as the worker will, read its header: refuse what cannot be read at all."""
    limits = Limits(settings.xlsx_max_uncompressed_bytes, settings.xlsx_max_ratio)
    with open_rows(upload.path, fmt, encoding, engine, sheet=sheet, limits=limits) as source:
        if source.columns is None:
            return None
        return {"headers": source.columns.headers, **source.columns.describe()}


@router.get(
    "",
    response_model=SubmissionPage,
    responses=problem_responses(Unauthorized, Forbidden, RequestInvalid),
)
def list_submissions(
    client: DepartmentDep,
    db: DbDep,
    clock: ClockDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    kind: Annotated[str | None, Query(pattern="^(file|batch)$")] = None,
) -> SubmissionPage:
    """The department's own submissions (uploads and batch pushes), newest first."""
    with db.read() as session:
        return queries.page(session, client, limit=limit, cursor=cursor, kind=kind, now=clock.now())


@router.get(
    "/{submission_id}",
    response_model=SubmissionRead,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def get_submission(
    submission_id: uuid.UUID, client: DepartmentDep, db: DbDep, clock: ClockDep
) -> SubmissionRead:
    """A submission's status, progress (rows read, accepted, rejected), timings and report:
    rejections grouped by code and field, unknown columns, and why a file failed."""
    with db.read() as session:
        return queries.read(session, client, submission_id, now=clock.now())


@router.get(
    "/{submission_id}/errors",
    responses={
        200: {
            "description": "The rejected rows",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
        **problem_responses(Unauthorized, Forbidden, NotFound, NotAcceptable, RequestInvalid),
    },
)
def get_submission_errors(
    request: Request,
    submission_id: uuid.UUID,
    client: DepartmentDep,
    db: DbDep,
    format: Annotated[
        str | None, Query(pattern="^(csv|ndjson)$", description="Overrides Accept")
    ] = None,
) -> StreamingResponse:
    """The rejected rows, ready to fix and upload again: CSV with the upload's headers and
    encoding plus `_row`, `_error_codes`, `_error_fields`, `_error_messages` (cells starting
    with `=`, `+`, `-`, `@` get a leading `'`, which an upload takes back), or NDJSON with
    `_row` and `_errors` (columns and keys starting with `_` are ignored on upload)."""
    with db.read() as session:
        job = queries.owned(session, client, submission_id)
    chosen = format or queries.negotiate(request.headers.get("accept"), job)
    keyring = request.app.state.keyring
    body, media_type, suffix = queries.error_file(db, keyring, job, chosen)
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{submission_id}-errors.{suffix}"'},
    )
