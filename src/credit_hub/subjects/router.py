"""Subject search and the subject's access log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.auth import AgencyDep
from credit_hub.access.models import Client, Scope
from credit_hub.audit.models import AuditEvent
from credit_hub.db import DbDep, ReadSessionDep
from credit_hub.errors import Forbidden, NotFound, RequestInvalid, Unauthorized, problem_responses
from credit_hub.profiles.schemas import AccessEntry, AccessLog, SearchHit, SearchPage
from credit_hub.selfservice.auth import SubjectOrOperatorDep
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects import search as subject_search
from credit_hub.subjects import service

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])

READ_ACTIONS = ("profile.read", "subject.looked_up", "profile.screened")


@router.get(
    "",
    response_model=SearchPage,
    responses=problem_responses(Unauthorized, Forbidden, RequestInvalid),
)
async def search_subjects(
    db: DbDep,
    client: AgencyDep,
    q: Annotated[
        str,
        Query(
            description="A name (any part of it; shorter text matches the start) or an identifier",
            min_length=1,
            max_length=100,
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """Search subjects by current or former name, or by USCC, organization code,
    registration number or subject id. Natural persons appear only for `personal_data`.

    Page with `next_cursor` until it is null. Every request does a bounded amount of work, so
    a page may hold fewer than `limit` hits, even none, while `next_cursor` is set."""
    include_persons = client.has_scope(Scope.PERSONAL_DATA)

    # Built and serialized in the thread: one hop per search (a sync session dependency and
    # a sync handler took three, each a few hundred microseconds of CPU on a slow machine).
    def page(session: Session) -> str:
        hits, next_cursor = subject_search.search(
            session, q, limit=limit, cursor=cursor, include_persons=include_persons
        )
        return SearchPage(
            items=[
                SearchHit(
                    id=h.id,
                    kind=h.kind,
                    name=h.name,
                    matched_name=h.matched_name,
                    uscc=h.uscc,
                    region=ids.division_province(h.division) if h.division else None,
                )
                for h in hits
            ],
            next_cursor=next_cursor,
        ).model_dump_json()

    return Response(await db.read_in_thread(page), media_type="application/json")


@router.get(
    "/{key}/access-log",
    response_model=AccessLog,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def read_access_log(
    key: str,
    session: ReadSessionDep,
    caller: SubjectOrOperatorDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(description="Cursor: events older than this")] = None,
) -> AccessLog:
    """Who read this subject's profile, when and why (newest first): for an operator, or for
    the subject itself with its session token (its subject id as the key)."""
    subject = service.find(session, key)
    if caller.is_subject and subject.id != caller.subject_id:
        raise service.no_subject()
    return access_log(session, subject.id, limit=limit, before=before)


def access_log(
    session: Session, subject_id: uuid.UUID, *, limit: int, before: int | None
) -> AccessLog:
    stmt = (
        select(AuditEvent, Client.name)
        .outerjoin(Client, Client.id == AuditEvent.actor_id)
        .where(AuditEvent.subject_id == subject_id, AuditEvent.action.in_(READ_ACTIONS))
        .order_by(AuditEvent.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    rows = session.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return AccessLog(
        subject_id=subject_id,
        entries=[
            AccessEntry(
                at=e.at,
                client_id=e.actor_id,
                client_name=name,
                action=e.action,
                purpose=e.purpose,
                case_ref=e.case_ref,
                result=e.result,
            )
            for e, name in rows
        ],
        next_cursor=str(rows[-1][0].id) if more and rows else None,
    )
