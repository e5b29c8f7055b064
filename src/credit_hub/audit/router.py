"""Operators read the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from credit_hub.access.auth import OperatorDep
from credit_hub.audit.models import AuditEvent
from credit_hub.db import ReadSessionDep
from credit_hub.errors import Forbidden, RequestInvalid, Unauthorized, problem_responses
from credit_hub.isotime import IsoDateTime

router = APIRouter(prefix="/v1/admin/audit", tags=["admin"])


class AuditEventRead(BaseModel):
    id: int
    at: datetime
    actor_id: uuid.UUID | None
    actor_kind: str
    action: str
    subject_id: uuid.UUID | None
    record_id: uuid.UUID | None
    submission_id: uuid.UUID | None
    purpose: str | None
    case_ref: str | None
    request_id: str | None
    result: str | None
    payload: dict[str, Any] | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventRead]
    next_before: int | None


@router.get(
    "",
    response_model=AuditPage,
    responses=problem_responses(Unauthorized, Forbidden, RequestInvalid),
)
def list_audit_events(
    session: ReadSessionDep,
    operator: OperatorDep,
    client_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    before: Annotated[
        int | None, Query(description="Page cursor: events with a smaller id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The audit log, newest first, filtered by client, subject, action and time."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if client_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == client_id)
    if subject_id is not None:
        stmt = stmt.where(AuditEvent.subject_id == subject_id)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    events = session.scalars(stmt).all()
    more = len(events) > limit
    events = events[:limit]
    return AuditPage(
        items=[AuditEventRead.model_validate(e, from_attributes=True) for e in events],
        next_before=events[-1].id if more and events else None,
    )
