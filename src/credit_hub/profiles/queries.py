"""The hand-written queries of the read side: one statement per question, for any number of
subjects (a profile is a screening of one).

Statements are built once per shape and run as Core on the session's connection: a profile
read is a few milliseconds, and building, hashing and ORM-wrapping a statement per call
would be a good part of it.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    Row,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON

from credit_hub import bulk
from credit_hub.access.models import Client
from credit_hub.db import table
from credit_hub.fastsql import Prepared
from credit_hub.records.models import Record, RecordStatus, RecordVersion
from credit_hub.subjects.models import Subject, SubjectName

CHUNK = 500

_RECORDS = table(Record)
_VERSIONS = table(RecordVersion)
_LATER_VERSIONS = _VERSIONS.alias("later_version")
_CLIENTS = table(Client)
_NAMES = table(SubjectName)
_SUBJECTS = table(Subject)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _visible_parts(
    as_of: bool, include_unpublished: bool, include_withdrawn: bool, *, facts: bool
) -> tuple[list[Any], Any, list[Any]]:
    """The columns, joined tables and conditions of the records a reader may see."""
    r, v = _RECORDS.c, _VERSIONS.c
    status: Any
    if not as_of:
        version_join = and_(v.record_id == r.id, v.version == r.version)
        status = r.status
        # Repaired and withheld (minors') records are never shown, whatever the scope.
        conditions = [r.status != RecordStatus.REPAIRED, r.withheld_reason.is_(None)]
        if not include_withdrawn:
            # Not IN (...): a constant list compiles to an expanding parameter (fastsql).
            conditions.append(
                or_(r.status == RecordStatus.ACTIVE, r.status == RecordStatus.EXPIRED)
            )
    else:
        end = bindparam("as_of_end", type_=r.created_at.type)
        # The latest version stored by then: none numbered after it was (a range of the
        # primary key). Not "the next one's created_at": two pushes racing on one record can
        # store versions 2 and 3 with 3's clock read first, and 2 then never was in force.
        n = _LATER_VERSIONS.c
        followed = (
            select(literal(1))
            .where(n.record_id == v.record_id, n.version > v.version, n.created_at <= end)
            .exists()
        )
        version_join = and_(v.record_id == r.id, v.created_at <= end, ~followed)
        withdrawn_then = and_(r.withdrawn_at.is_not(None), r.withdrawn_at <= end)
        status = case((withdrawn_then, RecordStatus.WITHDRAWN), else_=RecordStatus.ACTIVE)
        conditions = [
            r.created_at <= end,
            r.status != RecordStatus.REPAIRED,
            r.withheld_reason.is_(None),
        ]
        if not include_withdrawn:
            conditions.append(~withdrawn_then)
    # Summaries of today read the record table alone: a record carries its current version's
    # publication window and fine (ingest writes both from the same derived values).
    record_only = facts and not as_of
    window = r if record_only else v
    if not include_unpublished:
        on = bindparam("on", type_=v.publish_from.type)
        conditions += [
            window.publish_from <= on,
            or_(window.publish_until.is_(None), window.publish_until >= on),
        ]
    columns: list[Any]
    if facts:
        # Only what a summary needs: never the (large) documents.
        fine = r.fine_amount_wan if record_only else v.data["fine_amount_wan"].as_string()
        columns = [
            r.subject_id,
            r.standard,
            status.label("status"),
            r.under_objection,
            r.decision_date,
            fine.label("fine"),
        ]
    else:
        columns = [
            r.id,
            r.subject_id,
            r.standard,
            r.source_id,
            v.version,
            status.label("status"),
            r.severity,
            r.decision_date,
            v.publish_from,
            v.publish_until,
            r.under_objection,
            r.department_id,
            _CLIENTS.c.name.label("department_name"),
            # The JSON text stored (PostgreSQL: jsonb written out), never parsed: the profile
            # embeds it as it is (orjson.Fragment). Parsing each document and writing it back
            # out cost a tenth of the read and its rendering (bench/profile.py's store).
            cast(v.data, Text).label("data"),
            v.personal_enc,
            r.fine_amount_wan.label("fine"),  # today's: a past version's is in its document
        ]
    joined = _RECORDS if record_only else _RECORDS.join(_VERSIONS, version_join)
    if not facts:  # summaries need neither the department's name nor an order
        joined = joined.join(_CLIENTS, _CLIENTS.c.id == r.department_id)
    return columns, joined, conditions


@lru_cache(maxsize=32)
def _visible_statement(
    as_of: bool,
    include_unpublished: bool,
    include_withdrawn: bool,
    *,
    facts: bool = False,
    single: bool = False,
    dialect: Dialect | None = None,
) -> Select[Any]:
    """`single`: one subject's; else of the subjects and standards listed, on `dialect`."""
    r = _RECORDS.c
    columns, joined, conditions = _visible_parts(
        as_of, include_unpublished, include_withdrawn, facts=facts
    )
    stmt = (
        select(*columns)
        .select_from(joined)
        .where(
            # One subject (a profile): its few records are filtered by standard afterwards,
            # so that the statement has scalar parameters only (fastsql).
            r.subject_id == bindparam("subject_id")
            if single
            else and_(
                bulk.in_values(r.subject_id, "subject_ids", _dialect(dialect)),
                bulk.in_values(r.standard, "standards", _dialect(dialect)),
            ),
            *conditions,
        )
    )
    return stmt if facts else stmt.order_by(r.standard, r.decision_date.desc(), r.source_id)


