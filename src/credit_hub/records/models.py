"""A record (one fact from one department under one standard) and its kept versions."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, JsonDoc, new_id, utcnow


class RecordStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    REPAIRED = "repaired"
    EXPIRED = "expired"


class Record(Base):
    __tablename__ = "record"
    # The natural key: a concurrent second push of the same key can never make a second record.
    # source_id leads so that a batch's lookup probes the index per id, statistics or not.
    __table_args__ = (UniqueConstraint("source_id", "department_id", "standard"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    department_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"))
    standard: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[str] = mapped_column(String(128))
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"))
    version: Mapped[int]
    schema_id: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RecordStatus.ACTIVE)
    severity: Mapped[str | None] = mapped_column(String(16))
    severity_source: Mapped[str | None] = mapped_column(String(16))
    decision_date: Mapped[date]
    publish_from: Mapped[date]
    publish_until: Mapped[date | None]
    repair_from: Mapped[date | None]
    retain_until: Mapped[date | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    under_objection: Mapped[bool] = mapped_column(default=False, server_default=false())
    withdrawn_at: Mapped[datetime | None]
    withdraw_reason: Mapped[str | None] = mapped_column(String(2000))
    # Never published whatever its window says ("minor": the person was under 18 at the
    # decision); kept for the subject's own report and the department.
    withheld_reason: Mapped[str | None] = mapped_column(String(32))
    # The current version's `fine_amount_wan` (exact decimal text), for summaries: they then
    # read the record table alone.
    fine_amount_wan: Mapped[str | None] = mapped_column(String(64))
    # Past retention: personal identifiers and payload erased by `credit-hub maintenance`.
    purged_at: Mapped[datetime | None]


Index(
    "ix_record_subject_id_standard",
    Record.subject_id,
    Record.standard,
    info={"only_on": "postgresql"},
)
# SQLite: every column a summary filters on or reads, so that a screening's ~5,000 records are
# read from the index alone, in subject order, not looked up one by one in the table (see the
# migration that made it).
Index(
    "ix_record_subject_facts",
    Record.subject_id,
    Record.standard,
    Record.status,
    Record.withheld_reason,
    Record.publish_from,
    Record.publish_until,
    Record.under_objection,
    Record.decision_date,
    Record.fine_amount_wan,
    info={"only_on": "sqlite"},
)


class RecordVersion(Base):
    """One kept version. `data` holds the normalized record with personal identifiers masked;
    their clear values live only in `personal_enc` (Fernet). Numbers run 1, 2, 3... per record;
    at an instant the version in force is the highest-numbered one created by then (see
    `profiles.queries`). Nothing is written to a version once stored, but for the purge of its
    payload."""

    __tablename__ = "record_version"

    record_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("record.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    schema_id: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    originals: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    personal_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"))
    submission_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("submission.id"))
    publish_from: Mapped[date]
    publish_until: Mapped[date | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
