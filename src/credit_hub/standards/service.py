"""Rules of the standards endpoints: describing standards and checking records offline."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from credit_hub.errors import MalformedBody, RequestInvalid
from credit_hub.standards.registry import Standard, StandardVersion
from credit_hub.standards.schemas import StandardRead, ValidationReport, VersionRead, ViolationRead


def describe(standard: Standard) -> StandardRead:
    return StandardRead(
        id=standard.id,
        title=standard.title,
        description=standard.description,
        current_version=standard.current.version,
        versions=[VersionRead(**v.describe()) for v in standard.versions.values()],
    )


def parse_validate_body(body: Any, *, limit: int) -> tuple[str | None, list[Any]]:
    if not isinstance(body, dict):
        raise MalformedBody("The body must be a JSON object with a 'records' list.")
    unknown = sorted(set(body) - {"version", "records"})
    if unknown:
        raise RequestInvalid(
            "Unknown members in the request.",
            errors=[
                {
                    "pointer": f"/{k}",
                    "code": "additional_property",
                    "message": f"{k!r} is not expected.",
                }
                for k in unknown
            ],
        )
    records, version = body.get("records"), body.get("version")
    if not isinstance(records, list):
        raise RequestInvalid(
            "'records' must be a list of records.",
            errors=[{"pointer": "/records", "code": "type", "message": "a list is expected."}],
        )
    if not records:
        raise RequestInvalid(
            "'records' is empty.",
            errors=[{"pointer": "/records", "code": "min_items", "message": "give one or more."}],
        )
    if len(records) > limit:
        raise RequestInvalid(
            f"At most {limit} records per validation request; {len(records)} given.",
            errors=[
                {"pointer": "/records", "code": "max_items", "message": f"at most {limit} records."}
            ],
        )
    if version is not None and not isinstance(version, str):
        raise RequestInvalid(
            "'version' must be a string such as \"1.0\".",
            errors=[{"pointer": "/version", "code": "type", "message": "a string is expected."}],
        )
    return version, records


def source_id_of(found: StandardVersion, record: Any) -> str | None:
    """The record's source id as given (before normalization), for error reports."""
    if not isinstance(record, dict):
        return None
    engine = found.engine
    spec = engine.source_id
    for key, value in record.items():
        name = engine.aliases.get(key.strip().casefold()) if isinstance(key, str) else None
        if name == spec["field"] and value:
            return _printable(value)
    for key, value in record.items():
        name = engine.aliases.get(key.strip().casefold()) if isinstance(key, str) else None
        if name == spec["default_from"] and value:
            return _printable(value)
    return None


def _printable(value: object) -> str:
    # NUL cannot be stored in a report on PostgreSQL (the record itself is rejected for it).
    return str(value).replace("\x00", "\ufffd")


def validate_records(found: StandardVersion, records: Iterable[Any]) -> ValidationReport:
    errors: list[ViolationRead] = []
    warnings: list[ViolationRead] = []
    valid = received = 0
    for index, record in enumerate(records):
        received += 1
        outcome = found.engine.check(record)
        source_id = source_id_of(found, record)
        errors.extend(
            ViolationRead(index=index, source_id=source_id, **v.as_dict())
            for v in outcome.violations
        )
        warnings.extend(
            ViolationRead(index=index, source_id=source_id, **v.as_dict()) for v in outcome.warnings
        )
        valid += outcome.ok
    return ValidationReport(
        standard=found.standard,
        version=found.version,
        received=received,
        valid=valid,
        invalid=received - valid,
        errors=errors,
        warnings=warnings,
        deprecation=found.warnings(datetime.now(UTC).date()),
    )
