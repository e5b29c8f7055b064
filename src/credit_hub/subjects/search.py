"""Finding subjects by name or identifier, backed by a real index on each database.

Names of three characters or more: SQLite FTS5 with the trigram tokenizer; on PostgreSQL
pg_trgm (GIN) for rare substrings and a bounded walk of the names for common ones (see
`_pg_substring`). Shorter text: a prefix range on a B-tree (C collation on PostgreSQL). Current
and former names are both searched (the index is over `subject_name`). Pages are keyed by the
name row's position, so a page costs the same however deep it is.
"""

from __future__ import annotations

import base64
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def _position(cursor: str | None, kind: str) -> Any:
    """The position a cursor carries, checked to be of the search's kind: a SQLite rowid
    (`rowid`), a name row's id (`uuid`) or a name and id (`text`). A cursor forged or made by
    another kind of search is a 422, never a failed statement."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded))["p"]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        position = _INVALID
    if position is None:
        return None
    if kind == "rowid":
        valid = type(position) is int and 0 <= position < 2**63
    else:
        valid = isinstance(position, str) and len(position) <= _MAX_POSITION
        valid = valid and (kind == "text" or _is_uuid(position))
    if not valid:
        raise RequestInvalid(
            "The cursor is not one this service gave out.",
            errors=[{"parameter": "cursor", "code": "cursor.invalid", "message": "bad cursor"}],
        )
    return position


_INVALID = object()
_MAX_POSITION = 300  # a name (at most 200 characters), "|" and an id


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
    persons = "" if include_persons else "AND s.kind != 'natural_person'"
    sqlite = session.get_bind().dialect.name == "sqlite"
    position = _position(cursor, ("rowid" if sqlite else "uuid") if len(q) >= 3 else "text")
    params: dict[str, Any] = {"limit": limit + 1, "after": position}
    if len(q) >= 3 and sqlite:
        sql, through = _sqlite_substring(session, persons)
        params |= {"through": through, "match": '"' + q.replace('"', '""') + '"'}
        params["pattern"] = _like_pattern(q)
    elif len(q) >= 3:
        params["pattern"] = _like_pattern(q)
        rows, walked_to = _pg_substring(session, q, params, persons)
        hits, cursor = _page(rows, limit)
        return hits, cursor if walked_to is None else _cursor(walked_to)
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
    return _page(session.execute(text(sql), params).all(), limit)


def _page(rows: Sequence[Any], limit: int) -> tuple[list[Hit], str | None]:
    """Hits of a page read with `limit + 1` rows, and the cursor of the next page if any."""
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


# PostgreSQL: how a page of names containing a substring is found, in position order. The
# planner makes this choice itself from estimates that can be wrong a hundredfold for three
# Chinese characters (it walked 190,000 names for one matched by 25, 65 ms; it read and sorted
# 6,000 matches where a walk of 700 names would do). So, in turn, each step only when the one
# before did not fill the page:
# 1. walk the next `budget` names in position order: enough for a common substring;
# 2. read the matches through the trigram index if there are fewer than `cap`, and sort them:
#    a rare substring (the index's bitmap of a very common one costs more than step 1);
# 3. walk on, at most STEP3_BUDGETS budgets, until the page is full: a middling substring, with
#    at least `cap` matches, so that one name in budget / limit / 2 or so matches on average.
#    Should its matches lie further away (names of one new district, all recent), the page
#    ends where the walk stopped, short, with a cursor from there: every request does
#    bounded work, never a scan of all names.
# A name walked costs about 0.6 µs and a match read through the index about 3 µs, so for N
# names the worst of steps 1 and 2 is least with a budget near sqrt(105 N): a page costs
# O(sqrt(N)) at worst, not O(N).
#
# Step 1 is wasted on a rare substring, and a substring found in no name walks its whole
# budget (16 ms at 10 million names). So a sample of the names, drawn at random now and then
# (`_Sample`), estimates how many names hold the substring: when even a generous estimate
# says that reading them through the index costs less than the walk that would fill a page
# (M matches cost 3 M µs; a page's walk 0.6 limit N / M µs: equal at M = sqrt(0.2 limit N)),
# step 2 goes first and step 1 is skipped. A substring as common in the names as in the sample
# then costs about the same at any N (a walk of limit N / M names, or M matches read), except
# near that balance, where it still costs O(sqrt(N)). The sample also tells which pieces of
# the substring are common: step 2 does not ask the index for those (`_Plan.index_lookup`).
WALK_FACTOR = 105
MIN_BUDGET = 2000  # the least walk budget, and the least index cap
STEP3_BUDGETS = 8
INDEX_VS_WALK = 0.2  # the cost of a name walked over that of a match read through the index
SAMPLE_NAMES = 5_000
FREQUENT_PIECE = 0.1  # a piece held by more of the sampled names is not asked of the index
SAMPLE_SECONDS = 1800.0  # a sample is drawn again after this long, or when the names grew by
SAMPLE_GROWTH = 1.25  # this factor (or shrank by as much)


@dataclass(frozen=True, slots=True)
class _Sample:
    """Organization names drawn at random: `size` of them, joined by NUL (a character no name
    holds), how many of them hold each piece of three characters (`holding`; pieces held by
    one name or none are left out), and how many names the table had then."""

    text: str
    holding: dict[str, int]
    size: int
    of_names: int
    drawn: float  # time.monotonic()

    @classmethod
    def of(cls, names: Sequence[str], of_names: int) -> _Sample:
        holding = Counter(
            piece for name in names for piece in {name[i : i + 3] for i in range(len(name) - 2)}
        )
        kept = {piece: count for piece, count in holding.items() if count > 1}
        return cls("\0".join(names), kept, len(names), of_names, time.monotonic())

    def holders(self, piece: str) -> int:
        return self.holding.get(piece, 1)

    def stale(self, names: int) -> bool:
        grown = max(names, 1) / max(self.of_names, 1)
        aged = time.monotonic() - self.drawn > SAMPLE_SECONDS
        return aged or not 1 / SAMPLE_GROWTH <= grown <= SAMPLE_GROWTH


@dataclass(frozen=True, slots=True)
class _Plan:
    names: int
    budget: int
    until: float  # time.monotonic() after which the table's size is looked up again
    sample: _Sample | None = None
    chinese_trigrams: bool = True  # whether pg_trgm makes trigrams of Chinese characters

    def index_lookup(self, q: str) -> tuple[list[str], int | None]:
        """What step 2 asks the trigram index for, and how many sampled names hold `q` (None
        without a sample). The index is asked for names holding each piece of three
        characters of `q` that few sampled names hold (the rarest piece if all are common),
        and the names holding the whole of `q` are kept from those: every piece asked for
        reads its posting list, and a common one is long. `有限公` is in most names: at
        625,000 names `永科技有限公` read through the index took 2.8 ms asked whole, 0.85 ms
        asked as `永科技`. Without a sample, or without such pieces, the whole substring."""
        sample = self.sample
        finder = _TRIGRAM_PIECE if self.chinese_trigrams else _ASCII_TRIGRAM_PIECE
        pieces = [m.group(1) for m in finder.finditer(q)]
        if sample is None or sample.size == 0 or not pieces:
            return [_like_pattern(q)], None
        frequent = FREQUENT_PIECE * sample.size
        asked = [piece for piece in dict.fromkeys(pieces) if sample.holders(piece) <= frequent]
        asked = asked or [min(pieces, key=sample.holders)]
        return [f"%{piece}%" for piece in asked], sample.text.count(q)

    def index_first(self, found: int | None, limit: int) -> bool:
        """Whether `found` of the sampled names holding the substring (from index_lookup)
        say that reading its matches through the index costs less than the walk that would
        find a page of them (see above)."""
        if found is None or self.sample is None:
            return False
        # Two more than the sample holds: a substring in none of 5,000 sampled names can
        # still be in one name in 2,500. A table never analyzed has no size yet (0): walk
        # first, as without a sample.
        most = (found + 2) * self.names / self.sample.size
        return most * most < INDEX_VS_WALK * limit * self.names


# Three characters pg_trgm takes for a trigram (letters or digits of one word: Chinese
# characters, ASCII letters and digits), overlapping. A pattern without one makes pg_trgm read
# the whole index: such a substring is never sent to it first. Whether Chinese characters are
# letters to pg_trgm depends on the database's LC_CTYPE: in "C" they are not (the database
# is checked once, with the table's size).
_TRIGRAM_PIECE = re.compile(r"(?=([0-9A-Za-z\u4e00-\u9fff]{3}))")
_ASCII_TRIGRAM_PIECE = re.compile(r"(?=([0-9A-Za-z]{3}))")


_plans: dict[str, _Plan] = {}


def _substring_plan(session: Session) -> _Plan:
    """The walk budget for the current size of subject_name (the planner's estimate, looked up
    once a minute), and a sample of its names (drawn again when stale)."""
    url = str(session.get_bind().engine.url)
    plan = _plans.get(url)
    if plan is None or plan.until < time.monotonic():
        size, chinese_trigrams = session.execute(_PLAN_FACTS).one()
        names = int(size)
        budget = max(MIN_BUDGET, math.isqrt(WALK_FACTOR * names))
        sample = plan.sample if plan else None
        if sample is None or sample.stale(names):
            sample = _draw_sample(session, names)
        until = time.monotonic() + 60
        plan = _plans[url] = _Plan(names, budget, until, sample, bool(chinese_trigrams))
    return plan


_PLAN_FACTS = text("""
    SELECT greatest(reltuples, 0), cardinality(show_trgm('甲乙丙')) > 0
    FROM pg_class WHERE oid = 'subject_name'::regclass""")


# SYSTEM sampling reads whole pages picked at random: a few hundred pages, not the table. A
# table whose size the planner does not know yet (never analyzed) is sampled whole, but
# never more than twice the sample's size. Each sampled name's subject is looked up by its
# key (a scalar subquery, which the planner never turns into a join): as NOT EXISTS, the
# planner expected no person among them and read every subject instead (106 ms at 600,000
# subjects, against 29-58 ms for the ~6,000 lookups, which do not grow with the table).
_SAMPLE = text("""
    SELECT sn.name FROM subject_name sn TABLESAMPLE SYSTEM (:percent)
    WHERE (SELECT s.kind FROM subject s WHERE s.id = sn.subject_id) <> 'natural_person'
    LIMIT :most""")


def _draw_sample(session: Session, names: int) -> _Sample:
    return _Sample.of(_sampled_names(session, names), names)


def _sampled_names(session: Session, names: int) -> list[str]:
    percent = min(100.0, 100.0 * 1.2 * SAMPLE_NAMES / names) if names else 100.0
    params = {"percent": percent, "most": 2 * SAMPLE_NAMES}
    return list(session.execute(_SAMPLE, params).scalars())


_PG_WALK = """
    SELECT w.id::text AS position, w.name AS matched, s.id, s.kind, s.name, s.uscc, s.division
    FROM (SELECT sn.id, sn.subject_id, sn.name FROM subject_name sn
          WHERE CAST(:after AS uuid) IS NULL OR sn.id > CAST(:after AS uuid)
          ORDER BY sn.id {budget}) AS w
    JOIN subject s ON s.id = w.subject_id
    WHERE w.name LIKE :pattern AND s.merged_into_id IS NULL {persons}
    ORDER BY w.id LIMIT :limit"""

_PG_INDEXED = """
    WITH candidate AS MATERIALIZED (
        SELECT sn.id, sn.subject_id, sn.name FROM subject_name sn
        WHERE {indexed} AND (sn.name || '') LIKE :pattern LIMIT :cap
    ), page AS (  -- candidates sorted first: subjects are looked up for one page only
        SELECT c.id AS name_id, c.name AS matched, s.id, s.kind, s.name, s.uscc, s.division
        FROM (SELECT * FROM candidate
              WHERE CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)
              ORDER BY id) AS c
        JOIN subject s ON s.id = c.subject_id
        WHERE s.merged_into_id IS NULL {persons}
        ORDER BY c.id LIMIT :limit
    )
    SELECT (SELECT count(*) FROM candidate) AS candidates, page.name_id::text AS position,
           page.matched, page.id, page.kind, page.name, page.uscc, page.division
    FROM (SELECT 1) AS one LEFT JOIN page ON true
    ORDER BY page.name_id"""


def _pg_substring(
    session: Session, q: str, params: dict[str, Any], persons: str
) -> tuple[Sequence[Any], str | None]:
    """PostgreSQL: a page of names containing a substring, in position order (see above), and
    where the next page starts if the walk of step 3 stopped short (else None: as the rows
    say)."""
    plan = _substring_plan(session)
    walk = text(_PG_WALK.format(persons=persons, budget="LIMIT :budget"))
    indexed, found = plan.index_lookup(q)
    if not plan.index_first(found, params["limit"]):
        rows = session.execute(walk, params | {"budget": plan.budget}).all()
        if len(rows) >= params["limit"]:
            return rows, None
    # Step 1 found fewer than `limit` in `budget` names (or the sample says as much): in all,
    # about names * limit / budget or fewer. Twice that many, and step 3 will walk fewer names
    # than step 1 did per page.
    cap = max(MIN_BUDGET, 2 * params["limit"] * plan.names // plan.budget)
    with _planner(session, "enable_seqscan", "enable_indexscan"):  # the trigram index only
        asked = {f"indexed{i}": pattern for i, pattern in enumerate(indexed)}
        conditions = " AND ".join(f"sn.name LIKE :{name}" for name in asked)
        statement = text(_PG_INDEXED.format(persons=persons, indexed=conditions))
        read = session.execute(statement, params | asked | {"cap": cap}).all()
    if read[0].candidates < cap:
        return [row for row in read if row.position is not None], None
    longest = STEP3_BUDGETS * plan.budget
    with _planner(session, "enable_seqscan", "enable_bitmapscan"):  # positions in order
        rows = session.execute(walk, params | {"budget": longest}).all()
        if len(rows) >= params["limit"]:
            return rows, None
        walked_to = session.execute(_WALKED_TO, params | {"offset": longest - 1}).scalar()
    return rows, walked_to


# The position of the name `offset` names past the cursor: where a walk stopped.
_WALKED_TO = text("""
    SELECT sn.id::text FROM subject_name sn
    WHERE CAST(:after AS uuid) IS NULL OR sn.id > CAST(:after AS uuid)
    ORDER BY sn.id OFFSET :offset LIMIT 1""")


@contextmanager
def _planner(session: Session, *disabled: str) -> Iterator[None]:
    """The planner's `enable_*` switches named, off for the statements run inside; on again
    after them, for the rest of the transaction."""

    def switch(value: str) -> None:
        calls = ", ".join(f"set_config('{setting}', '{value}', true)" for setting in disabled)
        session.execute(text(f"SELECT {calls}"))

    switch("off")
    try:
        yield
    finally:
        switch("on")


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
