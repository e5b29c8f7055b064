"""Records of a department: read one, its history, withdraw it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from credit_hub.access.auth import ClientDep, DepartmentDep
from credit_hub.clock import ClockDep
from credit_hub.db import ReadSessionDep, SessionDep
from credit_hub.errors import (
    Conflict,
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)
from credit_hub.records import service
from credit_hub.records.schemas import RecordHistory, RecordRead, WithdrawRequest

router = APIRouter(prefix="/v1/records", tags=["records"])


@router.get(
    "/{record_id}",
    response_model=RecordRead,
    responses=problem_responses(Unauthorized, NotFound, RequestInvalid),
)
def get_record(
    record_id: uuid.UUID, request: Request, session: ReadSessionDep, client: ClientDep
) -> RecordRead:
    """One record with its current version (the owning department, or an operator)."""
    return service.read(session, record_id, client, request.app.state.keyring)


@router.get(
    "/{record_id}/history",
    response_model=RecordHistory,
    responses=problem_responses(Unauthorized, NotFound, RequestInvalid),
)
def get_record_history(
    record_id: uuid.UUID, request: Request, session: ReadSessionDep, client: ClientDep
) -> RecordHistory:
    """Every kept version of a record, oldest first."""
    return service.history(session, record_id, client, request.app.state.keyring)


@router.post(
    "/{record_id}/withdraw",
    response_model=RecordRead,
    responses=problem_responses(
        MalformedJson, Unauthorized, Forbidden, NotFound, Conflict, RequestInvalid
    ),
)
def withdraw_record(
    record_id: uuid.UUID,
    body: WithdrawRequest,
    request: Request,
    session: SessionDep,
    client: DepartmentDep,
    clock: ClockDep,
) -> RecordRead:
    """Withdraw a record (a decision changed, revoked or found void): it leaves every profile;
    its history stays."""
    return service.withdraw(
        session, record_id, body.reason, client, request.app.state.keyring, now=clock.now()
    )
