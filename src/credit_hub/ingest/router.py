"""`POST /v1/records`: departments push batches of records."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from credit_hub.access.auth import DepartmentDep
from credit_hub.bodies import parse_json, require_json
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep
from credit_hub.errors import (
    Forbidden,
    IdempotencyKeyReused,
    MalformedJson,
    PayloadTooLarge,
    RecordsInvalid,
    RequestInvalid,
    ServiceUnavailable,
    StandardNotFound,
    Unauthorized,
    UnsupportedMediaType,
    problem_responses,
)
from credit_hub.ingest import service
from credit_hub.ingest.schemas import RecordBatch, SubmissionReport

router = APIRouter(prefix="/v1/records", tags=["ingestion"])


class RawBody:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw


async def raw_json_body(request: Request) -> RawBody:
    require_json(request)
    return RawBody(await request.body())


def _respond(report: SubmissionReport, status: int, **headers: str) -> Response:
    return Response(
        orjson.dumps(report.model_dump(mode="json")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "",
    status_code=201,
    response_model=SubmissionReport,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RecordBatch"}}
            },
        }
    },
    responses={
        200: {
            "description": "A dry run's report, or the first report of a replayed push",
            "model": SubmissionReport,
        },
        **problem_responses(
            MalformedJson,
            Unauthorized,
            Forbidden,
            StandardNotFound,
            IdempotencyKeyReused,
            PayloadTooLarge,
            UnsupportedMediaType,
            RequestInvalid,
            RecordsInvalid,
            ServiceUnavailable,
        ),
    },
)
def push_records(
    request: Request,
    body: Annotated[RawBody, Depends(raw_json_body)],
    client: DepartmentDep,
    db: DbDep,
    clock: ClockDep,
    dry_run: Annotated[bool, Query(description="Validate and report; store nothing")] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Makes a retry safe: the same key and body return "
            "the first report and store nothing new",
        ),
    ] = None,
) -> Response:
    """Push a batch of records of one standard.

    Each record is validated, normalized (identifiers, dates, exact amounts, current code
    lists) and stored as a new record, a new version of an existing one (same source_id,
    changed content) or nothing (same content). `partial` stores the valid records and reports
    the rest; `atomic` stores all or nothing. The report lists every rejection with its index,
    source_id, JSON pointer, code and message, summarizes identical errors, and carries a
    receipt signed with the hub's Ed25519 key (`GET /v1/keys`).

    Answers 201 with the report when something was stored, 200 for a dry run or a replay, and
    422 `records-invalid` (with the same report fields) when nothing could be stored.
    """
    state = request.app.state
    settings, keyring = state.settings, state.keyring
    received_at = clock.now()
    body_sha256 = service.body_digest(body.raw)
    if idempotency_key is not None and not dry_run:
        with db.read() as session:
            replay = service.find_replay(session, client, idempotency_key, body_sha256)
        if replay is not None:
            return Response(
                orjson.dumps(replay),
                200,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
    batch = service.parse_batch(parse_json(body.raw), max_records=settings.max_batch_records)
    body.raw = b""  # the largest request's memory: keep only what is still needed
    found = state.standards.get(batch.standard).version(batch.version, received_at.date())
    service.authorize(client, batch.standard)
    checked, rejected, warnings = service.check_records(
        found, batch.records, client=client, keyring=keyring
    )
    received, mode = len(batch.records), batch.mode
    del batch  # the records as sent: `checked` holds their normalized form
    if dry_run:
        report = service.rejection_report(
            found,
            rejected,
            warnings,
            received,
            mode,
            body_sha256,
            received_at,
            dry_run=True,
            valid=len(checked),
        )
        return _respond(report, 200)
    if not checked or (mode == "atomic" and rejected):
        raise service.nothing_stored(found, rejected, received, mode, body_sha256, received_at)
    report, replayed = db.write_retrying(
        lambda session: service.store(
            session,
            keyring,
            found,
            checked,
            rejected,
            warnings,
            client=client,
            mode=mode,
            body_sha256=body_sha256,
            idempotency_key=idempotency_key,
            received=received,
            received_at=received_at,
        )
    )
    if replayed:
        return _respond(report, 200, **{"Idempotent-Replayed": "true"})
    return _respond(report, 201, Location=f"/v1/submissions/{report.submission_id}")


_ = RecordBatch  # documented in openapi_extra; registered in app.py
