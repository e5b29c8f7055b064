"""A submission: one push (a JSON batch or an uploaded file) and its report."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credit_hub.db import Base, JsonDoc, new_id, utcnow


class Submission(Base):
    __tablename__ = "submission"
    __table_args__ = (UniqueConstraint("client_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id"))
    kind: Mapped[str] = mapped_column(String(16), default="batch")
    standard: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    received: Mapped[int] = mapped_column(default=0)
    created: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    report: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # File submissions (kind "file"): the upload, and the job that processes it.
    format: Mapped[str | None] = mapped_column(String(16))
    encoding: Mapped[str | None] = mapped_column(String(32))
    filename: Mapped[str | None] = mapped_column(String(255))
    file_path: Mapped[str | None] = mapped_column(String(1024))  # cleared once processed
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    options: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # Rows read and committed: a resumed job skips them (committed with each chunk).
    rows_read: Mapped[int] = mapped_column(default=0, server_default="0")
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    rows_total: Mapped[int | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    started_at: Mapped[datetime | None]


class SubmissionError(Base):
    """A rejected row of a file submission: its errors, and its cells (encrypted: a row may
    hold personal identifiers) so that the error file gives it back to be fixed."""

    __tablename__ = "submission_error"

    submission_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("submission.id", ondelete="CASCADE"), primary_key=True
    )
    row: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str | None] = mapped_column(String(200))
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    cells_enc: Mapped[bytes | None] = mapped_column(LargeBinary)


Index("ix_submission_client_id_created_at", Submission.client_id, Submission.created_at)
Index("ix_submission_status_created_at", Submission.status, Submission.created_at)
