"""Access codes an operator issues to a data subject, and the short sessions they open."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, new_id, utcnow


class AccessCode(Base):
    """A one-time code: only its SHA-256 is stored; it opens one session, once, before expiry."""

    __tablename__ = "access_code"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class SubjectSession(Base):
    """A short-lived bearer token of a data subject, opened by redeeming an access code."""

    __tablename__ = "subject_session"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"), index=True)
    access_code_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("access_code.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
