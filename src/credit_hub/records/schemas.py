"""API models of records and their versions."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class VersionRead(BaseModel):
    version: int
    schema_id: str
    data: dict[str, Any] = Field(description="Normalized record; personal identifiers masked")
    originals: dict[str, Any] | None = Field(
        description="Values as sent where normalization changed their meaning (legacy codes, "
        "long-term dates)"
    )
    submission_id: uuid.UUID | None
    created_at: datetime
    superseded_at: datetime | None = Field(
        description="When the next version replaced this one (its created_at); null for the "
        "current version"
    )


class RecordRead(BaseModel):
    id: uuid.UUID
    standard: str
    source_id: str
    subject_id: uuid.UUID
    department_id: uuid.UUID
    status: str
    version: int
    severity: str | None
    severity_source: str | None
    decision_date: date
    publish_from: date
    publish_until: date | None
    repair_from: date | None
    created_at: datetime
    updated_at: datetime
    withdrawn_at: datetime | None
    withdraw_reason: str | None
    current: VersionRead


class RecordHistory(BaseModel):
    record_id: uuid.UUID
    versions: list[VersionRead]


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "处罚决定已被复议机关撤销"}]},
    )

    reason: str = Field(min_length=1, max_length=2000)
