"""Rules of objections: who may file against which record, one open case per record, the due
date, the owning department's answer and its link to a correction or withdrawal."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.changes import service as changes
from credit_hub.changes.service import Change, ChangeKind
from credit_hub.errors import PROBLEM_BASE, Conflict, NotFound, invalid_field
from credit_hub.objections.models import Objection, ObjectionStatus, Remedy, Repair
from credit_hub.objections.schemas import (
    ObjectionAnswer,
    ObjectionCreate,
    ObjectionPage,
    ObjectionRead,
)
from credit_hub.records import service as records
from credit_hub.records.models import Record, RecordStatus
from credit_hub.selfservice.auth import Actor


class ObjectionAlreadyOpen(Conflict):
    type = PROBLEM_BASE + "objection-already-open"
    title = "An objection against this record is already open"


class RecordNotEligible(Conflict):
    type = PROBLEM_BASE + "record-not-eligible"
    title = "The record's status does not allow this"


class AlreadyDecided(Conflict):
    type = PROBLEM_BASE + "already-decided"
    title = "This case has been decided already"


class CorrectionMissing(Conflict):
    type = PROBLEM_BASE + "correction-missing"
    title = "Push the corrected record before answering `corrected`"


def record_for(session: Session, record_id: uuid.UUID, actor: Actor) -> Record:
    """The record, locked, if this subject (or an operator) may act on it; 404 otherwise."""
    found = session.scalars(select(Record).where(Record.id == record_id).with_for_update()).first()
    if found is None or (actor.is_subject and found.subject_id != actor.subject_id):
        raise NotFound(f"No record {record_id}.")
    return found


def filed_by(actor: Actor) -> dict[str, Any]:
    return {
        "filed_by_kind": actor.kind,
        "filed_by_id": actor.client.id if actor.client else None,
    }


def audit_as(actor: Actor) -> dict[str, Any]:
    return {"actor": actor.client, "actor_kind": None if actor.client else "subject"}


def objection_read(objection: Objection, today: date) -> ObjectionRead:
    return ObjectionRead.model_validate(
        {
            **{c.key: getattr(objection, c.key) for c in Objection.__table__.columns},
            "overdue": objection.status == ObjectionStatus.OPEN and objection.due_on < today,
        }
    )


def file(
    session: Session, body: ObjectionCreate, *, actor: Actor, now: datetime, due_days: int
) -> Objection:
    record = record_for(session, body.record_id, actor)
    if record.status in (RecordStatus.WITHDRAWN, RecordStatus.REPAIRED):
        raise RecordNotEligible(f"The record is {record.status}: it is no longer published.")
    open_one = session.scalar(
        select(Objection.id).where(
            Objection.record_id == record.id, Objection.status == ObjectionStatus.OPEN
        )
    )
    if open_one is not None:
        raise ObjectionAlreadyOpen(
            "Wait for the answer to the open objection.", objection_id=str(open_one)
        )
    objection = Objection(
        record_id=record.id,
        record_version=record.version,
        subject_id=record.subject_id,
        department_id=record.department_id,
        status=ObjectionStatus.OPEN,
        reason=body.reason,
        attachments=body.attachments,
        filed_at=now,
        due_on=now.date() + timedelta(days=due_days),
        **filed_by(actor),
    )
    session.add(objection)
    record.under_objection = True
    session.flush()
    audit.record(
        session,
        **audit_as(actor),
        action="objection.filed",
        subject_id=record.subject_id,
        record_id=record.id,
        result="open",
        payload={"objection_id": str(objection.id), "due_on": objection.due_on.isoformat()},
    )
    changes.emit(session, [Change.about(record, ChangeKind.OBJECTION_OPENED, now)])
    return objection


def get(session: Session, objection_id: uuid.UUID, actor: Actor) -> Objection:
    found = session.get(Objection, objection_id)
    if found is None or not _may_see(found.subject_id, found.department_id, actor):
        raise NotFound(f"No objection {objection_id}.")
    return found


def _may_see(subject_id: uuid.UUID, department_id: uuid.UUID, actor: Actor) -> bool:
    if actor.is_subject:
        return subject_id == actor.subject_id
    return actor.is_operator or (actor.client is not None and actor.client.id == department_id)


def answer(
    session: Session,
    objection_id: uuid.UUID,
    body: ObjectionAnswer,
    *,
    department: Principal,
    now: datetime,
) -> Objection:
    objection = session.scalars(
        select(Objection).where(Objection.id == objection_id).with_for_update()
    ).first()
    if objection is None or objection.department_id != department.id:
        raise NotFound(f"No objection {objection_id}.")
    if objection.status != ObjectionStatus.OPEN:
        raise AlreadyDecided(f"The objection was answered ({objection.status}).")
    record = session.scalars(
        select(Record).where(Record.id == objection.record_id).with_for_update()
    ).one()
    if body.outcome == "rejected" and body.remedy is not None:
        raise invalid_field("/remedy", "remedy.not_allowed", "A rejected objection has no remedy.")
    if body.outcome == "upheld":
        if body.remedy is None:
            raise invalid_field(
                "/remedy", "remedy.missing", "An upheld objection needs `corrected` or `withdrawn`."
            )
        if body.remedy == Remedy.CORRECTED:
            if record.version <= objection.record_version:
                raise CorrectionMissing(
                    f"The record is still at version {record.version}, the disputed one; push "
                    "the corrected record (same source_id), then answer."
                )
            objection.corrected_version = record.version
        else:
            _withdraw(session, record, objection, body.reasons, department=department, now=now)
        objection.remedy = body.remedy
    objection.status = ObjectionStatus(body.outcome)
    objection.answered_at = now
    objection.answered_by = department.id
    objection.answer = body.reasons
    record.under_objection = False
    record.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=department,
        action="objection.answered",
        subject_id=record.subject_id,
        record_id=record.id,
        result=body.outcome,
        payload={"objection_id": str(objection.id), "remedy": objection.remedy},
    )
    changes.emit(
        session, [Change.about(record, ChangeKind.OBJECTION_CLOSED, now, outcome=body.outcome)]
    )
    return objection


def _withdraw(
    session: Session,
    record: Record,
    objection: Objection,
    reasons: str,
    *,
    department: Principal,
    now: datetime,
) -> None:
    """Withdraw the record as the upheld objection's remedy (the normal withdraw, linked)."""
    if record.status == RecordStatus.WITHDRAWN:
        return
    if record.status == RecordStatus.REPAIRED:
        raise RecordNotEligible("The record was repaired; there is nothing left to withdraw.")
    records.mark_withdrawn(
        session,
        record,
        f"Objection {objection.id} upheld: {reasons}",
        actor=department,
        now=now,
        objection_id=objection.id,
    )


