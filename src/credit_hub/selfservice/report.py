"""The data subject's own report: every record held about it, its cases, who read it."""

from __future__ import annotations

from datetime import date

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from credit_hub.access.models import Client
from credit_hub.audit import service as audit
from credit_hub.objections import repairs
from credit_hub.objections import service as objections
from credit_hub.profiles.schemas import Department
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.selfservice.schemas import SelfRecord, SelfReport, SelfSubject
from credit_hub.subjects.models import Subject
from credit_hub.subjects.router import access_log


def _published(record: Record, version: RecordVersion, today: date) -> bool:
    return (
        record.status in (RecordStatus.ACTIVE, RecordStatus.EXPIRED)
        and record.withheld_reason is None
        and version.publish_from <= today
        and (version.publish_until is None or version.publish_until >= today)
    )


def report(session: Session, subject: Subject, *, today: date) -> SelfReport:
    """Everything held about the subject, whatever its status or window, and who read it."""
    rows = session.execute(
        select(Record, RecordVersion, Client.name)
        .join(
            RecordVersion,
            and_(RecordVersion.record_id == Record.id, RecordVersion.version == Record.version),
        )
        .join(Client, Client.id == Record.department_id)
        .where(Record.subject_id == subject.id)
        .order_by(Record.decision_date.desc(), Record.standard, Record.source_id)
    ).all()
    records = [
        SelfRecord(
            id=record.id,
            standard=record.standard,
            source_id=record.source_id,
            version=record.version,
            status=record.status,
            published=_published(record, version, today),
            withheld_reason=record.withheld_reason,
            severity=record.severity,
            decision_date=record.decision_date,
            publish_from=version.publish_from,
            publish_until=version.publish_until,
            repair_from=record.repair_from,
            retain_until=record.retain_until,
            under_objection=record.under_objection,
            withdraw_reason=record.withdraw_reason,
            department=Department(id=record.department_id, name=department_name),
            data=version.data,
        )
        for record, version, department_name in rows
    ]
    audit.record(
        session,
        actor=None,
        actor_kind="subject",
        action="self.report_read",
        subject_id=subject.id,
        result="ok",
        payload={"records": len(records)},
    )
    return SelfReport(
        subject=SelfSubject(
            id=subject.id,
            kind=subject.kind,
            name=subject.name,
            uscc=subject.uscc,
            person_id=subject.person_id_masked,
        ),
        as_of=today,
        records=records,
        objections=objections.objections_of_subject(session, subject.id, today=today),
        repairs=repairs.repairs_of_subject(session, subject.id, today=today),
        access_log=access_log(session, subject.id, limit=500, before=None),
    )
