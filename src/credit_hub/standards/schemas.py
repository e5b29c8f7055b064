"""API models of the standards endpoints."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class VersionRead(BaseModel):
    version: str
    status: str = Field(description="current, deprecated (accepted until sunset_on) or retired")
    published_on: date | None
    sunset_on: date | None
    schema_id: str = Field(description="The `$id` of the JSON Schema file")


class StandardRead(BaseModel):
    id: str = Field(examples=["administrative_penalty"])
    title: str = Field(examples=["行政处罚"])
    description: str
    current_version: str
    versions: list[VersionRead]


class ViolationRead(BaseModel):
    index: int = Field(description="Position of the record in the request's `records` list")
    source_id: str | None = Field(description="The record's source_id (or decision number)")
    pointer: str = Field(
        description="RFC 6901 JSON pointer into the record", examples=["/counterpart_uscc"]
    )
    code: str = Field(description="Stable machine code", examples=["format.uscc"])
    message: str


class ValidateRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "1.0",
                    "records": [
                        {
                            "counterpart_name": "示例科技有限公司",
                            "counterpart_category": "法人及非法人组织",
                            "counterpart_uscc": "914403001922038217",
                        }
                    ],
                }
            ]
        }
    )

    version: str | None = Field(default=None, description="Standard version; default: current")
    records: list[Any] = Field(description="The records to check (at most `max_validate_records`)")


class ValidationReport(BaseModel):
    standard: str
    version: str
    received: int
    valid: int
    invalid: int
    errors: list[ViolationRead]
    warnings: list[ViolationRead]
    deprecation: list[str] = Field(default_factory=list)
