"""Subject access: operators issue access codes; the subject opens a session and reads its
own report."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from credit_hub import ratelimit
from credit_hub.access.auth import OperatorDep
from credit_hub.clock import ClockDep
from credit_hub.db import SessionDep
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)
from credit_hub.selfservice import report as reports
from credit_hub.selfservice import service
from credit_hub.selfservice.auth import SubjectDep
from credit_hub.selfservice.schemas import (
    AccessCodeCreate,
    AccessCodeIssued,
    SelfReport,
    SessionCreate,
    SessionIssued,
)
from credit_hub.subjects import service as subjects

router = APIRouter(tags=["self"])

_ISSUE_PROBLEMS = problem_responses(
    MalformedJson, Unauthorized, Forbidden, NotFound, RequestInvalid
)


def _issue(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    operator: OperatorDep,
    subject: subjects.SubjectRow,
    body: AccessCodeCreate,
) -> AccessCodeIssued:
    settings = request.app.state.settings
    issued, code = service.issue_code(
        session,
        subject.id,
        operator=operator,
        now=clock.now(),
        days=body.valid_days or settings.access_code_days,
    )
    return AccessCodeIssued(
        id=issued.id, subject_id=subject.id, code=code, expires_at=issued.expires_at
    )


@router.post(
    "/v1/admin/subjects/{key}/access-codes",
    status_code=201,
    response_model=AccessCodeIssued,
    responses=_ISSUE_PROBLEMS,
    tags=["admin"],
)
def issue_access_code(
    key: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    operator: OperatorDep,
    body: AccessCodeCreate | None = None,
) -> AccessCodeIssued:
    """Issue a one-time access code for a subject whose identity was checked off-system.
    The code is shown once and expires (14 days by default)."""
    body = body or AccessCodeCreate()
    subject = subjects.find(session, key)
    return _issue(request, session, clock, operator, subject, body)


@router.post(
    "/v1/admin/access-codes",
    status_code=201,
    response_model=AccessCodeIssued,
    responses=_ISSUE_PROBLEMS,
    tags=["admin"],
)
def issue_person_access_code(
    body: AccessCodeCreate,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    operator: OperatorDep,
) -> AccessCodeIssued:
    """The same, naming the subject in the body: `subject` (a key), or a natural person's
    `id_type` and `id_number` (never put in a URL)."""
    if body.id_number:
        subject = subjects.find_person(
            session, request.app.state.keyring, body.id_type or "身份证", body.id_number
        )
    elif body.subject:
        subject = subjects.find(session, body.subject)
    else:
        message = "Name the subject: `subject`, or `id_type` and `id_number`."
        raise RequestInvalid(
            message, errors=[{"pointer": "/subject", "code": "required", "message": message}]
        )
    return _issue(request, session, clock, operator, subject, body)


@router.post(
    "/v1/self/session",
    status_code=201,
    response_model=SessionIssued,
    dependencies=[Depends(ratelimit.by_address)],  # access codes must not be guessable
    responses=problem_responses(MalformedJson, service.AccessCodeInvalid, RequestInvalid),
)
def open_self_session(
    body: SessionCreate, request: Request, session: SessionDep, clock: ClockDep
) -> SessionIssued:
    """Exchange an access code, once, for a short-lived token (30 minutes by default) to send
    as `Authorization: Bearer <token>` to the self-service and due-process routes."""
    minutes = request.app.state.settings.subject_session_minutes
    opened, token = service.redeem(session, body.code, now=clock.now(), minutes=minutes)
    return SessionIssued(token=token, subject_id=opened.subject_id, expires_at=opened.expires_at)


@router.get(
    "/v1/self/report",
    response_model=SelfReport,
    responses=problem_responses(Unauthorized, Forbidden),
)
def read_self_report(session: SessionDep, clock: ClockDep, subject: SubjectDep) -> SelfReport:
    """Everything the hub holds about you, published or not (status, publication window,
    repair date), your objections and repair applications, and who read your profile, when
    and for what purpose."""
    assert subject.subject_id is not None
    found = service.subject_of(session, subject.subject_id)
    return reports.report(session, found, today=clock.today())
