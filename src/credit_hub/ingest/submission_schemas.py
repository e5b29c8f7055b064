"""API models of file submissions: the upload's answer, a submission's status and report."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from credit_hub.ingest.schemas import Counts, ErrorSummary, Mode, Receipt


class JobStatus(StrEnum):
    """Where a submission is. The last four are final; a batch push is final at once."""

    QUEUED = "queued"
    RUNNING = "running"
    ACCEPTED = "accepted"
    PARTIALLY_ACCEPTED = "partially_accepted"
    REJECTED = "rejected"
    FAILED = "failed"  # the file could not be read to its end; `file_error` says why


FINAL = frozenset(
    {JobStatus.ACCEPTED, JobStatus.PARTIALLY_ACCEPTED, JobStatus.REJECTED, JobStatus.FAILED}
)


class SubmissionAccepted(BaseModel):
    submission_id: uuid.UUID
    status: JobStatus
    status_url: str
    errors_url: str
    format: str
    encoding: str | None
    filename: str | None
    size_bytes: int
    body_sha256: str
    received_at: datetime


class Progress(BaseModel):
    rows_read: int = Field(description="Rows read and processed so far (committed)")
    accepted: int = Field(description="Rows stored: created + updated + unchanged")
    rejected: int
    created: int
    updated: int
    unchanged: int
    bytes_read: int = 0
    fraction: float | None = Field(
        default=None, description="0..1 of the file processed, when it can be told"
    )
    rows_per_second: float | None = None
    eta_seconds: float | None = None


class Timings(BaseModel):
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    processing_seconds: float | None


class FileError(BaseModel):
    code: str
    message: str
    row: int | None = None


class Columns(BaseModel):
    headers: list[str] = Field(default_factory=list, description="The header row as uploaded")
    mapped: dict[str, str] = Field(description="header -> standard field")
    unknown: list[str] = Field(description="Headers that name no field: their cells are ignored")
    ignored: list[str] = Field(
        default_factory=list, description="Annotation columns (`_row`, `_error_...`)"
    )


class SubmissionRead(BaseModel):
    submission_id: uuid.UUID
    kind: str = Field(description="file (an upload) or batch (POST /v1/records)")
    status: JobStatus
    standard: str
    version: str
    mode: Mode
    format: str | None = None
    encoding: str | None = None
    filename: str | None = None
    size_bytes: int | None = None
    body_sha256: str
    attempts: int = 0
    progress: Progress
    counts: Counts
    timings: Timings
    columns: Columns | None = None
    error_summary: list[ErrorSummary] = Field(
        default_factory=list, description="Rejections grouped by code and field"
    )
    warning_summary: list[ErrorSummary] = Field(default_factory=list)
    file_error: FileError | None = None
    deprecation: list[str] = Field(default_factory=list)
    receipt: Receipt | None = None
    errors_url: str
    details: dict[str, Any] = Field(default_factory=dict)


class SubmissionPage(BaseModel):
    items: list[SubmissionRead]
    next_cursor: str | None