def _dialect(dialect: Dialect | None) -> Dialect:
    assert dialect is not None, "a statement over listed subjects is built for one dialect"
    return dialect


@lru_cache(maxsize=16)
def _one_subject(as_of: bool, include_unpublished: bool, include_withdrawn: bool) -> Prepared:
    return Prepared(_visible_statement(as_of, include_unpublished, include_withdrawn, single=True))


def visible_records(
    session: Session,
    subject_ids: Sequence[uuid.UUID],
    *,
    standards: Iterable[str],
    on: date,
    as_of_end: datetime | None = None,
    include_unpublished: bool = False,
    include_withdrawn: bool = False,
) -> list[Row[Any]]:
    """The records of these subjects a reader may see on day `on`, with the version current
    then: the latest version now, or (with `as_of_end`) the one in force at that instant."""
    wanted = sorted(set(standards))
    if not wanted or not subject_ids:
        return []
    shape = (as_of_end is not None, include_unpublished, include_withdrawn)
    params: dict[str, Any] = {}
    if as_of_end is not None:
        params["as_of_end"] = as_of_end
    if not include_unpublished:
        params["on"] = on
    if len(subject_ids) == 1:
        found = _one_subject(*shape).rows(session, subject_id=subject_ids[0], **params)
        return [row for row in found if row.standard in wanted]
    connection = session.connection()
    stmt = _visible_statement(*shape, dialect=connection.dialect)
    params["standards"] = wanted
    rows: list[Row[Any]] = []
    for chunk in _chunks(list(subject_ids)):
        rows.extend(connection.execute(stmt, params | {"subject_ids": list(chunk)}).all())
    return rows


_FIRST_RECORD_AT = Prepared(
    select(_RECORDS.c.created_at)
    .where(_RECORDS.c.subject_id == bindparam("subject_id"))
    .order_by(_RECORDS.c.created_at)
    .limit(1)
)


def first_record_at(session: Session, subject_id: uuid.UUID) -> datetime | None:
    found = _FIRST_RECORD_AT.first(session, subject_id=subject_id)
    return found.created_at if found is not None else None


_FORMER_NAMES = Prepared(
    select(_NAMES.c.name, _NAMES.c.first_seen_on, _NAMES.c.last_seen_on)
    .where(_NAMES.c.subject_id == bindparam("subject_id"), _NAMES.c.name != bindparam("name"))
    .order_by(_NAMES.c.last_seen_on.desc())
)


def former_names(session: Session, subject_id: uuid.UUID, current: str) -> list[Any]:
    """A subject's other names, the most recently seen first."""
    return _FORMER_NAMES.rows(session, subject_id=subject_id, name=current)


class OneRead(NamedTuple):
    """A profile's raw material: the subject, its former names (as the profile shows them)
    and the record rows `visible_records` would answer, not yet filtered by standard."""

    subject: Any
    former_names: list[dict[str, Any]]
    records: list[Any]


_SubjectRow = namedtuple("_SubjectRow", [c.key for c in _SUBJECTS.c])  # type: ignore[misc]
_SUBJECT_PREFIX = "subject__"


