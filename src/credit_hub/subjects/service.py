"""Linking records to subjects, in sets: one round of queries per batch, not one per record.

Keys: organizations and individual businesses by USCC; a record with only a legacy
organization code or registration number links to the subject whose USCC embeds that code (or
that was seen with that number), else to an unresolved subject (no USCC yet) that is completed
when the USCC appears. Natural persons by an HMAC of their ID type and number; the clear number
is stored only encrypted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Row, Select, bindparam, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from credit_hub import bulk
from credit_hub.db import new_id, new_ids, table, utcnow
from credit_hub.errors import NotFound, RequestInvalid
from credit_hub.fastsql import Prepared
from credit_hub.keyring import Keyring
from credit_hub.records.models import Record
from credit_hub.standards.engine import RESIDENT_ID_TYPE, SubjectRef
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects.models import Subject, SubjectKind, SubjectName

CHUNK = 500  # values per IN (...): well inside SQLite's and PostgreSQL's parameter limits


@dataclass(slots=True)
class _Known:
    id: uuid.UUID
    uscc: str | None
    org_code: str | None
    reg_no: str | None
    name: str
    name_seen_on: date | None


@dataclass(slots=True)
class _Learned:
    """What resolving a batch learned on the way: each subject's current name and the day it
    was seen on, and the subjects it created (they have no name history yet)."""

    names: dict[uuid.UUID, tuple[str, date | None]] = field(default_factory=dict)
    created: set[uuid.UUID] = field(default_factory=set)

    def note(self, known: list[_Known]) -> list[_Known]:
        self.names.update((k.id, (k.name, k.name_seen_on)) for k in known)
        return known

    def note_created(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.created.add(row["id"])
            self.names[row["id"]] = (row["name"], row["name_seen_on"])


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


@lru_cache(maxsize=16)
def _fetch_statement(column: str, waiting: bool, dialect: Dialect) -> Select[Any]:
    """Subjects whose `column` is in :values (unresolved ones only if `waiting`). Core columns
    and one statement per shape: no ORM loading or statement building per batch."""
    subjects = table(Subject)
    c = subjects.c
    stmt = select(c.id, c.uscc, c.org_code, c.reg_no, c.name, c.name_seen_on).where(
        bulk.in_values(c[column], "values", dialect), c.merged_into_id.is_(None)
    )
    return stmt.where(c.uscc.is_(None)) if waiting else stmt


def _fetch(
    session: Session, column: str, values: Iterable[Any], *, waiting: bool = False
) -> list[_Known]:
    found: list[_Known] = []
    distinct = sorted({v for v in values if v})
    if not distinct:
        return found
    stmt = _fetch_statement(column, waiting, session.get_bind().dialect)
    for chunk in _chunks(distinct):
        found.extend(_Known(*row) for row in session.execute(stmt, {"values": list(chunk)}))
    return found


def _insert(session: Session, rows: list[dict[str, Any]], conflict_column: str | None) -> bool:
    """Insert new subjects; False when a concurrent batch created some of them first."""
    if not rows:
        return True
    if conflict_column:
        # The same order in every transaction: two batches naming the same new subjects in
        # different orders would otherwise deadlock on the unique index.
        rows = sorted(rows, key=lambda row: str(row[conflict_column]))
    # A concurrent batch may create the same subject first: keep theirs, then re-read.
    inserted = bulk.insert_rows(
        session,
        table(Subject),
        rows,
        on_conflict_do_nothing=[conflict_column] if conflict_column else None,
    )
    return inserted == len(rows)


def person_key(keyring: Keyring, ref: SubjectRef) -> str:
    return keyring.person_key(ref.person_id_type or "", ref.person_id_no or "")


def resolve(
    session: Session, keyring: Keyring, refs: Sequence[SubjectRef], seen_on: Sequence[date]
) -> list[uuid.UUID]:
    """The subject id of each reference (creating or completing subjects as needed)."""
    now = utcnow()
    learned = _Learned()
    ids_by_uscc = _resolve_usccs(session, [r for r in refs if r.uscc], now, learned)
    ids_by_person = _resolve_persons(
        session, keyring, [r for r in refs if r.kind == SubjectKind.NATURAL_PERSON], now, learned
    )
    legacy = [r for r in refs if not r.uscc and r.kind != SubjectKind.NATURAL_PERSON]
    ids_by_legacy = _resolve_legacy(session, legacy, now, learned)
    out: list[uuid.UUID] = []
    for ref in refs:
        if ref.kind == SubjectKind.NATURAL_PERSON:
            out.append(ids_by_person[person_key(keyring, ref)])
        elif ref.uscc:
            out.append(ids_by_uscc[ref.uscc])
        else:
            out.append(ids_by_legacy[_legacy_key(ref)])
    _record_names(session, refs, out, seen_on, learned)
    return out


def _resolve_usccs(
    session: Session, refs: list[SubjectRef], now: Any, learned: _Learned
) -> dict[str, uuid.UUID]:
    by_uscc: dict[str, uuid.UUID] = {
        k.uscc: k.id
        for k in learned.note(_fetch(session, "uscc", [r.uscc for r in refs]))
        if k.uscc
    }
    # Unresolved subjects waiting for these USCCs, by embedded org code or by reg no.
    waiting_org = {
        k.org_code: k
        for k in learned.note(
            _fetch(
                session, "org_code", [ids.uscc_org_code(r.uscc or "") for r in refs], waiting=True
            )
        )
    }
    waiting_reg = {
        k.reg_no: k
        for k in learned.note(_fetch(session, "reg_no", [r.reg_no for r in refs], waiting=True))
    }
    new_rows: dict[str, dict[str, Any]] = {}
    for ref in refs:
        uscc = ref.uscc or ""
        waiting = waiting_org.pop(ids.uscc_org_code(uscc), None) or waiting_reg.pop(
            ref.reg_no or "", None
        )
        if waiting is not None and uscc in by_uscc:
            merge_waiting(session, into=by_uscc[uscc], waiting=waiting.id)
        elif waiting is not None:
            session.execute(
                update(Subject)
                .where(Subject.id == waiting.id, Subject.uscc.is_(None))
                .values(
                    uscc=uscc,
                    org_code=ids.uscc_org_code(uscc),
                    division=uscc[2:8],
                    reg_no=ref.reg_no or waiting.reg_no,
                    kind=ref.kind,
                    updated_at=now,
                )
            )
            by_uscc[uscc] = waiting.id
        elif uscc not in by_uscc and uscc not in new_rows:
            new_rows[uscc] = {
                "kind": ref.kind,
                "uscc": uscc,
                "org_code": ids.uscc_org_code(uscc),
                "reg_no": ref.reg_no,
                "name": ref.name,
                "name_seen_on": ref.seen_on,
                "division": uscc[2:8],
                "created_at": now,
                "updated_at": now,
            }
    for row, subject_id in zip(new_rows.values(), new_ids(len(new_rows)), strict=True):
        row["id"] = subject_id
    if _insert(session, list(new_rows.values()), "uscc"):
        learned.note_created(new_rows.values())
        by_uscc.update((uscc, row["id"]) for uscc, row in new_rows.items())
    else:  # some were created concurrently: theirs stand
        learned.note_created(new_rows.values())
        for known in learned.note(_fetch(session, "uscc", list(new_rows))):
            if known.uscc:
                by_uscc[known.uscc] = known.id
    return by_uscc


def _legacy_key(ref: SubjectRef) -> str:
    return f"org:{ref.org_code}" if ref.org_code else f"reg:{ref.reg_no}"


def _resolve_legacy(
    session: Session, refs: list[SubjectRef], now: Any, learned: _Learned
) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    if not refs:
        return found
    # Prefer a subject with a USCC (the org code is embedded in it), then an unresolved one.
    for known in sorted(
        learned.note(_fetch(session, "org_code", [r.org_code for r in refs])),
        key=lambda k: k.uscc is None,
        reverse=True,
    ):
        found[f"org:{known.org_code}"] = known.id
    for known in sorted(
        learned.note(_fetch(session, "reg_no", [r.reg_no for r in refs if not r.org_code])),
        key=lambda k: k.uscc is None,
        reverse=True,
    ):
        found[f"reg:{known.reg_no}"] = known.id
    new_rows: dict[str, dict[str, Any]] = {}
    for ref in refs:
        key = _legacy_key(ref)
        if key not in found and key not in new_rows:
            new_rows[key] = {
                "id": new_id(),
                "kind": ref.kind,
                "uscc": None,
                "org_code": ref.org_code,
                "reg_no": ref.reg_no,
                "name": ref.name,
                "name_seen_on": ref.seen_on,
                "division": None,
                "created_at": now,
                "updated_at": now,
            }
    _insert(session, list(new_rows.values()), None)
    learned.note_created(new_rows.values())
    found.update({key: row["id"] for key, row in new_rows.items()})
    return found


def _persons(session: Session, keys: Sequence[str], learned: _Learned) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    stmt = select(Subject.person_key, Subject.id, Subject.name, Subject.name_seen_on).where(
        bulk.in_values(Subject.person_key, "keys", session.get_bind().dialect)
    )
    for chunk in _chunks(keys):
        for key, subject_id, name, day in session.execute(stmt, {"keys": list(chunk)}):
            if key:
                found[key] = subject_id
                learned.names[subject_id] = (name, day)
    return found


def _resolve_persons(
    session: Session, keyring: Keyring, refs: list[SubjectRef], now: Any, learned: _Learned
) -> dict[str, uuid.UUID]:
    wanted = {person_key(keyring, r): r for r in refs}
    found = _persons(session, sorted(wanted), learned)
    new_rows = []
    for key, ref in wanted.items():
        if key in found:
            continue
        number = ref.person_id_no or ""
        birth = None
        if ref.person_id_type == RESIDENT_ID_TYPE:
            birth = ids.id_number_birth_date(number)
        new_rows.append(
            {
                "id": new_id(),
                "kind": SubjectKind.NATURAL_PERSON,
                "person_key": key,
                "person_id_enc": keyring.encrypt(f"{ref.person_id_type}\x1f{number}".encode()),
                "person_id_masked": ids.mask_id_number(number),
                "person_birth_date": birth,
                "name": ref.name,
                "name_seen_on": ref.seen_on,
                "created_at": now,
                "updated_at": now,
            }
        )
    learned.note_created(new_rows)
    if _insert(session, new_rows, "person_key"):
        found.update((row["person_key"], row["id"]) for row in new_rows)
    else:  # some were created concurrently: theirs stand
        found.update(_persons(session, [row["person_key"] for row in new_rows], learned))
    return found


_WIDEN_SPAN = {
    "first_seen_on": "CASE WHEN excluded.first_seen_on < subject_name.first_seen_on "
    "THEN excluded.first_seen_on ELSE subject_name.first_seen_on END",
    "last_seen_on": "CASE WHEN excluded.last_seen_on > subject_name.last_seen_on "
    "THEN excluded.last_seen_on ELSE subject_name.last_seen_on END",
}


# Of the (subject, name, first, last) spans given, the positions of those a stored name row
# already has, each with whether that row covers the span: its subject had that name on those
# days already. One statement for the batch (the spans as one JSON array on SQLite, as one
# array per column on PostgreSQL), through the unique index on (subject_id, name); only
# positions and flags come back, so nothing is converted per row.
_STORED_SQLITE = """
    SELECT w.key, sn.first_seen_on <= json_extract(w.value, '$[2]')
                  AND sn.last_seen_on >= json_extract(w.value, '$[3]')
    FROM json_each(:spans) AS w
    JOIN subject_name sn ON sn.subject_id = json_extract(w.value, '$[0]')
        AND sn.name = json_extract(w.value, '$[1]')"""
_STORED_POSTGRESQL = """
    SELECT w.i - 1, sn.first_seen_on <= w.first_seen_on AND sn.last_seen_on >= w.last_seen_on
    FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[]),
                CAST(:firsts AS date[]), CAST(:lasts AS date[]))
        WITH ORDINALITY AS w(subject_id, name, first_seen_on, last_seen_on, i)
    JOIN subject_name sn ON sn.subject_id = w.subject_id AND sn.name = w.name"""

# PostgreSQL: stored names whose span widens. Not an upsert: an insert that conflicts still
# draws a number from search_seq's identity, and names seen again would thin out the search's
# blocks (see the migration that numbers them). least/greatest: a concurrent batch's
# widening stands.
_WIDEN_POSTGRESQL = text("""
    UPDATE subject_name sn
    SET first_seen_on = least(sn.first_seen_on, w.first_seen_on),
        last_seen_on = greatest(sn.last_seen_on, w.last_seen_on)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:names AS text[]),
                CAST(:firsts AS date[]), CAST(:lasts AS date[]))
        AS w(subject_id, name, first_seen_on, last_seen_on)
    WHERE sn.subject_id = w.subject_id AND sn.name = w.name""")

Spans = Sequence[tuple[tuple[uuid.UUID, str], tuple[date, date]]]


def _pg_span_arrays(spans: Spans) -> dict[str, Any]:
    return {
        "ids": [subject_id for (subject_id, _), _ in spans],
        "names": [name for (_, name), _ in spans],
        "firsts": [first for _, (first, _) in spans],
        "lasts": [last for _, (_, last) in spans],
    }


def _stored(session: Session, spans: Spans) -> dict[int, bool]:
    if not spans:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        params, statement = _pg_span_arrays(spans), _STORED_POSTGRESQL
    else:
        rows = [
            (subject_id.hex, name, first.isoformat(), last.isoformat())
            for (subject_id, name), (first, last) in spans
        ]
        params, statement = {"spans": orjson.dumps(rows).decode()}, _STORED_SQLITE
    return {at: bool(covered) for at, covered in session.execute(text(statement), params)}


def _record_names(
    session: Session,
    refs: Sequence[SubjectRef],
    subject_ids: Sequence[uuid.UUID],
    seen_on: Sequence[date],
    learned: _Learned,
) -> None:
    """Name history: (subject, name) with the first and last decision date it was seen on;
    the subject's current name is the one seen on the latest decision."""
    spans: dict[tuple[uuid.UUID, str], tuple[date, date]] = {}
    for ref, subject_id, day in zip(refs, subject_ids, seen_on, strict=True):
        first, last = spans.get((subject_id, ref.name), (day, day))
        spans[(subject_id, ref.name)] = (min(first, day), max(last, day))
    if not spans:
        return
    # Write only what is new or widens a span: a re-push of known names writes nothing.
    # Subjects this batch created have no name history to compare with.
    older = [(key, span) for key, span in spans.items() if key[0] not in learned.created]
    stored = _stored(session, older)
    changed = {key: span for key, span in spans.items() if key[0] in learned.created}
    changed |= {key: span for at, (key, span) in enumerate(older) if at not in stored}
    widened = [(key, span) for at, (key, span) in enumerate(older) if stored.get(at) is False]
    widened.sort(key=lambda kv: (kv[0][0].int, kv[0][1]))  # rows locked in the upsert's order
    if session.get_bind().dialect.name == "postgresql":
        if widened:
            session.execute(_WIDEN_POSTGRESQL, _pg_span_arrays(widened))
    else:  # SQLite numbers nothing: the upsert below widens them
        changed |= dict(widened)
    name_rows = [
        {"id": name_id, "subject_id": s, "name": n, "first_seen_on": f, "last_seen_on": last}
        for ((s, n), (f, last)), name_id in zip(
            sorted(changed.items(), key=lambda kv: (kv[0][0].int, kv[0][1])),
            new_ids(len(changed)),
            strict=True,
        )
    ]
    # Names of subjects this batch created cannot be anyone else's yet: a plain insert (COPY on
    # PostgreSQL). Elsewhere a concurrent batch may add the same name first: widen its span.
    bulk.insert_rows(
        session, table(SubjectName), [r for r in name_rows if r["subject_id"] in learned.created]
    )
    bulk.upsert_rows(
        session,
        table(SubjectName),
        [r for r in name_rows if r["subject_id"] not in learned.created],
        conflict=["subject_id", "name"],
        set_=_WIDEN_SPAN,
    )
    latest: dict[uuid.UUID, tuple[date, str]] = {}
    for (subject_id, name), (_, last) in spans.items():
        if subject_id not in latest or last >= latest[subject_id][0]:
            latest[subject_id] = (last, name)
    current = learned.names
    unknown = [subject_id for subject_id in latest if subject_id not in current]
    for chunk in _chunks(unknown):  # resolution saw every subject: normally nothing to read
        rows = session.execute(
            select(Subject.id, Subject.name, Subject.name_seen_on).where(Subject.id.in_(chunk))
        )
        current.update({subject_id: (name, day) for subject_id, name, day in rows})
    changes = []
    for subject_id, (day, name) in latest.items():
        if subject_id not in current:
            continue
        current_name, current_day = current[subject_id]
        if current_day is None or (current_day <= day and current_name != name):
            changes.append({"id": subject_id, "name": name, "name_seen_on": day})
    if changes:  # renamed subjects only: usually few
        bulk.update_rows(session, table(Subject), changes, key=["id"])


