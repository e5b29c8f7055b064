"""Agencies read unified profiles for a declared purpose, look up persons, screen lists."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from credit_hub.access.auth import AgencyDep
from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.clock import ClockDep
from credit_hub.db import Database, DbDep
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)
from credit_hub.profiles import service
from credit_hub.profiles.schemas import LookupRequest, Profile, ScreenReport, ScreenRequest
from credit_hub.subjects import service as subjects

router = APIRouter(tags=["profiles"])

PurposeQuery = Annotated[
    str | None,
    Query(
        description="Why the profile is read: one of the configured purposes "
        "(procurement, licensing_review, credit_service, ...)"
    ),
]
CaseQuery = Annotated[
    str | None, Query(description="The case, file or tender this read is for", max_length=200)
]


class _Built(NamedTuple):
    """A profile read before its audit event: the answer and what the event records."""

    subject_id: uuid.UUID
    body: bytes
    tag: str
    not_modified: bool
    records: int


def _answer(
    request: Request,
    db: Database,
    make: Callable[[Session], tuple[subjects.SubjectRow, service.Json]],
    read: service.ReadRequest,
    client: Principal,
    if_none_match: str | None,
    action: str,
    *,
    one_statement: bool = False,
) -> Response:
    """Build the profile (`make`), append the audit event (run in a worker thread: one hop
    per read)."""

    def build(session: Session) -> _Built:
        subject, result = make(session)
        body = service.render(result)
        tag = service.etag(body)
        records = sum(map(len, result["records"].values()))
        return _Built(subject.id, body, tag, service.matches(if_none_match, tag), records)

    def events(built: _Built) -> list[dict[str, Any]]:
        outcome = "not_modified" if built.not_modified else "ok"
        return [
            service.read_event(
                client, built.subject_id, read, action=action, result=outcome, records=built.records
            )
        ]

    appender = request.app.state.audit_appender
    built = audit.audited_read(db, build, events, appender, one_statement=one_statement)
    headers = {"ETag": built.tag, "Cache-Control": "private, no-cache"}
    if built.not_modified:
        return Response(status_code=304, headers=headers)
    return Response(built.body, media_type="application/json", headers=headers)


@router.get(
    "/v1/subjects/{key}/profile",
    response_model=Profile,
    responses={
        304: {"description": "Not modified since the ETag given in If-None-Match"},
        **problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
    },
)
async def read_profile(
    key: str,
    request: Request,
    db: DbDep,
    client: AgencyDep,
    purpose: PurposeQuery = None,
    case_ref: CaseQuery = None,
    as_of: Annotated[date | None, Query(description="The profile as it was on that day")] = None,
    standards: Annotated[list[str] | None, Query(description="Only these standards")] = None,
    include: Annotated[
        list[str] | None,
        Query(description="unpublished, withdrawn (needs the 'unpublished' scope)"),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The unified profile of a subject: identity, records by standard, summary.

    `key` is a USCC, an organization code, a registration number or the hub's subject id
    (natural persons: `POST /v1/subjects/lookup`). `purpose` and `case_ref` are required and
    recorded with every read. Only records inside their publication window and of the
    standards the agency is registered for are shown; personal identifiers are masked unless
    the agency holds `personal_data`.
    """
    state = request.app.state  # its clock read here: one dependency less per read
    read = service.read_request(
        client,
        state.settings.purposes,
        purpose=purpose,
        case_ref=case_ref,
        as_of=as_of,
        standards=standards,
        include=include,
        today=state.clock.today(),
    )
    parsed = subjects.parse_key(key)

    def make(session: Session) -> tuple[subjects.SubjectRow, service.Json]:
        return service.profile_of_key(
            session, parsed, read, client=client, keyring=state.keyring, standards=state.standards
        )

    return await run_in_threadpool(
        _answer,
        request,
        db,
        make,
        read,
        client,
        if_none_match,
        "profile.read",
        one_statement=service.one_statement(read),
    )


@router.post(
    "/v1/subjects/lookup",
    response_model=Profile,
    responses={
        304: {"description": "Not modified since the ETag given in If-None-Match"},
        **problem_responses(MalformedJson, Unauthorized, Forbidden, NotFound, RequestInvalid),
    },
)
async def lookup_person(
    body: LookupRequest,
    request: Request,
    db: DbDep,
    client: AgencyDep,
    clock: ClockDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Find a natural person by ID type and number (in the body, never in a URL) and answer
    the profile. Needs the `personal_data` scope."""
    if not client.has_scope(Scope.PERSONAL_DATA):
        raise Forbidden("Looking up natural persons needs the 'personal_data' scope.")
    read = service.read_request(
        client,
        request.app.state.settings.purposes,
        purpose=body.purpose,
        case_ref=body.case_ref,
        as_of=body.as_of,
        standards=body.standards,
        include=None,
        today=clock.today(),
    )
    state = request.app.state

    def make(session: Session) -> tuple[subjects.SubjectRow, service.Json]:
        subject = subjects.find_person(session, state.keyring, body.id_type, body.id_number)
        found = service.profile(
            session, subject, read, client=client, keyring=state.keyring, standards=state.standards
        )
        return subject, found

    return await run_in_threadpool(
        _answer,
        request,
        db,
        make,
        read,
        client,
        if_none_match,
        "subject.looked_up",
    )


@router.post(
    "/v1/profiles/screen",
    response_model=ScreenReport,
    responses=problem_responses(MalformedJson, Unauthorized, Forbidden, RequestInvalid),
)
async def screen_subjects(
    body: ScreenRequest,
    request: Request,
    db: DbDep,
    client: AgencyDep,
    clock: ClockDep,
) -> Response:
    """Screen up to 1,000 identifiers at once (a procurement check): per identifier, found or
    not, the name and the profile summary. Every subject found gets an audit entry."""
    state = request.app.state
    read = service.read_request(
        client,
        state.settings.purposes,
        purpose=body.purpose,
        case_ref=body.case_ref,
        as_of=None,
        standards=body.standards,
        include=None,
        today=clock.today(),
    )
    identifiers = body.identifiers

    def screen(session: Session) -> dict[str, Any]:
        return service.screen(session, identifiers, read, standards=state.standards)

    def events(report: dict[str, Any]) -> list[dict[str, Any]]:
        return service.screening_events(client, read, report)

    appender = state.audit_appender
    report = await run_in_threadpool(audit.audited_read, db, screen, events, appender)
    return Response(service.render(report), media_type="application/json")
