"""Rules of records: reading one (owner or operator), its history, withdrawal."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind, Scope
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.changes import service as changes
from credit_hub.changes.service import Change, ChangeKind
from credit_hub.errors import Conflict, NotFound
from credit_hub.keyring import Keyring
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.records.schemas import RecordHistory, RecordRead, VersionRead


def get_visible(session: Session, record_id: uuid.UUID, client: Principal) -> Record:
    """The record if this client may see it; 404 otherwise (never revealing that it exists)."""
    found = session.get(Record, record_id)
    if found is None or not (
        client.kind == ClientKind.OPERATOR or found.department_id == client.id
    ):
        raise NotFound(f"No record {record_id}.")
    return found


def version_read(
    version: RecordVersion,
    client: Principal,
    keyring: Keyring,
    *,
    superseded_at: datetime | None = None,
) -> VersionRead:
    """A version as its reader may see it; `superseded_at` is the next version's `created_at`
    (None for the current one)."""
    data: dict[str, Any] = dict(version.data)
    if version.personal_enc is not None and client.has_scope(Scope.PERSONAL_DATA):
        clear = keyring.decrypt(version.personal_enc)
        if clear is not None:
            data |= orjson.loads(clear)
    return VersionRead(
        version=version.version,
        schema_id=version.schema_id,
        data=data,
        originals=version.originals,
        submission_id=version.submission_id,
        created_at=version.created_at,
        superseded_at=superseded_at,
    )


def read(session: Session, record_id: uuid.UUID, client: Principal, keyring: Keyring) -> RecordRead:
    found = get_visible(session, record_id, client)
    current = session.get(RecordVersion, (found.id, found.version))
    assert current is not None
    return RecordRead.model_validate(
        {
            **{c.key: getattr(found, c.key) for c in Record.__table__.columns},
            "current": version_read(current, client, keyring),
        }
    )


def history(
    session: Session, record_id: uuid.UUID, client: Principal, keyring: Keyring
) -> RecordHistory:
    found = get_visible(session, record_id, client)
    versions = session.scalars(
        select(RecordVersion)
        .where(RecordVersion.record_id == found.id)
        .order_by(RecordVersion.version)
    ).all()
    ends = [later.created_at for later in versions[1:]] + [None]
    return RecordHistory(
        record_id=found.id,
        versions=[
            version_read(v, client, keyring, superseded_at=end)
            for v, end in zip(versions, ends, strict=True)
        ],
    )


def mark_withdrawn(
    session: Session,
    record: Record,
    reason: str,
    *,
    actor: Principal,
    now: datetime,
    objection_id: uuid.UUID | None = None,
) -> None:
    """Take a record out of every profile: status, the feed's change and the audit event,
    in the caller's transaction. The one place a withdrawal happens (also for objections)."""
    record.status = RecordStatus.WITHDRAWN
    record.withdrawn_at = now
    record.withdraw_reason = reason[:2000]
    record.updated_at = now
    session.flush()
    changes.emit(session, [Change.about(record, ChangeKind.WITHDRAWN, now)])
    linked = {"objection_id": str(objection_id)} if objection_id else {}
    audit.record(
        session,
        actor=actor,
        action="record.withdrawn",
        record_id=record.id,
        subject_id=record.subject_id,
        result="withdrawn",
        payload={"standard": record.standard, "version": record.version, **linked},
    )


def withdraw(
    session: Session,
    record_id: uuid.UUID,
    reason: str,
    client: Principal,
    keyring: Keyring,
    *,
    now: datetime,
) -> RecordRead:
    found = get_visible(session, record_id, client)
    if client.kind != ClientKind.DEPARTMENT:
        raise NotFound(f"No record {record_id}.")  # only the owning department withdraws
    locked = session.scalars(select(Record).where(Record.id == found.id).with_for_update()).one()
    if locked.status != RecordStatus.ACTIVE:
        raise Conflict(f"The record is {locked.status}; only an active record can be withdrawn.")
    mark_withdrawn(session, locked, reason, actor=client, now=now)
    return read(session, record_id, client, keyring)
