"""The hand-written queries of the read side: one statement per question, for any number of
subjects (a profile is a screening of one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, and_, case, or_, select
from sqlalchemy.orm import Session

from credit_hub.access.models import Client
from credit_hub.records.models import Record, RecordStatus, RecordVersion

CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def visible_records(
    session: Session,
    subject_ids: Sequence[uuid.UUID],
    *,
    standards: Iterable[str],
    on: date,
    as_of_end: datetime | None = None,
    include_unpublished: bool = False,
    include_withdrawn: bool = False,
) -> list[Row[Any]]:
    """The records of these subjects a reader may see on day `on`, with the version current
    then: the latest version now, or (with `as_of_end`) the one in force at that instant."""
    wanted = sorted(set(standards))
    if not wanted or not subject_ids:
        return []
    status: Any
    if as_of_end is None:
        version_join = and_(
            RecordVersion.record_id == Record.id, RecordVersion.version == Record.version
        )
        status = Record.status
        # Repaired and withheld (minors') records are never shown, whatever the scope.
        conditions = [Record.status != RecordStatus.REPAIRED, Record.withheld_reason.is_(None)]
        if not include_withdrawn:
            conditions.append(Record.status.in_([RecordStatus.ACTIVE, RecordStatus.EXPIRED]))
    else:
        version_join = and_(
            RecordVersion.record_id == Record.id,
            RecordVersion.created_at <= as_of_end,
            or_(RecordVersion.superseded_at.is_(None), RecordVersion.superseded_at > as_of_end),
        )
        withdrawn_then = and_(Record.withdrawn_at.is_not(None), Record.withdrawn_at <= as_of_end)
        status = case((withdrawn_then, RecordStatus.WITHDRAWN), else_=RecordStatus.ACTIVE)
        conditions = [
            Record.created_at <= as_of_end,
            Record.status != RecordStatus.REPAIRED,
            Record.withheld_reason.is_(None),
        ]
        if not include_withdrawn:
            conditions.append(~withdrawn_then)
    if not include_unpublished:
        conditions += [
            RecordVersion.publish_from <= on,
            or_(RecordVersion.publish_until.is_(None), RecordVersion.publish_until >= on),
        ]
    rows: list[Any] = []
    for chunk in _chunks(list(subject_ids)):
        stmt = (
            select(
                Record.id,
                Record.subject_id,
                Record.standard,
                Record.source_id,
                RecordVersion.version,
                status.label("status"),
                Record.severity,
                Record.decision_date,
                RecordVersion.publish_from,
                RecordVersion.publish_until,
                Record.under_objection,
                Record.department_id,
                Client.name.label("department_name"),
                RecordVersion.data,
                RecordVersion.personal_enc,
            )
            .join(RecordVersion, version_join)
            .join(Client, Client.id == Record.department_id)
            .where(Record.subject_id.in_(chunk), Record.standard.in_(wanted), *conditions)
            .order_by(Record.standard, Record.decision_date.desc(), Record.source_id)
        )
        rows.extend(session.execute(stmt).all())
    return rows


def first_record_at(session: Session, subject_id: uuid.UUID) -> datetime | None:
    found: datetime | None = session.scalar(
        select(Record.created_at)
        .where(Record.subject_id == subject_id)
        .order_by(Record.created_at)
        .limit(1)
    )
    return found
