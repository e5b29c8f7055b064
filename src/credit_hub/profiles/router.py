"""Agencies read unified profiles for a declared purpose, look up persons, screen lists."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from credit_hub.access.auth import BEARER_SECURITY, AgencyDep, agency
from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep, database_of
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)
from credit_hub.profiles import queries, service
from credit_hub.profiles.schemas import (
    LookupRequest,
    Profile,
    ProfileQuery,
    ScreenReport,
    ScreenRequest,
    query_parameters,
)
from credit_hub.subjects import service as subjects

router = APIRouter(tags=["profiles"])

# The profile read is the hub's hottest route: its handler reads the query and the
# If-None-Match header itself, validated by `ProfileQuery` (the same pydantic checks and the
# same 422 as FastAPI's), and authenticates by calling `agency`. FastAPI's solving of six
# parameters and three dependencies cost a fifth of a read's CPU. The route's OpenAPI entry
# lists them as before. Requests reach it through `direct_routes` (see there).
_PROFILE_OPENAPI: dict[str, Any] = {
    "parameters": [
        *query_parameters(ProfileQuery),
        {
            "name": "if-none-match",
            "in": "header",
            "required": False,
            "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "If-None-Match"},
        },
    ],
    "security": BEARER_SECURITY,
}
_LISTS = frozenset(("standards", "include"))


def profile_query(request: Request) -> ProfileQuery:
    """The query of a profile read, checked as FastAPI would check `Query()` parameters."""
    params = request.query_params
    given: dict[str, Any] = {}
    for name in ProfileQuery.model_fields:
        if name in _LISTS:
            if values := params.getlist(name):
                given[name] = values
        elif (value := params.get(name)) is not None:
            given[name] = value
    try:
        return ProfileQuery.model_validate(given)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([e | {"loc": ("query", *e["loc"])} for e in errors]) from None


class _Built(NamedTuple):
    """A profile read before its audit event: the answer and what the event records."""

    subject_id: uuid.UUID
    body: bytes
    tag: str
    not_modified: bool
    records: int


Made = tuple[subjects.SubjectRow, service.Json]


def _built(made: Made, if_none_match: str | None) -> _Built:
    subject, result = made
    body = service.render(result)
    tag = service.etag(body)
    records = sum(map(len, result["records"].values()))
    return _Built(subject.id, body, tag, service.matches(if_none_match, tag), records)


def _events(
    client: Principal, read: service.ReadRequest, action: str
) -> Callable[[_Built], list[dict[str, Any]]]:
    def events(built: _Built) -> list[dict[str, Any]]:
        outcome = "not_modified" if built.not_modified else "ok"
        return [
            service.read_event(
                client, built.subject_id, read, action=action, result=outcome, records=built.records
            )
        ]

    return events


def _respond(built: _Built) -> Response:
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
    openapi_extra=_PROFILE_OPENAPI,
)
async def read_profile(key: str, request: Request, db: DbDep) -> Response:
    """The unified profile of a subject: identity, records by standard, summary.

    `key` is a USCC, an organization code, a registration number or the hub's subject id
    (natural persons: `POST /v1/subjects/lookup`). `purpose` and `case_ref` are required and
    recorded with every read. Only records inside their publication window and of the
    standards the agency is registered for are shown; personal identifiers are masked unless
    the agency holds `personal_data`.
    """
    client = await agency(request, db)
    query = profile_query(request)
    state = request.app.state
    read = service.read_request(
        client,
        state.settings.purposes,
        purpose=query.purpose,
        case_ref=query.case_ref,
        as_of=query.as_of,
        standards=query.standards,
        include=query.include,
        today=state.clock.today(),
    )
    parsed = subjects.parse_key(key)
    if_none_match = request.headers.get("if-none-match")
    events = _events(client, read, "profile.read")
    appender = state.audit_appender

    # Built and audited in a worker thread: one hop per read.
    def build(on: Session | Connection) -> _Built:
        made = service.profile_of_key(
            on, parsed, read, client=client, keyring=state.keyring, standards=state.standards
        )
        return _built(made, if_none_match)

    pg_loop = state.pg_loop
    if service.one_statement(read) and appender is not None and db.one_writer:
        # SQLite: read on the event loop; the audit events of the reads of one turn of the
        # loop are appended together from a worker thread (Appender.append_from_loop).
        built = appender.read_on_loop(build)
        await appender.append_from_loop(events(built))
    elif service.one_statement(read) and appender is not None and pg_loop is not None:
        # PostgreSQL: the statement and the audit append on the event loop (pg_loop).
        statement, params = service.profile_statement("postgresql", parsed, read)
        with appender.reading_on_loop():
            rows = await pg_loop.rows(statement, **params)
            made = service.profile_of_read(
                queries.one_read(rows, "postgresql"),
                read,
                client=client,
                keyring=state.keyring,
                standards=state.standards,
            )
            built = _built(made, if_none_match)
            appended = appender.hand_over_from_loop(events(built))
        await appended
    elif service.one_statement(read):
        built = await run_in_threadpool(audit.audited_statement, db, build, events, appender)
    else:
        built = await run_in_threadpool(audit.audited_read, db, build, events, appender)
    return _respond(built)


async def _read_profile_direct(request: Request) -> Response:
    return await read_profile(request.path_params["key"], request, database_of(request))


def direct_routes() -> list[Route]:
    """The profile read as a plain Starlette route, to be matched before the routers: it
    answers what `read_profile` answers, errors included (the app's problem handlers render
    them), without FastAPI's request handler, which costs a read ~70 µs of CPU even with
    nothing left to solve (docs/performance.md). `read_profile` stays registered for the
    OpenAPI document; a request never reaches it."""
    route = Route("/v1/subjects/{key}/profile", _read_profile_direct, methods=["GET"])
    route.methods = {"GET"}  # Starlette adds HEAD; the documented route answers it 405
    return [route]


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

    def build(session: Session) -> _Built:
        subject = subjects.find_person(session, state.keyring, body.id_type, body.id_number)
        found = service.profile(
            session, subject, read, client=client, keyring=state.keyring, standards=state.standards
        )
        return _built((subject, found), if_none_match)

    events = _events(client, read, "subject.looked_up")
    appender = state.audit_appender
    return _respond(await run_in_threadpool(audit.audited_read, db, build, events, appender))


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
