"""Every published standard and version under `schemas/`, loaded and checked once at boot.

A standard is a folder `schemas/<id>/` holding one immutable JSON Schema (2020-12) file per
version and a `versions.json` that lists each version with its status and dates. A schema that
does not parse, is not a valid 2020-12 schema, or disagrees with its folder stops the boot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from credit_hub.errors import StandardNotFound
from credit_hub.standards.engine import RecordEngine

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
VERSION_STATUSES = ("current", "deprecated", "retired")


class StandardsError(RuntimeError):
    """A published standard is broken: the service must not start."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


@dataclass(frozen=True)
class StandardVersion:
    standard: str
    version: str
    schema: Mapping[str, Any]
    path: Path
    status: str
    published_on: date | None
    sunset_on: date | None
    engine: RecordEngine

    @property
    def schema_id(self) -> str:
        return str(self.schema["$id"])

    def accepting(self, today: date) -> bool:
        if self.status == "retired":
            return False
        return self.sunset_on is None or today < self.sunset_on

    def warnings(self, today: date) -> list[str]:
        if self.status == "deprecated":
            until = f" until {self.sunset_on.isoformat()}" if self.sunset_on else ""
            return [
                f"{self.standard} version {self.version} is deprecated and accepted{until}; "
                "move to the current version."
            ]
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "published_on": self.published_on,
            "sunset_on": self.sunset_on,
            "schema_id": self.schema_id,
        }


@dataclass(frozen=True)
class Standard:
    id: str
    title: str
    description: str
    versions: Mapping[str, StandardVersion]
    current: StandardVersion

    def version(self, version: str | None, today: date | None = None) -> StandardVersion:
        if version is None:
            return self.current
        found = self.versions.get(version)
        if found is None:
            known = ", ".join(sorted(self.versions))
            raise StandardNotFound(
                f"Standard {self.id!r} has no version {version!r} (published: {known})."
            )
        if today is not None and not found.accepting(today):
            raise StandardNotFound(
                f"Version {version!r} of {self.id!r} was retired on {found.sunset_on}; "
                f"use version {self.current.version}.",
            )
        return found


@dataclass(frozen=True)
class Standards:
    by_id: Mapping[str, Standard] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Standard]:
        return iter(self.by_id.values())

    def get(self, standard_id: str) -> Standard:
        found = self.by_id.get(standard_id)
        if found is None:
            known = ", ".join(sorted(self.by_id))
            raise StandardNotFound(
                f"No published standard {standard_id!r} (published: {known}).",
            )
        return found

    def resolve(
        self, standard_id: str, version: str | None = None, today: date | None = None
    ) -> StandardVersion:
        return self.get(standard_id).version(version, today)

    @classmethod
    def load(cls, root: Path) -> Standards:
        if not root.is_dir():
            raise StandardsError(root, "the standards folder does not exist")
        found = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            standard = _load_standard(folder)
            found[standard.id] = standard
        if not found:
            raise StandardsError(root, "no published standard found")
        return cls(found)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StandardsError(path, f"cannot be read as JSON: {exc}") from exc


def _date(value: Any, path: Path, what: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise StandardsError(path, f"{what} {value!r} is not an ISO date") from exc


def _load_standard(folder: Path) -> Standard:
    index_path = folder / "versions.json"
    if not index_path.is_file():
        raise StandardsError(folder, "missing versions.json")
    index = _read_json(index_path)
    if not isinstance(index, dict) or index.get("standard") != folder.name:
        raise StandardsError(index_path, f"'standard' must be {folder.name!r}")
    versions: dict[str, StandardVersion] = {}
    for entry in index.get("versions") or []:
        version = str(entry.get("version", ""))
        status = entry.get("status")
        if status not in VERSION_STATUSES:
            raise StandardsError(index_path, f"version {version!r} has status {status!r}")
        path = folder / str(entry.get("file") or f"{version}.json")
        schema = _load_schema(path, folder.name, version)
        versions[version] = StandardVersion(
            standard=folder.name,
            version=version,
            schema=schema,
            path=path,
            status=status,
            published_on=_date(entry.get("published_on"), index_path, "published_on"),
            sunset_on=_date(entry.get("sunset_on"), index_path, "sunset_on"),
            engine=_engine(schema, path),
        )
    listed = {v.path.name for v in versions.values()}
    unlisted = sorted(
        p.name for p in folder.glob("*.json") if p.name not in listed | {index_path.name}
    )
    if unlisted:
        raise StandardsError(folder, f"schema files not listed in versions.json: {unlisted}")
    current = [v for v in versions.values() if v.status == "current"]
    if len(current) != 1:
        raise StandardsError(index_path, "exactly one version must have status 'current'")
    return Standard(
        id=folder.name,
        title=str(index.get("title") or folder.name),
        description=str(current[0].schema.get("description", "")),
        versions=versions,
        current=current[0],
    )


def _load_schema(path: Path, standard: str, version: str) -> dict[str, Any]:
    schema = _read_json(path)
    if not isinstance(schema, dict):
        raise StandardsError(path, "a schema must be a JSON object")
    if schema.get("$schema") != DRAFT_2020_12:
        raise StandardsError(path, f"'$schema' must be {DRAFT_2020_12}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise StandardsError(path, f"not a valid 2020-12 schema at {where}: {exc.message}") from exc
    expected_tail = f"/{standard}/{path.name}"
    if not str(schema.get("$id", "")).endswith(expected_tail):
        raise StandardsError(path, f"'$id' must end with {expected_tail!r}")
    if schema.get("x-standard") != standard or str(schema.get("x-version")) != version:
        raise StandardsError(path, f"'x-standard'/'x-version' must be {standard!r}/{version!r}")
    return schema


def _engine(schema: dict[str, Any], path: Path) -> RecordEngine:
    try:
        return RecordEngine(schema)
    except (ValueError, KeyError, TypeError, jsonschema_rs.ValidationError) as exc:
        raise StandardsError(path, f"extension keywords are inconsistent: {exc}") from exc
