"""Subjects (organizations, individual businesses, natural persons) and their name history."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, new_id, utcnow


class SubjectKind(StrEnum):
    ORGANIZATION = "organization"
    INDIVIDUAL_BUSINESS = "individual_business"
    NATURAL_PERSON = "natural_person"


class Subject(Base):
    """One credit subject. Organizations are keyed by USCC; a subject known only by a legacy
    code waits with `uscc` empty until a record links that code to a USCC. Natural persons are
    keyed by an HMAC of their ID number; the clear number exists only encrypted."""

    __tablename__ = "subject"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(24))
    uscc: Mapped[str | None] = mapped_column(String(18), unique=True)
    org_code: Mapped[str | None] = mapped_column(String(9), index=True)
    reg_no: Mapped[str | None] = mapped_column(String(50), index=True)
    person_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    person_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    person_id_masked: Mapped[str | None] = mapped_column(String(64))
    person_birth_date: Mapped[date | None]
    name: Mapped[str] = mapped_column(String(200))
    name_seen_on: Mapped[date | None]
    division: Mapped[str | None] = mapped_column(String(6))
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("subject.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SubjectName(Base):
    __tablename__ = "subject_name"
    __table_args__ = (UniqueConstraint("subject_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subject.id"))
    name: Mapped[str] = mapped_column(String(200))
    first_seen_on: Mapped[date]
    last_seen_on: Mapped[date]


# SQLite's prefix search reads it; PostgreSQL's reads a `COLLATE "C"` index instead (made by a
# migration, as is its trigram index), so there the migrations leave this one out.
Index("ix_subject_name_name", SubjectName.name, info={"only_on": "sqlite"})
