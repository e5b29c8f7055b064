"""The change feed, watch lists, webhook subscriptions and their outbox of deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, JsonDoc, new_id, utcnow

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Position = BigInteger().with_variant(Integer(), "sqlite")


class ChangeEvent(Base):
    """One change, at its place in the feed. `position` is gap-free and in commit order: it is
    assigned under the lock that serializes appends (see service.emit)."""

    __tablename__ = "change_event"

    position: Mapped[int] = mapped_column(Position, primary_key=True, autoincrement=False)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    kind: Mapped[str] = mapped_column(String(24))
    record_id: Mapped[uuid.UUID]
    version: Mapped[int]
    subject_id: Mapped[uuid.UUID]
    # The subject's key when the change happened: its USCC, else its id (what watch lists hold).
    subject_key: Mapped[str] = mapped_column(String(36))
    standard: Mapped[str] = mapped_column(String(64))
    department_id: Mapped[uuid.UUID]
    at: Mapped[datetime]
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDoc)


Index("ix_change_event_subject_key_position", ChangeEvent.subject_key, ChangeEvent.position)


class Watch(Base):
    """A subject an agency follows, by key (a USCC may be watched before the hub knows it)."""

    __tablename__ = "watch"

    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"), primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    __tablename__ = "webhook_subscription"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    standards: Mapped[list[str]] = mapped_column(JsonDoc, default=list)  # empty: all it may read
    watched_only: Mapped[bool] = mapped_column(default=False, server_default=false())
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default="0")


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed; a manual redeliver queues it again
    SUPPRESSED = "suppressed"  # no longer visible to the agency (repaired, scope lost)


class Delivery(Base):
    """One event for one subscription: the outbox row, written in the change's transaction,
    and the delivery log the agency reads."""

    __tablename__ = "webhook_delivery"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subscription_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_subscription.id"))
    position: Mapped[int] = mapped_column(Position)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    response_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


Index("ix_webhook_delivery_status_next_attempt_at", Delivery.status, Delivery.next_attempt_at)
Index("ix_webhook_delivery_subscription_id_id", Delivery.subscription_id, Delivery.id)
