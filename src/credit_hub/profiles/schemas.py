"""API models of profiles, screening and search."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from credit_hub.isotime import IsoDate


class FormerName(BaseModel):
    name: str
    first_seen_on: date
    last_seen_on: date


class Region(BaseModel):
    division: str = Field(description="GB/T 2260 code of the registering office (USCC 3-8)")
    province: str | None


class SubjectIdentity(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="organization, individual_business or natural_person")
    name: str
    uscc: str | None
    org_code: str | None
    reg_no: str | None
    person_id: str | None = Field(
        description="Natural persons: the ID number, masked unless the client holds personal_data"
    )
    former_names: list[FormerName]
    region: Region | None
    registration_category: str | None


class Department(BaseModel):
    id: uuid.UUID
    name: str


class ProfileRecord(BaseModel):
    id: uuid.UUID
    standard: str
    source_id: str
    version: int
    status: str
    severity: str | None
    decision_date: date
    publish_from: date
    publish_until: date | None
    under_objection: bool
    department: Department
    data: dict[str, Any] = Field(description="The record's normalized fields (masked)")


class Summary(BaseModel):
    counts: dict[str, int] = Field(description="Records shown, per standard")
    active_penalties: int
    largest_fine_wan: str | None = Field(description="Largest fine among them, in 万元")
    under_objection: bool
    objections_open: int
    latest_decision_date: date | None


class Profile(BaseModel):
    subject: SubjectIdentity
    as_of: date
    records: dict[str, list[ProfileRecord]] = Field(description="Current records by standard")
    summary: Summary


class ProfileQuery(BaseModel):
    """The query of `GET /v1/subjects/{key}/profile`, which its handler reads itself (see
    `query_parameters`)."""

    purpose: str | None = Field(
        None,
        description="Why the profile is read: one of the configured purposes "
        "(procurement, licensing_review, credit_service, ...)",
    )
    case_ref: str | None = Field(
        None, description="The case, file or tender this read is for", max_length=200
    )
    as_of: IsoDate | None = Field(None, description="The profile as it was on that day")
    standards: list[str] | None = Field(None, description="Only these standards")
    include: list[str] | None = Field(
        None, description="unpublished, withdrawn (needs the 'unpublished' scope)"
    )


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for a query model's fields, as FastAPI writes them for
    optional `Query()` parameters."""
    properties = model.model_json_schema()["properties"]
    return [
        {"name": name, "in": "query", "required": False, "schema": schema}
        | ({"description": schema["description"]} if "description" in schema else {})
        for name, schema in properties.items()
    ]


class LookupRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_type": "身份证",
                    "id_number": "11010519491231002X",
                    "purpose": "law_enforcement",
                    "case_ref": "(2026)闽0102执123号",
                }
            ]
        },
    )

    id_type: str = Field(default="身份证", max_length=64)
    id_number: str = Field(min_length=1, max_length=64)
    purpose: str = Field(max_length=64)
    case_ref: str = Field(min_length=1, max_length=200)
    as_of: IsoDate | None = None
    standards: list[str] | None = None


class ScreenRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "identifiers": ["91350100M000100Y43", "914403001922038216"],
                    "purpose": "procurement",
                    "case_ref": "FJZC2026-G-001",
                }
            ]
        },
    )

    identifiers: list[str] = Field(
        description="USCCs, organization codes, registration numbers "
        "or subject ids: at most 1,000, no duplicates"
    )
    purpose: str = Field(max_length=64)
    case_ref: str = Field(min_length=1, max_length=200)
    standards: list[str] | None = None


class ScreenResult(BaseModel):
    identifier: str
    found: bool
    subject_id: uuid.UUID | None = None
    kind: str | None = None
    name: str | None = None
    summary: Summary | None = None


class ScreenReport(BaseModel):
    purpose: str
    case_ref: str
    as_of: date
    checked: int
    found: int
    results: list[ScreenResult]


class SearchHit(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    matched_name: str = Field(description="The current or former name that matched")
    uscc: str | None
    region: str | None


class SearchPage(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None


class AccessEntry(BaseModel):
    at: datetime
    client_id: uuid.UUID | None
    client_name: str | None
    action: str
    purpose: str | None
    case_ref: str | None
    result: str | None


class AccessLog(BaseModel):
    subject_id: uuid.UUID
    entries: list[AccessEntry]
    next_cursor: str | None
