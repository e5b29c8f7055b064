"""Clients and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from credit_hub.db import Base, JsonDoc, new_id, utcnow


class ClientKind(StrEnum):
    DEPARTMENT = "department"
    AGENCY = "agency"
    OPERATOR = "operator"


class Scope(StrEnum):
    PERSONAL_DATA = "personal_data"  # see natural persons' identifiers unmasked, look them up
    UNPUBLISHED = "unpublished"  # see records outside their publication window or withdrawn


class Client(Base):
    __tablename__ = "client"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    uscc: Mapped[str | None] = mapped_column(String(18), index=True)
    standards: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    scopes: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    # USCCs of organs a department may push records for, besides its own.
    pushes_for: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]

    keys: Mapped[list[ApiKey]] = relationship(back_populates="client", lazy="raise")


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    client: Mapped[Client] = relationship(back_populates="keys", lazy="raise")
