"""Watch lists: the subjects an agency follows, by key (USCC, or subject id when there is none).

A valid USCC may be watched before the hub holds anything about it; an organization code or a
registration number is resolved to its subject's key (404 or `not_found` when unknown); a
subject id must exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from credit_hub.access.service import Principal
from credit_hub.changes.models import Watch
from credit_hub.db import table, utcnow
from credit_hub.errors import PROBLEM_BASE, Conflict, NotFound, RequestInvalid
from credit_hub.subjects import service as subjects
from credit_hub.subjects.service import KeyKind

CHUNK = 500
INSERT_CHUNK = 5000


class WatchlistFull(Conflict):
    type = PROBLEM_BASE + "watchlist-full"
    title = "The watch list is full"


def _keys(session: Session, keys: Sequence[str]) -> tuple[list[str | None], list[dict[str, Any]]]:
    """The watch key of each given key (None when unknown), and the keys that do not parse."""
    parsed: list[tuple[str, str | uuid.UUID] | None] = []
    errors: list[dict[str, Any]] = []
    for index, key in enumerate(keys):
        try:
            parsed.append(subjects.parse_key(key))
        except RequestInvalid as exc:
            parsed.append(None)
            for error in exc.extensions.get("errors", []):
                errors.append(
                    {
                        "pointer": f"/keys/{index}",
                        "code": error["code"],
                        "message": error["message"],
                    }
                )
    lookup = [p for p in parsed if p is not None and p[0] != KeyKind.USCC]
    found = subjects.find_many(session, lookup) if lookup else {}
    out: list[str | None] = []
    for item in parsed:
        if item is None:
            out.append(None)
        elif item[0] == KeyKind.USCC:
            out.append(str(item[1]))
        else:
            subject = found.get(item)
            out.append((subject.uscc or str(subject.id)) if subject is not None else None)
    return out, errors


def _insert(session: Session, client: Principal, keys: Sequence[str]) -> int:
    """Set-based inserts, keys already watched skipped; the number added."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    before = _count(session, client)
    for start in range(0, len(keys), INSERT_CHUNK):
        rows = [
            {"client_id": client.id, "subject_key": k, "created_at": now}
            for k in keys[start : start + INSERT_CHUNK]
        ]
        session.execute(
            insert(table(Watch)).on_conflict_do_nothing(
                index_elements=["client_id", "subject_key"]
            ),
            rows,
        )
    return _count(session, client) - before


def _count(session: Session, client: Principal) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Watch).where(Watch.client_id == client.id))
        or 0
    )


def _ensure_room(session: Session, client: Principal, adding: int, limit: int) -> None:
    if _count(session, client) + adding > limit:
        raise WatchlistFull(f"An agency follows at most {limit} subjects.", limit=limit)


def watch(session: Session, client: Principal, key: str, *, limit: int) -> str:
    subjects.parse_key(key)  # 422 naming the failed check
    resolved, _ = _keys(session, [key])
    subject_key = resolved[0]
    if subject_key is None:
        raise subjects.no_subject()
    exists = session.get(Watch, (client.id, subject_key))
    if exists is None:
        _ensure_room(session, client, 1, limit)
        _insert(session, client, [subject_key])
    return subject_key


def unwatch(session: Session, client: Principal, key: str) -> None:
    resolved, errors = _keys(session, [key])
    subject_key = resolved[0]
    if errors or subject_key is None:
        raise NotFound("This subject is not on the watch list.")
    result = session.execute(
        delete(Watch).where(Watch.client_id == client.id, Watch.subject_key == subject_key)
    )
    if not getattr(result, "rowcount", 0):
        raise NotFound("This subject is not on the watch list.")


def bulk(
    session: Session, client: Principal, keys: Sequence[str], *, mode: str, limit: int
) -> dict[str, Any]:
    """Add, remove or replace many keys at once, in sets; unknown keys are listed, not fatal,
    but a key that does not parse fails the request."""
    resolved, errors = _keys(session, keys)
    if errors:
        raise RequestInvalid(f"{len(errors)} problem(s) in the keys.", errors=errors[:1000])
    not_found = [i for i, k in enumerate(resolved) if k is None]
    wanted = sorted({k for k in resolved if k is not None})
    removed = added = 0
    if mode == "replace":
        if len(wanted) > limit:
            raise WatchlistFull(f"An agency follows at most {limit} subjects.", limit=limit)
        result = session.execute(delete(Watch).where(Watch.client_id == client.id))
        removed = int(getattr(result, "rowcount", 0) or 0)
        added = _insert(session, client, wanted)
    elif mode == "remove":
        for start in range(0, len(wanted), CHUNK):
            result = session.execute(
                delete(Watch).where(
                    Watch.client_id == client.id,
                    Watch.subject_key.in_(wanted[start : start + CHUNK]),
                )
            )
            removed += int(getattr(result, "rowcount", 0) or 0)
    else:
        added = _insert(session, client, wanted)
        if _count(session, client) > limit:  # checked after the set insert; rolled back if over
            raise WatchlistFull(f"An agency follows at most {limit} subjects.", limit=limit)
    return {
        "received": len(keys),
        "added": added,
        "removed": removed,
        "not_found": not_found,
        "watching": _count(session, client),
    }


def list_page(
    session: Session, client: Principal, *, after: str | None, limit: int
) -> dict[str, Any]:
    stmt = select(Watch.subject_key, Watch.created_at).where(Watch.client_id == client.id)
    if after:
        stmt = stmt.where(Watch.subject_key > after)
    rows = session.execute(stmt.order_by(Watch.subject_key).limit(limit)).all()
    return {
        "subjects": [{"key": r.subject_key, "since": r.created_at} for r in rows],
        "next_after": rows[-1].subject_key if len(rows) == limit else None,
        "total": _count(session, client),
    }
