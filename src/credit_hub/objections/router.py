"""Objections and credit repairs: the subject (or an operator) files, the owning department
answers or decides, operators follow what is overdue."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request

from credit_hub.access.auth import DepartmentDep, OperatorDep
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep, SessionDep
from credit_hub.errors import (
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)
from credit_hub.objections import maintenance, repairs, service
from credit_hub.objections.models import ObjectionStatus, RepairStatus
from credit_hub.objections.schemas import (
    MaintenanceRead,
    ObjectionAnswer,
    ObjectionCreate,
    ObjectionPage,
    ObjectionRead,
    RepairCreate,
    RepairDecision,
    RepairPage,
    RepairRead,
)
from credit_hub.selfservice.auth import Actor, ActorDep, SubjectOrOperatorDep

router = APIRouter(tags=["due process"])

_AUTH = (Unauthorized, Forbidden)
Limit = Annotated[int, Query(ge=1, le=500)]
Before = Annotated[uuid.UUID | None, Query(description="Cursor: the page's next_cursor")]
Overdue = Annotated[bool, Query(description="Only open cases past their deadline")]


def _no_agencies(actor: Actor) -> None:
    if not (actor.is_subject or actor.is_operator or actor.kind == "department"):
        raise Forbidden("Objections and repairs are for subjects, departments and operators.")


@router.post(
    "/v1/objections",
    status_code=201,
    response_model=ObjectionRead,
    responses=problem_responses(
        MalformedJson, *_AUTH, NotFound, service.ObjectionAlreadyOpen, RequestInvalid
    ),
)
def file_objection(
    body: ObjectionCreate,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    actor: SubjectOrOperatorDep,
) -> ObjectionRead:
    """File an objection against a record of the subject. While open, the record carries
    `under_objection` in every profile and screening; the answer is due in 20 days."""
    due_days = request.app.state.settings.objection_due_days
    found = service.file(session, body, actor=actor, now=clock.now(), due_days=due_days)
    return service.objection_read(found, clock.today())


@router.get(
    "/v1/objections",
    response_model=ObjectionPage,
    responses=problem_responses(*_AUTH, RequestInvalid),
)
def list_objections(
    session: SessionDep,
    clock: ClockDep,
    actor: ActorDep,
    status: ObjectionStatus | None = None,
    overdue: Overdue = False,
    limit: Limit = 100,
    before: Before = None,
) -> ObjectionPage:
    """Objections, newest first: a department sees those against its records, the subject its
    own, an operator all (`overdue=true`: open past the due date)."""
    _no_agencies(actor)
    return service.listing(
        session,
        actor=actor,
        status=status,
        overdue=overdue,
        today=clock.today(),
        limit=limit,
        before=before,
    )


@router.get(
    "/v1/objections/{objection_id}",
    response_model=ObjectionRead,
    responses=problem_responses(*_AUTH, NotFound, RequestInvalid),
)
def get_objection(
    objection_id: uuid.UUID, session: SessionDep, clock: ClockDep, actor: ActorDep
) -> ObjectionRead:
    """One objection (its subject, the owning department, or an operator)."""
    return service.objection_read(service.get(session, objection_id, actor), clock.today())


@router.post(
    "/v1/objections/{objection_id}/answer",
    response_model=ObjectionRead,
    responses=problem_responses(
        MalformedJson,
        *_AUTH,
        NotFound,
        service.AlreadyDecided,
        service.CorrectionMissing,
        RequestInvalid,
    ),
)
def answer_objection(
    objection_id: uuid.UUID,
    body: ObjectionAnswer,
    session: SessionDep,
    clock: ClockDep,
    department: DepartmentDep,
) -> ObjectionRead:
    """The owning department answers: `rejected` with reasons, or `upheld` with a remedy:
    `corrected` (push the corrected record first) or `withdrawn` (this answer withdraws it).
    Either way the case closes and the flag leaves the record."""
    found = service.answer(session, objection_id, body, department=department, now=clock.now())
    return service.objection_read(found, clock.today())


@router.post(
    "/v1/repairs",
    status_code=201,
    response_model=RepairRead,
    responses=problem_responses(
        MalformedJson,
        *_AUTH,
        NotFound,
        service.RecordNotEligible,
        repairs.RepairTooEarly,
        RequestInvalid,
    ),
)
def apply_for_repair(
    body: RepairCreate,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    actor: SubjectOrOperatorDep,
) -> RepairRead:
    """Apply for credit repair of a sanction after its minimum publication period (before it,
    422 `repair-too-early` with `repair_from`). The department decides within 3 working days."""
    settings = request.app.state.settings
    found = repairs.apply(
        session,
        body,
        actor=actor,
        now=clock.now(),
        today=clock.today(),
        decision_days=settings.repair_decision_working_days,
        case_days=settings.repair_case_working_days,
    )
    return repairs.repair_read(found, clock.today())


@router.get(
    "/v1/repairs",
    response_model=RepairPage,
    responses=problem_responses(*_AUTH, RequestInvalid),
)
def list_repairs(
    session: SessionDep,
    clock: ClockDep,
    actor: ActorDep,
    status: RepairStatus | None = None,
    overdue: Overdue = False,
    limit: Limit = 100,
    before: Before = None,
) -> RepairPage:
    """Repair applications, newest first, seen as for objections."""
    _no_agencies(actor)
    return repairs.listing(
        session,
        actor=actor,
        status=status,
        overdue=overdue,
        today=clock.today(),
        limit=limit,
        before=before,
    )


@router.get(
    "/v1/repairs/{repair_id}",
    response_model=RepairRead,
    responses=problem_responses(*_AUTH, NotFound, RequestInvalid),
)
def get_repair(
    repair_id: uuid.UUID, session: SessionDep, clock: ClockDep, actor: ActorDep
) -> RepairRead:
    """One repair application."""
    return repairs.repair_read(repairs.get(session, repair_id, actor), clock.today())


@router.post(
    "/v1/repairs/{repair_id}/decision",
    response_model=RepairRead,
    responses=problem_responses(
        MalformedJson, *_AUTH, NotFound, service.AlreadyDecided, RequestInvalid
    ),
)
def decide_repair(
    repair_id: uuid.UUID,
    body: RepairDecision,
    session: SessionDep,
    clock: ClockDep,
    department: DepartmentDep,
) -> RepairRead:
    """The owning department grants or refuses. A grant marks the record `repaired`: it leaves
    profiles, screening and the change feed, and is kept for audit."""
    found = repairs.decide(session, repair_id, body, department=department, now=clock.now())
    return repairs.repair_read(found, clock.today())


@router.post(
    "/v1/admin/maintenance",
    response_model=MaintenanceRead,
    responses=problem_responses(*_AUTH),
    tags=["admin"],
)
def run_maintenance(db: DbDep, clock: ClockDep, operator: OperatorDep) -> MaintenanceRead:
    """Run the maintenance job now (it also runs daily in the service, and as
    `credit-hub maintenance`): expire records past publication, purge those past retention."""
    report = maintenance.run_once(db, clock, actor=operator)
    return MaintenanceRead.model_validate(asdict(report))
