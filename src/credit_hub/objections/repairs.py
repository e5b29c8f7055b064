"""Rules of credit repair: when a record may be repaired, the deadlines in working days, and
the owning department's decision (a grant takes the record out of publication and sharing)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.changes import service as changes
from credit_hub.changes.service import Change, ChangeKind
from credit_hub.errors import PROBLEM_BASE, Conflict, NotFound, RequestInvalid
from credit_hub.objections.calendar import add_working_days
from credit_hub.objections.models import Repair, RepairStatus
from credit_hub.objections.schemas import RepairCreate, RepairDecision, RepairPage, RepairRead
from credit_hub.objections.service import (
    AlreadyDecided,
    RecordNotEligible,
    audit_as,
    case_page,
    filed_by,
    record_for,
)
from credit_hub.records.models import Record, RecordStatus
from credit_hub.selfservice.auth import Actor


class RepairTooEarly(RequestInvalid):
    type = PROBLEM_BASE + "repair-too-early"
    title = "The record's minimum publication period has not ended"


class RepairAlreadyPending(Conflict):
    type = PROBLEM_BASE + "repair-already-pending"
    title = "A repair application for this record is already pending"


def repair_read(repair: Repair, today: date) -> RepairRead:
    return RepairRead.model_validate(
        {
            **{c.key: getattr(repair, c.key) for c in Repair.__table__.columns},
            "overdue": repair.status == RepairStatus.PENDING and repair.decide_by < today,
        }
    )


def apply(
    session: Session,
    body: RepairCreate,
    *,
    actor: Actor,
    now: datetime,
    today: date,
    decision_days: int,
    case_days: int,
) -> Repair:
    record = record_for(session, body.record_id, actor)
    if record.status in (RecordStatus.WITHDRAWN, RecordStatus.REPAIRED):
        raise RecordNotEligible(f"The record is {record.status}; it cannot be repaired.")
    if record.repair_from is None:
        raise RecordNotEligible("This record is not a sanction with a publication period.")
    if today < record.repair_from:
        message = (
            f"The minimum publication period ends on {record.repair_from}; "
            "apply on or after that day."
        )
        raise RepairTooEarly(
            message,
            repair_from=record.repair_from.isoformat(),
            errors=[{"pointer": "/record_id", "code": "repair.too_early", "message": message}],
        )
    pending = session.scalar(
        select(Repair.id).where(
            Repair.record_id == record.id, Repair.status == RepairStatus.PENDING
        )
    )
    if pending is not None:
        raise RepairAlreadyPending("Wait for the pending decision.", repair_id=str(pending))
    repair = Repair(
        record_id=record.id,
        subject_id=record.subject_id,
        department_id=record.department_id,
        status=RepairStatus.PENDING,
        corrective_actions=body.corrective_actions,
        commitment=body.commitment,
        evidence=body.evidence,
        filed_at=now,
        decide_by=add_working_days(today, decision_days),
        case_due_on=add_working_days(today, case_days),
        **filed_by(actor),
    )
    session.add(repair)
    session.flush()
    audit.record(
        session,
        **audit_as(actor),
        action="repair.applied",
        subject_id=record.subject_id,
        record_id=record.id,
        result="pending",
        payload={"repair_id": str(repair.id), "decide_by": repair.decide_by.isoformat()},
    )
    return repair


def get(session: Session, repair_id: uuid.UUID, actor: Actor) -> Repair:
    found = session.get(Repair, repair_id)
    visible = found is not None and (
        (actor.is_subject and found.subject_id == actor.subject_id)
        or actor.is_operator
        or (actor.client is not None and actor.client.id == found.department_id)
    )
    if found is None or not visible:
        raise NotFound(f"No repair application {repair_id}.")
    return found


def decide(
    session: Session,
    repair_id: uuid.UUID,
    body: RepairDecision,
    *,
    department: Principal,
    now: datetime,
) -> Repair:
    repair = session.scalars(select(Repair).where(Repair.id == repair_id).with_for_update()).first()
    if repair is None or repair.department_id != department.id:
        raise NotFound(f"No repair application {repair_id}.")
    if repair.status != RepairStatus.PENDING:
        raise AlreadyDecided(f"The application was decided ({repair.status}).")
    record = session.scalars(
        select(Record).where(Record.id == repair.record_id).with_for_update()
    ).one()
    if body.outcome == "granted":
        if record.status in (RecordStatus.WITHDRAWN, RecordStatus.REPAIRED):
            raise RecordNotEligible(f"The record is {record.status} already.")
        record.status = RecordStatus.REPAIRED
        record.updated_at = now
    repair.status = RepairStatus(body.outcome)
    repair.decided_at = now
    repair.decided_by = department.id
    repair.decision_reasons = body.reasons
    session.flush()
    audit.record(
        session,
        actor=department,
        action="repair.decided",
        subject_id=record.subject_id,
        record_id=record.id,
        result=body.outcome,
        payload={"repair_id": str(repair.id)},
    )
    if body.outcome == "granted":
        changes.emit(session, [Change.about(record, ChangeKind.REPAIRED, now)])
    return repair


def listing(
    session: Session,
    *,
    actor: Actor,
    status: RepairStatus | None,
    overdue: bool,
    today: date,
    limit: int,
    before: uuid.UUID | None,
) -> RepairPage:
    conditions: list[Any] = []
    if status is not None:
        conditions.append(Repair.status == status)
    if overdue:
        conditions += [Repair.status == RepairStatus.PENDING, Repair.decide_by < today]
    found, cursor = case_page(
        session, Repair, actor=actor, conditions=conditions, limit=limit, before=before
    )
    return RepairPage(items=[repair_read(r, today) for r in found], next_cursor=cursor)


def repairs_of_subject(session: Session, subject_id: uuid.UUID, *, today: date) -> list[RepairRead]:
    found = session.scalars(
        select(Repair).where(Repair.subject_id == subject_id).order_by(Repair.id.desc())
    ).all()
    return [repair_read(r, today) for r in found]
