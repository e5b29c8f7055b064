"""API models of pushes: the batch, the submission report and its signed receipt."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Mode(StrEnum):
    PARTIAL = "partial"
    ATOMIC = "atomic"


class SubmissionStatus(StrEnum):
    ACCEPTED = "accepted"
    PARTIALLY_ACCEPTED = "partially_accepted"
    REJECTED = "rejected"
    VALID = "valid"  # a dry run with no rejection: nothing stored


class RecordBatch(BaseModel):
    """The body of `POST /v1/records` (parsed by hand for speed; this model documents it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "standard": "administrative_penalty",
                    "version": "1.0",
                    "mode": "partial",
                    "records": [
                        {
                            "counterpart_name": "福州示例贸易有限公司",
                            "counterpart_category": "法人及非法人组织",
                            "counterpart_uscc": "91350100M000100Y43",
                            "legal_rep_name": "张三",
                            "decision_doc_no": "榕市监处罚〔2026〕15号",
                            "violation_type": "销售超过保质期的食品",
                            "violation_facts": "当事人销售超过保质期的预包装食品共计12件。",
                            "legal_basis": "《中华人民共和国食品安全法》第一百二十四条",
                            "penalty_categories": ["警告", "罚款"],
                            "penalty_content": "警告，并处罚款人民币伍仟元整。",
                            "fine_amount_wan": "0.5",
                            "decision_date": "2026/04/02",
                            "penalty_valid_to": "2026/07/01",
                            "authority_name": "福州市市场监督管理局",
                            "authority_uscc": "11350100MB0123456X",
                            "source_org_name": "福州市市场监督管理局",
                            "source_org_uscc": "11350100MB0123456X",
                        }
                    ],
                }
            ]
        },
    )

    standard: str = Field(description="Standard id, e.g. administrative_penalty")
    version: str | None = Field(default=None, description="Standard version; default: current")
    mode: Mode = Field(
        default=Mode.PARTIAL,
        description="partial: store the valid records, report the rest; atomic: all or nothing",
    )
    records: list[dict[str, Any]] = Field(description="The records (field names may be aliases)")


class Rejection(BaseModel):
    index: int
    source_id: str | None
    pointer: str
    code: str
    message: str


class ErrorSummary(BaseModel):
    code: str
    pointer: str
    count: int
    example: str = Field(description="The message of the first occurrence")


class Counts(BaseModel):
    received: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0


class Receipt(BaseModel):
    signed_payload: str = Field(
        description="Canonical JSON (sorted keys) of submission_id, client_id, standard, "
        "version, mode, body_sha256, received_at, status and counts: the signed bytes"
    )
    signature: str = Field(description="Ed25519 signature of signed_payload's UTF-8 bytes, base64")
    key_id: str = Field(description="Which key of GET /v1/keys signed it")
    algorithm: str = "Ed25519"


class SubmissionReport(BaseModel):
    submission_id: uuid.UUID | None = Field(description="None for a dry run or a rejected batch")
    status: SubmissionStatus
    standard: str
    version: str
    mode: Mode
    dry_run: bool = False
    counts: Counts
    errors: list[Rejection]
    error_summary: list[ErrorSummary]
    warnings: list[Rejection] = Field(default_factory=list)
    deprecation: list[str] = Field(default_factory=list)
    records: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per stored record: index, source_id, record_id, version, outcome",
    )
    body_sha256: str
    received_at: datetime
    receipt: Receipt | None = None
