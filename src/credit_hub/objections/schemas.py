"""API models of objections and credit-repair applications."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from credit_hub.objections.models import Remedy


class ObjectionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "record_id": "0193a0c2-7d1e-7c3a-9f10-2b7e4c1d9a01",
                    "reason": "罚款已于2026年5月全额缴纳，决定书记载的金额有误。",
                    "attachments": ["https://files.example/receipts/2026-05-12.pdf"],
                }
            ]
        },
    )

    record_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=4000)
    attachments: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="References (URLs, document numbers) to the evidence; files are not uploaded",
    )


class ObjectionAnswer(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"outcome": "rejected", "reasons": "经复核，处罚决定书记载金额无误。"},
                {"outcome": "upheld", "reasons": "金额录入错误，已更正。", "remedy": "corrected"},
                {"outcome": "upheld", "reasons": "决定已被撤销。", "remedy": "withdrawn"},
            ]
        },
    )

    outcome: Literal["upheld", "rejected"]
    reasons: str = Field(min_length=1, max_length=4000)
    remedy: Remedy | None = Field(
        default=None,
        description="Upheld only: `corrected` (a corrected version was pushed first) or "
        "`withdrawn` (the answer withdraws the record)",
    )


class ObjectionRead(BaseModel):
    id: uuid.UUID
    record_id: uuid.UUID
    record_version: int = Field(description="The version disputed")
    subject_id: uuid.UUID
    department_id: uuid.UUID
    status: str = Field(description="open, upheld or rejected")
    reason: str
    attachments: list[str]
    filed_by_kind: str = Field(description="subject or operator")
    filed_at: datetime
    due_on: date
    overdue: bool
    answered_at: datetime | None
    answer: str | None
    remedy: str | None
    corrected_version: int | None


class ObjectionPage(BaseModel):
    items: list[ObjectionRead]
    next_cursor: str | None


class RepairCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "record_id": "0193a0c2-7d1e-7c3a-9f10-2b7e4c1d9a01",
                    "corrective_actions": "已缴清罚款，下架全部过期食品并建立进货查验制度。",
                    "commitment": "本单位承诺今后严格遵守食品安全法律法规，如有违反自愿接受惩戒。",
                    "evidence": ["缴款书 No.3501-2026-0042", "https://files.example/c/commit.pdf"],
                }
            ]
        },
    )

    record_id: uuid.UUID
    corrective_actions: str = Field(
        min_length=1,
        max_length=4000,
        description="How the behaviour was corrected and the obligations fulfilled",
    )
    commitment: str = Field(min_length=1, max_length=4000, description="The credit commitment")
    evidence: list[str] = Field(default_factory=list, max_length=20)


class RepairDecision(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"outcome": "granted", "reasons": "义务已履行，准予修复。"}]
        },
    )

    outcome: Literal["granted", "refused"]
    reasons: str = Field(min_length=1, max_length=4000)


class RepairRead(BaseModel):
    id: uuid.UUID
    record_id: uuid.UUID
    subject_id: uuid.UUID
    department_id: uuid.UUID
    status: str = Field(description="pending, granted or refused")
    corrective_actions: str
    commitment: str
    evidence: list[str]
    filed_by_kind: str
    filed_at: datetime
    decide_by: date = Field(description="The department's deadline (working days)")
    case_due_on: date = Field(description="The whole case's deadline (working days)")
    overdue: bool = Field(description="Pending after the department's deadline")
    decided_at: datetime | None
    decision_reasons: str | None


class RepairPage(BaseModel):
    items: list[RepairRead]
    next_cursor: str | None


class MaintenanceRead(BaseModel):
    on: date
    expired: int = Field(description="Records whose publication ended, now `expired`")
    purged_records: int = Field(description="Records past retention: payload and ids erased")
    purged_subjects: int = Field(description="Natural persons whose encrypted ID was erased")
    sessions_deleted: int
    skipped: bool = Field(description="Another run held the lock; nothing done")