@lru_cache(maxsize=32)
def _profile_statement(
    dialect: str, kind: str, include_unpublished: bool, include_withdrawn: bool
) -> Prepared:
    """What a profile (without `as_of`) reads, in one statement and so in one snapshot
    without a transaction: the subject by key (a merged subject followed, as
    `subjects.find_parsed` does) and its former names as JSON in a first row of their own,
    then one row per visible record without them: the subject's sixteen columns are sent and
    loaded once, not once per record. PostgreSQL orders the names in the aggregate; SQLite
    (3.40 cannot) leaves their order to `one_read`."""
    s = _SUBJECTS
    by_key = (
        select(s.c.id, s.c.merged_into_id)
        .where(s.c[kind] == bindparam("value"))
        .order_by(s.c.uscc.is_(None))
        .limit(1)
        .cte("by_key")
    )
    n = _NAMES.c
    name_fields = (
        literal("name"),
        n.name,
        literal("first_seen_on"),
        n.first_seen_on,
        literal("last_seen_on"),
        n.last_seen_on,
    )
    names: Any
    if dialect == "postgresql":
        names = func.coalesce(
            func.json_agg(
                aggregate_order_by(func.json_build_object(*name_fields), n.last_seen_on.desc()),
                type_=JSON,
            ),
            literal("[]").cast(JSON),
            type_=JSON,
        )
    else:
        names = func.json_group_array(func.json_object(*name_fields), type_=JSON)
    former = select(names).where(n.subject_id == s.c.id, n.name != s.c.name).scalar_subquery()
    # MATERIALIZED: the names are aggregated once, not once per record row.
    subject = (
        select(*s.c, former.label("former_names"))
        .join_from(s, by_key, s.c.id == func.coalesce(by_key.c.merged_into_id, by_key.c.id))
        .cte("found")
        .prefix_with("MATERIALIZED")
    )
    columns, joined, conditions = _visible_parts(
        False, include_unpublished, include_withdrawn, facts=False
    )
    r = _RECORDS.c
    identity = [subject.c[c.key].label(_SUBJECT_PREFIX + c.key) for c in s.c]
    # The records in rows of their own, not outer-joined to the subject: SQLite materializes
    # such a join (a scan of every record), and PostgreSQL's repeated the subject in each row.
    head = [*identity, subject.c.former_names]

    def nulls(of: list[Any]) -> list[Any]:  # typed: the first select's types read the rows
        return [type_coerce(null(), c.type).label(c.name) for c in of]

    of_subject = (
        select(*nulls(head), *columns)
        .select_from(subject.join(joined, r.subject_id == subject.c.id))
        .where(*conditions)
    )
    alone = select(*head, *nulls(columns)).select_from(subject)
    both = union_all(alone, of_subject)
    c = both.selected_columns
    return Prepared(both.order_by(c.standard.nulls_first(), c.decision_date.desc(), c.source_id))


def profile_statement(
    dialect: str,
    parsed: tuple[str, Any],
    *,
    on: date,
    include_unpublished: bool = False,
    include_withdrawn: bool = False,
) -> tuple[Prepared, dict[str, Any]]:
    """Without `as_of`: one statement (run on a Session's or a plain Connection, or on the
    event loop's) that reads a profile's subject by key, its former names and its records;
    `one_read` makes them a `OneRead` (None if no subject has this key)."""
    kind, value = parsed
    params: dict[str, Any] = {"value": value}
    if not include_unpublished:
        params["on"] = on
    return _profile_statement(dialect, kind, include_unpublished, include_withdrawn), params


def one_read(rows: list[Any], dialect: str) -> OneRead | None:
    """The subject, former names and record rows of `profile_statement`'s rows."""
    if not rows:
        return None
    first = rows[0]
    width = len(_SubjectRow._fields)
    former_names = first.former_names
    if dialect != "postgresql":  # the most recently seen first, as `former_names` answers
        former_names.sort(key=itemgetter("last_seen_on"), reverse=True)
    return OneRead(
        _SubjectRow(*first[:width]),
        former_names,
        [row for row in rows if row.id is not None],
    )


def visible_facts(
    session: Session,
    subject_ids: Sequence[uuid.UUID],
    *,
    standards: Iterable[str],
    on: date,
    include_unpublished: bool = False,
    include_withdrawn: bool = False,
) -> list[Row[Any]]:
    """Of the records `visible_records` would answer today: (subject_id, standard, status,
    under_objection, decision_date, fine), for summaries."""
    wanted = sorted(set(standards))
    if not wanted or not subject_ids:
        return []
    connection = session.connection()
    stmt = _visible_statement(
        False, include_unpublished, include_withdrawn, facts=True, dialect=connection.dialect
    )
    params: dict[str, Any] = {"standards": wanted}
    if not include_unpublished:
        params["on"] = on
    rows: list[Row[Any]] = []
    for chunk in _chunks(list(subject_ids)):
        rows.extend(connection.execute(stmt, params | {"subject_ids": list(chunk)}).all())
    return rows
