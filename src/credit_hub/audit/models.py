"""Audit events: each row stores the hash of the previous one, so an edit or a gap shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, JsonDoc, utcnow

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
AuditId = BigInteger().with_variant(Integer(), "sqlite")


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(AuditId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[uuid.UUID | None]
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[uuid.UUID | None]
    record_id: Mapped[uuid.UUID | None]
    submission_id: Mapped[uuid.UUID | None]
    purpose: Mapped[str | None] = mapped_column(String(64))
    case_ref: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


Index("ix_audit_event_subject_id_at", AuditEvent.subject_id, AuditEvent.at)
Index("ix_audit_event_actor_id_at", AuditEvent.actor_id, AuditEvent.at)
