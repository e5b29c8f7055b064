"""Public endpoints of the published standards: list, download, validate without storing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from credit_hub import ratelimit
from credit_hub.bodies import read_json_body
from credit_hub.errors import (
    MalformedBody,
    MalformedJson,
    PayloadTooLarge,
    RequestInvalid,
    StandardNotFound,
    problem_responses,
)
from credit_hub.standards import service
from credit_hub.standards.registry import Standards
from credit_hub.standards.schemas import StandardRead, ValidateRequest, ValidationReport

# No key needed: each address gets the per-client rate (the validator costs CPU).
router = APIRouter(
    prefix="/v1/standards", tags=["standards"], dependencies=[Depends(ratelimit.by_address)]
)


async def get_standards(request: Request) -> Standards:
    standards: Standards = request.app.state.standards
    return standards


StandardsDep = Annotated[Standards, Depends(get_standards)]


@router.get("", response_model=list[StandardRead])
def list_standards(standards: StandardsDep) -> list[StandardRead]:
    """Every published data standard with its versions, their status and sunset dates."""
    return [service.describe(standard) for standard in standards]


@router.get(
    "/{standard_id}",
    response_model=StandardRead,
    responses=problem_responses(StandardNotFound, RequestInvalid),
)
def get_standard(standard_id: str, standards: StandardsDep) -> StandardRead:
    """One standard and its versions."""
    return service.describe(standards.get(standard_id))


@router.get(
    "/{standard_id}/versions/{version}",
    responses={
        200: {
            "description": "The JSON Schema (draft 2020-12) of that version, unchanged since "
            "publication",
            "content": {"application/schema+json": {}},
        },
        **problem_responses(StandardNotFound, RequestInvalid),
    },
)
def get_standard_version(standard_id: str, version: str, standards: StandardsDep) -> JSONResponse:
    """Download the JSON Schema of one version: the departments' contract, field by field."""
    found = standards.get(standard_id).version(version)
    return JSONResponse(
        dict(found.schema),
        media_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=86400, immutable"},
    )


@router.post(
    "/{standard_id}/validate",
    response_model=ValidationReport,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ValidateRequest"}}
            },
        }
    },
    responses=problem_responses(
        StandardNotFound, MalformedJson, MalformedBody, PayloadTooLarge, RequestInvalid
    ),
)
async def validate_records(
    standard_id: str, request: Request, standards: StandardsDep
) -> ValidationReport:
    """Check records against a standard and store nothing.

    The answer has the same per-record error shape as a push: index, source_id, JSON pointer,
    stable code and message. Field names may be snake_case, Chinese names or national codes.
    """
    body: Any = await read_json_body(request)
    version, records = service.parse_validate_body(
        body, limit=request.app.state.settings.max_validate_records
    )
    found = standards.get(standard_id).version(version, datetime.now(UTC).date())
    return service.validate_records(found, records)


_ = ValidateRequest  # referenced from openapi_extra; registered in app.py