def merge_waiting(session: Session, into: uuid.UUID, waiting: uuid.UUID) -> None:
    """Move an unresolved subject's records to the subject that now holds its USCC."""
    session.execute(update(Record).where(Record.subject_id == waiting).values(subject_id=into))
    session.execute(update(Subject).where(Subject.id == waiting).values(merged_into_id=into))


class KeyKind:
    ID = "id"
    USCC = "uscc"
    ORG_CODE = "org_code"
    REG_NO = "reg_no"


def parse_key(key: str) -> tuple[str, str | uuid.UUID]:
    """What kind of identifier a profile key is, canonical; 422 naming the failed check."""
    try:
        return KeyKind.ID, uuid.UUID(key.strip())
    except ValueError:
        pass
    clean = ids.normalize_identifier(key)
    try:
        if len(clean) == 18:
            return KeyKind.USCC, ids.parse_uscc(clean)
        if len(clean) == 9:
            return KeyKind.ORG_CODE, ids.parse_org_code(clean)
        if len(clean) == 15 and clean.isdigit():
            return KeyKind.REG_NO, ids.parse_reg_no(clean)
    except ids.IdentifierError as exc:
        raise RequestInvalid(
            exc.message,
            errors=[{"parameter": "key", "code": exc.code, "message": exc.message}],
        ) from None
    message = (
        "Not a subject id, USCC (18), organization code (9) or registration number (15); "
        "natural persons are found with POST /v1/subjects/lookup."
    )
    raise RequestInvalid(
        message, errors=[{"parameter": "key", "code": "key.unrecognized", "message": message}]
    )


