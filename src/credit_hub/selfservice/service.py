"""Rules of subject access: issuing and redeeming one-time codes, subject sessions."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.errors import PROBLEM_BASE, Unauthorized
from credit_hub.selfservice.models import AccessCode, SubjectSession
from credit_hub.subjects.models import Subject

TOKEN_PREFIX = "chs_"
# No 0/O, 1/I/L: codes are read out or typed by people. 20 characters carry ~99 bits.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 20


class AccessCodeInvalid(Unauthorized):
    type = PROBLEM_BASE + "access-code-invalid"
    title = "The access code is unknown, expired or already used"


def _digest(secret: str) -> str:
    # Codes and tokens carry ~100 or more random bits: a fast hash is enough.
    return hashlib.sha256(secret.encode()).hexdigest()


def normalize_code(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 5] for i in range(0, CODE_LENGTH, 5))


def issue_code(
    session: Session, subject_id: uuid.UUID, *, operator: Principal, now: datetime, days: int
) -> tuple[AccessCode, str]:
    code = new_code()
    issued = AccessCode(
        subject_id=subject_id,
        code_hash=_digest(normalize_code(code)),
        issued_by=operator.id,
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(issued)
    session.flush()
    audit.record(
        session,
        actor=operator,
        action="access_code.issued",
        subject_id=subject_id,
        result="issued",
        payload={"access_code_id": str(issued.id), "expires_at": issued.expires_at.isoformat()},
    )
    return issued, code


def redeem(
    session: Session, code: str, *, now: datetime, minutes: int
) -> tuple[SubjectSession, str]:
    """Exchange a code, once, for a session token; a failure changes nothing."""
    found = session.scalar(
        select(AccessCode).where(AccessCode.code_hash == _digest(normalize_code(code)))
    )
    if found is None:
        raise AccessCodeInvalid("No such access code.", reason="unknown")
    if found.used_at is not None:
        raise AccessCodeInvalid("This access code was used already.", reason="used")
    if found.expires_at <= now:
        raise AccessCodeInvalid("This access code has expired.", reason="expired")
    claimed = session.execute(
        update(AccessCode)
        .where(AccessCode.id == found.id, AccessCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]  # redeemed concurrently
        raise AccessCodeInvalid("This access code was used already.", reason="used")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    opened = SubjectSession(
        subject_id=found.subject_id,
        access_code_id=found.id,
        token_hash=_digest(token),
        created_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    session.add(opened)
    session.flush()
    audit.record(
        session,
        actor=None,
        actor_kind="subject",
        action="access_code.redeemed",
        subject_id=found.subject_id,
        result="ok",
        payload={"access_code_id": str(found.id), "session_id": str(opened.id)},
    )
    return opened, token


def authenticate(session: Session, token: str, *, now: datetime) -> SubjectSession | None:
    if len(token) > 200:
        return None
    found = session.scalar(
        select(SubjectSession).where(SubjectSession.token_hash == _digest(token))
    )
    if found is None or found.expires_at <= now:
        return None
    return found


def subject_of(session: Session, subject_id: uuid.UUID) -> Subject:
    found = session.get(Subject, subject_id)
    assert found is not None  # sessions point at subjects, which are never deleted
    return found
