"""API models of access codes, subject sessions and the subject's own report."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from credit_hub.objections.schemas import ObjectionRead, RepairRead
from credit_hub.profiles.schemas import AccessLog, Department


class AccessCodeCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"subject": "91350100M000100Y43"}, {"valid_days": 7}]},
    )

    subject: str | None = Field(
        default=None,
        max_length=100,
        description="Subject id, USCC, organization code or registration number "
        "(POST /v1/admin/access-codes only; the other route takes it from the path)",
    )
    id_type: str | None = Field(default=None, max_length=64, description="Natural persons")
    id_number: str | None = Field(default=None, max_length=64, description="Natural persons")
    valid_days: int | None = Field(default=None, ge=1, le=90, description="Default: 14 days")

    @model_validator(mode="after")
    def _person_pair(self) -> AccessCodeCreate:
        if self.id_number is not None and self.subject is not None:
            raise ValueError("give either subject or id_number, not both")
        return self


class AccessCodeIssued(BaseModel):
    id: uuid.UUID
    subject_id: uuid.UUID
    code: str = Field(description="Shown once: hand it to the subject; only its hash is kept")
    expires_at: datetime


class SessionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"code": "K7QX2-M9TRP-4HWZA-NB3CE"}]}
    )

    code: str = Field(min_length=1, max_length=64)


class SessionIssued(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    token_type: str = "bearer"
    subject_id: uuid.UUID
    expires_at: datetime


class SelfSubject(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    uscc: str | None
    person_id: str | None = Field(description="Natural persons: the ID number, masked")


class SelfRecord(BaseModel):
    id: uuid.UUID
    standard: str
    source_id: str
    version: int
    status: str = Field(description="active, withdrawn, repaired or expired")
    published: bool = Field(description="Shown to agencies today")
    withheld_reason: str | None = Field(description="Why it is never published (e.g. minor)")
    severity: str | None
    decision_date: date
    publish_from: date
    publish_until: date | None
    repair_from: date | None = Field(description="From this day a credit repair may be asked")
    retain_until: date | None
    under_objection: bool
    withdraw_reason: str | None
    department: Department
    data: dict[str, Any] = Field(description="The record's fields (identifiers masked)")


class SelfReport(BaseModel):
    subject: SelfSubject
    as_of: date
    records: list[SelfRecord]
    objections: list[ObjectionRead]
    repairs: list[RepairRead]
    access_log: AccessLog