def case_page(
    session: Session,
    model: type[Objection] | type[Repair],
    *,
    actor: Actor,
    conditions: list[Any],
    limit: int,
    before: uuid.UUID | None,
) -> tuple[list[Any], str | None]:
    """A page of due-process cases the actor may see, newest first: a subject its own, a
    department those on its records, an operator all."""
    stmt = select(model).where(*conditions).order_by(model.id.desc()).limit(limit + 1)
    if actor.is_subject:
        stmt = stmt.where(model.subject_id == actor.subject_id)
    elif not actor.is_operator:
        assert actor.client is not None
        stmt = stmt.where(model.department_id == actor.client.id)
    if before is not None:
        stmt = stmt.where(model.id < before)
    found: list[Any] = list(session.scalars(stmt).all())
    more = len(found) > limit
    found = found[:limit]
    return found, str(found[-1].id) if more and found else None


def listing(
    session: Session,
    *,
    actor: Actor,
    status: ObjectionStatus | None,
    overdue: bool,
    today: date,
    limit: int,
    before: uuid.UUID | None,
) -> ObjectionPage:
    conditions: list[Any] = []
    if status is not None:
        conditions.append(Objection.status == status)
    if overdue:
        conditions += [Objection.status == ObjectionStatus.OPEN, Objection.due_on < today]
    found, cursor = case_page(
        session, Objection, actor=actor, conditions=conditions, limit=limit, before=before
    )
    return ObjectionPage(items=[objection_read(o, today) for o in found], next_cursor=cursor)


def objections_of_subject(
    session: Session, subject_id: uuid.UUID, *, today: date
) -> list[ObjectionRead]:
    found = session.scalars(
        select(Objection).where(Objection.subject_id == subject_id).order_by(Objection.id.desc())
    ).all()
    return [objection_read(o, today) for o in found]
