"""API models of the change feed, watch lists and webhook subscriptions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChangeSubject(BaseModel):
    key: str = Field(description="The subject's USCC, or its hub id when it has none")
    id: uuid.UUID
    kind: str
    uscc: str | None


class ChangeRecord(BaseModel):
    id: uuid.UUID
    standard: str
    source_id: str
    version: int = Field(description="The version this change produced or concerns")
    department_id: uuid.UUID
    status: str = Field(description="The record's status now")


class ChangeRead(BaseModel):
    id: uuid.UUID = Field(description="Event id: the same in the feed and in every webhook")
    cursor: str = Field(description="Resume the feed after this change with ?after=<cursor>")
    kind: str = Field(
        description="created, corrected, withdrawn, repaired, publication_ended, "
        "objection_opened or objection_closed"
    )
    at: datetime
    subject: ChangeSubject
    record: ChangeRecord
    detail: dict[str, Any] = Field(description="What the change itself says (e.g. a reason)")
    data: dict[str, Any] | None = Field(
        description="The record's content at this version, masked as a profile would show it; "
        "null for withdrawn, repaired and publication_ended, and for content the agency may "
        "not see"
    )
    changed_fields: list[str] | None = Field(
        description="Corrections: the fields whose value differs from the previous version"
    )


class ChangePage(BaseModel):
    changes: list[ChangeRead]
    next_cursor: str = Field(description="Pass as ?after= to read on; stable across restarts")
    has_more: bool = Field(description="False: the page reached the head of the feed")


class WatchedSubject(BaseModel):
    key: str
    since: datetime


class WatchlistPage(BaseModel):
    subjects: list[WatchedSubject]
    next_after: str | None
    total: int


class WatchRead(BaseModel):
    key: str = Field(description="The key the subject is watched under (USCC or hub id)")


class WatchlistBulk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(max_length=100_000, description="USCCs, legacy codes or subject ids")
    mode: Literal["add", "remove", "replace"] = "add"


class WatchlistBulkReport(BaseModel):
    received: int
    added: int
    removed: int
    not_found: list[int] = Field(description="Indexes of keys no known subject has")
    watching: int


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="An https:// endpoint on a public address")
    secret: str | None = Field(
        None, min_length=24, max_length=200, description="Omit to have one generated"
    )
    standards: list[str] = Field(
        default_factory=list, description="Only these standards (default: all it may read)"
    )
    watched_only: bool = Field(False, description="Only changes of subjects on the watch list")
    description: str | None = Field(None, max_length=200)


class SubscriptionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2000)
    standards: list[str] | None = None
    watched_only: bool | None = None
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = Field(None, description="true re-enables a disabled subscription")


class SubscriptionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    standards: list[str]
    watched_only: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    consecutive_failures: int


class SubscriptionCreated(SubscriptionRead):
    secret: str = Field(description="The signing secret: shown once, keep it")


class SecretRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(None, min_length=24, max_length=200)


class SecretRead(BaseModel):
    secret: str


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: str = Field(description="pending, delivered, failed or suppressed")
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    response_status: int | None
    error: str | None
    created_at: datetime
