"""Finding subjects by name or identifier, backed by a real index on each database.

Names of three characters or more: SQLite FTS5 with the trigram tokenizer, PostgreSQL pg_trgm
(GIN). Shorter text: a prefix range on a B-tree (C collation on PostgreSQL). Current and former
names are both searched (the index is over `subject_name`). Pages are keyed by the name row's
position, so a page costs the same however deep it is.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from credit_hub import sqlite_search
from credit_hub.errors import NotFound, RequestInvalid
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects import service as subjects
from credit_hub.subjects.models import Subject, SubjectKind

MAX_QUERY = 100
_TOP = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class Hit:
    id: uuid.UUID
    kind: str
    name: str
    matched_name: str
    uscc: str | None
    division: str | None


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"p": position})).decode().rstrip("=")


def _position(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return orjson.loads(base64.urlsafe_b64decode(padded))["p"]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise RequestInvalid(
            "The cursor is not one this service gave out.",
            errors=[{"parameter": "cursor", "code": "cursor.invalid", "message": "bad cursor"}],
        ) from None


def _looks_like_identifier(q: str) -> bool:
    clean = ids.normalize_identifier(q)
    return (clean.isascii() and clean.isalnum() and len(clean) in (9, 15, 18)) or _is_uuid(q)


def _is_uuid(q: str) -> bool:
    try:
        uuid.UUID(q)
    except ValueError:
        return False
    return True


def search(
    session: Session, q: str, *, limit: int, cursor: str | None, include_persons: bool
) -> tuple[list[Hit], str | None]:
    q = q.strip()
    if not q:
        raise RequestInvalid(
            "Give a name or an identifier to search for.",
            errors=[{"parameter": "q", "code": "q.empty", "message": "empty query"}],
        )
    if len(q) > MAX_QUERY:
        raise RequestInvalid(
            f"The query has at most {MAX_QUERY} characters.",
            errors=[{"parameter": "q", "code": "q.too_long", "message": "too long"}],
        )
    if _looks_like_identifier(q):
        try:
            subject = subjects.find(session, q)
        except (NotFound, RequestInvalid):  # a malformed or unknown identifier: no hit
            return [], None
        if subject.kind == SubjectKind.NATURAL_PERSON and not include_persons:
            return [], None
        return [_hit(subject, subject.name)], None
    position = _position(cursor)
    persons = "" if include_persons else "AND s.kind != 'natural_person'"
    sqlite = session.get_bind().dialect.name == "sqlite"
    params: dict[str, Any] = {"limit": limit + 1, "after": position}
    if len(q) >= 3 and sqlite:
        sql, through = _sqlite_substring(session, persons)
        params |= {"through": through, "match": '"' + q.replace('"', '""') + '"'}
        params["pattern"] = _like_pattern(q)
    elif len(q) >= 3:
        sql = f"""
            SELECT sn.id::text AS position, sn.name AS matched, s.id, s.kind, s.name, s.uscc,
                   s.division
            FROM subject_name sn
            JOIN subject s ON s.id = sn.subject_id
            WHERE sn.name LIKE :pattern AND (CAST(:after AS uuid) IS NULL
                                              OR sn.id > CAST(:after AS uuid))
              AND s.merged_into_id IS NULL {persons}
            ORDER BY sn.id LIMIT :limit"""
        params["pattern"] = _like_pattern(q)
    else:
        collate = "" if sqlite else ' COLLATE "C"'
        key = "sn.name || '|' || sn.id" if sqlite else "sn.name || '|' || sn.id::text"
        sql = f"""
            SELECT {key} AS position, sn.name AS matched, s.id, s.kind, s.name, s.uscc,
                   s.division
            FROM subject_name sn
            JOIN subject s ON s.id = sn.subject_id
            WHERE sn.name{collate} >= :low AND sn.name{collate} < :high
              AND (CAST(:after AS TEXT) IS NULL OR {key}{collate} > CAST(:after AS TEXT))
              AND s.merged_into_id IS NULL {persons}
            ORDER BY sn.name{collate}, sn.id LIMIT :limit"""
        params |= {"low": q, "high": q + _TOP}
    rows = session.execute(text(sql), params).all()
    more = len(rows) > limit
    rows = rows[:limit]
    hits = [
        Hit(
            id=uuid.UUID(str(r.id)),
            kind=r.kind,
            name=r.name,
            matched_name=r.matched,
            uscc=r.uscc,
            division=r.division,
        )
        for r in rows
    ]
    return hits, _cursor(rows[-1].position) if more and rows else None


def _like_pattern(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _sqlite_substring(session: Session, persons: str) -> tuple[str, int]:
    """(SQL, watermark): the trigram index (a file of its own, see sqlite_search) for the names
    it covers, LIKE for the few past its watermark; both in rowid order, merged without a sort."""
    dbapi = session.connection().connection.driver_connection
    through = sqlite_search.indexed_through(dbapi)  # type: ignore[arg-type]
    tail = f"""
        SELECT sn.rowid AS position, sn.name AS matched, s.id, s.kind, s.name, s.uscc,
               s.division
        FROM subject_name sn
        JOIN subject s ON s.id = sn.subject_id
        WHERE sn.rowid > :through AND (:after IS NULL OR sn.rowid > :after)
          AND sn.name LIKE :pattern ESCAPE '\\'
          AND s.merged_into_id IS NULL {persons}"""
    if through is None:  # no index file (an in-memory database)
        return tail + " ORDER BY 1 LIMIT :limit", 0
    indexed = f"""
        SELECT f.rowid AS position, sn.name AS matched, s.id, s.kind, s.name, s.uscc,
               s.division
        FROM {sqlite_search.SCHEMA}.name_fts f
        JOIN subject_name sn ON sn.rowid = f.rowid
        JOIN subject s ON s.id = sn.subject_id
        WHERE f.name_fts MATCH :match AND f.rowid <= :through
          AND (:after IS NULL OR f.rowid > :after)
          AND s.merged_into_id IS NULL {persons}"""
    return f"{indexed} UNION ALL {tail} ORDER BY 1 LIMIT :limit", through


def _hit(subject: Subject | subjects.SubjectRow, matched: str) -> Hit:
    return Hit(subject.id, subject.kind, subject.name, matched, subject.uscc, subject.division)