_SUBJECTS = table(Subject)
# A subject as the read side sees it: the subject table's columns, no ORM identity.
SubjectRow = Row[Any]


def find_many(
    session: Session, keys: Sequence[tuple[str, str | uuid.UUID]]
) -> dict[tuple[str, str | uuid.UUID], SubjectRow]:
    """Subjects by parsed key, one query per kind of key; merged subjects are followed."""
    connection = session.connection()
    found: dict[tuple[str, str | uuid.UUID], SubjectRow] = {}
    for kind in (KeyKind.ID, KeyKind.USCC, KeyKind.ORG_CODE, KeyKind.REG_NO):
        values = [value for k, value in keys if k == kind]
        for chunk in _chunks(values):
            # With a USCC subject and a waiting one sharing a legacy code, the USCC one wins.
            statement = _by_column(kind, connection.dialect)
            for subject in connection.execute(statement, {"values": list(chunk)}):
                found.setdefault((kind, getattr(subject, kind)), subject)
    merged = {k: s.merged_into_id for k, s in found.items() if s.merged_into_id is not None}
    if merged:
        targets = {
            s.id: s
            for s in connection.execute(
                _by_column(KeyKind.ID, connection.dialect), {"values": list(set(merged.values()))}
            )
        }
        for key, target in merged.items():
            if target in targets:
                found[key] = targets[target]
    return found


