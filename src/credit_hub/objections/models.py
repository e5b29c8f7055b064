"""Objections against records and credit-repair applications, with their deadlines."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, JsonDoc, new_id, utcnow


class ObjectionStatus(StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    REJECTED = "rejected"


class Remedy(StrEnum):
    CORRECTED = "corrected"  # the department pushed a corrected version first
    WITHDRAWN = "withdrawn"  # the answer withdraws the record


class RepairStatus(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    REFUSED = "refused"


class Objection(Base):
    __tablename__ = "objection"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    record_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("record.id"), index=True)
    record_version: Mapped[int]  # the version disputed
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"), index=True)
    department_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"))
    status: Mapped[str] = mapped_column(String(16), default=ObjectionStatus.OPEN)
    reason: Mapped[str] = mapped_column(Text)
    attachments: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    filed_by_kind: Mapped[str] = mapped_column(String(16))  # subject or operator
    filed_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("client.id"))
    filed_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_on: Mapped[date]
    answered_at: Mapped[datetime | None]
    answered_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("client.id"))
    answer: Mapped[str | None] = mapped_column(Text)
    remedy: Mapped[str | None] = mapped_column(String(16))
    corrected_version: Mapped[int | None]


# At most one open objection per record, whatever races the application's own check loses.
Index(
    "uq_objection_open_record",
    Objection.record_id,
    unique=True,
    sqlite_where=text("status = 'open'"),
    postgresql_where=text("status = 'open'"),
)
Index("ix_objection_department_id_status", Objection.department_id, Objection.status)


class Repair(Base):
    __tablename__ = "repair"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    record_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("record.id"), index=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"), index=True)
    department_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"))
    status: Mapped[str] = mapped_column(String(16), default=RepairStatus.PENDING)
    corrective_actions: Mapped[str] = mapped_column(Text)
    commitment: Mapped[str] = mapped_column(Text)
    evidence: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    filed_by_kind: Mapped[str] = mapped_column(String(16))
    filed_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("client.id"))
    filed_at: Mapped[datetime] = mapped_column(default=utcnow)
    decide_by: Mapped[date]
    case_due_on: Mapped[date]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("client.id"))
    decision_reasons: Mapped[str | None] = mapped_column(Text)


Index(
    "uq_repair_pending_record",
    Repair.record_id,
    unique=True,
    sqlite_where=text("status = 'pending'"),
    postgresql_where=text("status = 'pending'"),
)
Index("ix_repair_department_id_status", Repair.department_id, Repair.status)
