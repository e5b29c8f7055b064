"""Emitting changes. Every write that changes what an agency may see calls `emit()` in its own
transaction, so the feed (and the webhook outbox) can never disagree with the records."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session


class ChangeKind(StrEnum):
    CREATED = "created"
    CORRECTED = "corrected"
    WITHDRAWN = "withdrawn"
    REPAIRED = "repaired"
    PUBLICATION_ENDED = "publication_ended"
    OBJECTION_OPENED = "objection_opened"
    OBJECTION_CLOSED = "objection_closed"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    record_id: uuid.UUID
    version: int
    subject_id: uuid.UUID
    standard: str
    department_id: uuid.UUID
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


def emit(session: Session, changes: list[Change]) -> None:
    """Append changes to the feed in the caller's transaction (the feed lands with issue 8)."""
    del session, changes