@lru_cache(maxsize=16)
def _by_column(kind: str, dialect: Dialect) -> Select[Any]:
    """Subjects whose column `kind` (a KeyKind: the column's name) is in :values."""
    column = _SUBJECTS.c[kind]
    return (
        select(_SUBJECTS)
        .where(bulk.in_values(column, "values", dialect))
        .order_by(_SUBJECTS.c.uscc.is_(None))
    )


@lru_cache(maxsize=8)
def _one_by_column(kind: str) -> Prepared:
    column = _SUBJECTS.c[kind]
    return Prepared(
        select(_SUBJECTS)
        .where(column == bindparam("value"))
        .order_by(_SUBJECTS.c.uscc.is_(None))
        .limit(1)
    )


def no_subject() -> NotFound:
    """The one answer for a key no subject has, or has for a client that may not see it."""
    return NotFound("No subject with this key is visible to this client.")


def find(session: Session, key: str) -> SubjectRow:
    return find_parsed(session, parse_key(key))


def find_parsed(session: Session, parsed: tuple[str, str | uuid.UUID]) -> SubjectRow:
    """One subject by parsed key (a profile read: prepared statements, see fastsql)."""
    kind, value = parsed
    subject: SubjectRow | None = _one_by_column(kind).first(session, value=value)
    if subject is not None and subject.merged_into_id is not None:
        subject = _one_by_column(KeyKind.ID).first(session, value=subject.merged_into_id)
    if subject is None:
        raise no_subject()
    return subject


def find_person(session: Session, keyring: Keyring, id_type: str, id_number: str) -> SubjectRow:
    number = ids.normalize_identifier(id_number)
    if id_type == RESIDENT_ID_TYPE:
        try:
            number = ids.parse_id_number(number)
        except ids.IdentifierError as exc:
            raise RequestInvalid(
                exc.message,
                errors=[{"pointer": "/id_number", "code": exc.code, "message": exc.message}],
            ) from None
    key = keyring.person_key(id_type, number)
    subject = session.execute(select(_SUBJECTS).where(_SUBJECTS.c.person_key == key)).first()
    if subject is None:
        raise no_subject()
    return subject
