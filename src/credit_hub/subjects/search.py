"""Finding subjects by name or identifier, backed by a real index on each database.

Names of three characters or more: SQLite FTS5 with the trigram tokenizer; on PostgreSQL
pg_trgm (GIN, over blocks of names numbered in order) for rare and middling substrings and a
bounded walk of the names for common ones (see `_pg_substring`). Shorter text: a prefix range
on a B-tree (C collation on PostgreSQL). Current and former names are both searched (the index
is over `subject_name`). Pages are keyed by the name row's position, so a page costs the same
however deep it is.
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
from typing import Any, Literal

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
    """The position a cursor carries, checked to be of the search's kind: a number (`rowid`:
    a SQLite rowid, PostgreSQL's search_seq) or a name and id (`text`). A cursor forged or
    made by another kind of search is a 422, never a failed statement."""
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
    position = _position(cursor, "rowid" if len(q) >= 3 else "text")
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


# PostgreSQL: how a page of names containing a substring is found, in position order (a
# name's position is its `search_seq`, a number given in insertion order). The planner makes
# this choice itself from estimates that can be wrong a hundredfold for three Chinese
# characters (it walked 190,000 names for one matched by 25, 65 ms; it read and sorted 6,000
# matches where a walk of 700 names would do). So this code chooses among three ways:
# - walk: the next `budget` names in position order, each name read (~0.6 µs): a common
#   substring fills a page at once;
# - index: all the matches through the trigram index (GIN, ~3 µs a match), sorted, if fewer
#   than `cap` (`_Plan.cap`, which grows with N): a rare substring; with more, the same
#   statement goes on to the blocks;
# - blocks: names are numbered in blocks of NAMES_PER_BLOCK, and the trigram index is made
#   over (block, trigrams): one probe (~25 µs, plus the names the probed piece lets through)
#   gives the matches of one block, so walking the blocks in order fills a page of a middling
#   substring (too rare for a walk, too common to read whole) in a few probes, whatever N. At
#   most MAX_BLOCKS a request: should the matches lie further away (names of one new district,
#   all recent), the page ends where the probes stopped, short, with a cursor from there:
#   every request does bounded work.
# Without a sample, the walk goes first, then the index. With one, a sample of the names,
# drawn at random now and then (`_Sample`), estimates how many names M hold the substring,
# and the way that costs least for that M goes first (`_Plan.first_way`); should it come up
# short, the others follow. The way depends on the share of the names holding the substring,
# not on N; only the index's cap grows with N (~1 µs per 1,000 names at worst), where the
# balance of the walk and the index cost O(sqrt(N)) (docs/performance.md). The sample also
# tells which pieces of the substring are common: the index is not asked for those
# (`_Plan.index_lookup`).
WALK_FACTOR = 105  # the walk's budget: sqrt(WALK_FACTOR * N) names
MIN_BUDGET = 2000  # the least walk budget
NAMES_PER_BLOCK = 4096  # fixed by the index's expression (search_seq / 4096): see the migration
MAX_BLOCKS = 32
WALK_NAME_US = 0.6  # what a name walked, a match read through the index and a probe of a
INDEX_MATCH_US = 3.0  # block cost, in µs at 1M records (only their ratios matter)
BLOCK_PROBE_US = 25.0
SAMPLE_NAMES = 5_000
FREQUENT_PIECE = 0.1  # a piece held by more of the sampled names is not asked of the index
SAMPLE_SECONDS = 1800.0  # a sample is drawn again after this long, or when the names grew by
SAMPLE_GROWTH = 1.25  # this factor (or shrank by as much)

Way = Literal["walk", "index", "blocks"]
# The ways tried in turn, by the one that goes first. The index's statement goes on to the
# blocks by itself when it finds too many matches.
_WAYS: dict[Way, tuple[Way, ...]] = {
    "walk": ("walk", "index"),
    "index": ("index",),
    "blocks": ("blocks", "index"),
}


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
        reads its posting list, and a common one is long. The rarest piece comes first: a
        probe of one block asks for that one only (one posting list read costs less there
        than the few names it lets through). `有限公` is in most names: at
        625,000 names `永科技有限公` read through the index took 2.8 ms asked whole, 0.85 ms
        asked as `永科技`. Without a sample, or without such pieces, the whole substring."""
        sample = self.sample
        finder = _TRIGRAM_PIECE if self.chinese_trigrams else _ASCII_TRIGRAM_PIECE
        pieces = [m.group(1) for m in finder.finditer(q)]
        if sample is None or sample.size == 0 or not pieces:
            return [_like_pattern(q)], None
        frequent = FREQUENT_PIECE * sample.size
        asked = [piece for piece in dict.fromkeys(pieces) if sample.holders(piece) <= frequent]
        asked = sorted(asked, key=sample.holders) or [min(pieces, key=sample.holders)]
        return [f"%{piece}%" for piece in asked], sample.text.count(q)

    def cap(self, limit: int) -> int:
        """The most matches the index way reads: with more, a page of them is within half of
        MAX_BLOCKS blocks (on average), and the blocks go next."""
        return max(2 * limit, math.ceil(2 * limit * self.names / (MAX_BLOCKS * NAMES_PER_BLOCK)))

    def first_way(self, found: int | None, limit: int, probed: str | None = None) -> Way:
        """The way (see above) that costs least for a substring `found` (from index_lookup)
        of the sampled names hold, whose blocks are probed for the piece `probed` (the first
        pattern index_lookup gives): the walk without a sample."""
        sample = self.sample
        if found is None or sample is None or self.names <= 0:
            # A table never analyzed has no size yet (0): walk first, as without a sample.
            return "walk"
        share = self.names / sample.size
        likely = (found + 1) * share
        per_block = likely * NAMES_PER_BLOCK / self.names
        # A probe reads the names of the block holding the piece asked for, and keeps those
        # holding the substring.
        piece = sample.holders(probed.strip("%")) if probed else found
        read = max(per_block, piece * NAMES_PER_BLOCK / sample.size)
        blocks = math.ceil(limit / per_block) * (BLOCK_PROBE_US + INDEX_MATCH_US * read)
        # Two more than the sample holds: a substring in none of 5,000 sampled names can
        # still be in one name in 2,500. Past `cap` matches the index gives way to the blocks.
        most, cap = (found + 2) * share, self.cap(limit)
        costs: dict[Way, float] = {
            "walk": WALK_NAME_US * limit * self.names / likely,
            "index": INDEX_MATCH_US * most if most <= cap else INDEX_MATCH_US * cap + blocks,
        }
        # Sampled counts are few, and names are not spread evenly: the blocks go first only
        # when even the fewest names the sample suggests (`found`, not found + 1) fill a page
        # within half of MAX_BLOCKS probes. Else they would come up short, and the index
        # would follow: the index goes first, and the blocks only past its cap.
        if found and 2 * limit * self.names <= MAX_BLOCKS * found * share * NAMES_PER_BLOCK:
            costs["blocks"] = blocks
        return min(costs, key=costs.__getitem__)


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
    SELECT w.search_seq AS position, w.name AS matched, s.id, s.kind, s.name, s.uscc, s.division
    FROM (SELECT sn.search_seq, sn.subject_id, sn.name FROM subject_name sn
          WHERE CAST(:after AS bigint) IS NULL OR sn.search_seq > CAST(:after AS bigint)
          ORDER BY sn.search_seq LIMIT :budget) AS w
    JOIN subject s ON s.id = w.subject_id
    WHERE w.name LIKE :pattern AND s.merged_into_id IS NULL {persons}
    ORDER BY w.search_seq LIMIT :limit"""

# The blocks from the cursor's on, each probed through the index (the lateral subquery is
# run once per block, in block order: the nested loop keeps that order and the LIMIT stops
# it once the page is full). A block past the last name costs a probe of an empty posting
# list (its last is looked up only when the page comes up short: with the planner switches
# of _PG_INDEXED, max() read the whole table). As in _PG_INDEXED, `name || ''`
# keeps the whole substring from the index, which would read the posting lists of its
# common pieces too.
_PG_BLOCKS = f"""
    SELECT x.* FROM generate_series(
        CAST(:first_block AS bigint), CAST(:last_block AS bigint)) AS b(block)
    CROSS JOIN LATERAL (
        SELECT sn.search_seq AS position, sn.name AS matched, s.id, s.kind, s.name, s.uscc,
               s.division
        FROM (SELECT sn.search_seq, sn.subject_id, sn.name FROM subject_name sn
              WHERE sn.search_seq / {NAMES_PER_BLOCK} = b.block AND {{indexed}}
                AND (sn.name || '') LIKE :pattern
                AND (CAST(:after AS bigint) IS NULL OR sn.search_seq > CAST(:after AS bigint))
              ORDER BY sn.search_seq) AS sn  -- sorted first: subjects looked up for a page
        JOIN subject s ON s.id = sn.subject_id
        WHERE s.merged_into_id IS NULL {{persons}}
        ORDER BY sn.search_seq) AS x
    LIMIT :limit"""

_LAST_BLOCK = text(f"SELECT max(search_seq) / {NAMES_PER_BLOCK} FROM subject_name")

# The matches read through the index if fewer than `cap`, sorted (subjects are looked up for
# one page only); with as many, the blocks' probes instead: one statement either way. The
# first row carries the number of candidates read; either of the other parts runs only as
# that number says (a condition on no row is tested once, before the part's plan runs).
_PG_INDEXED = """
    WITH candidate AS MATERIALIZED (
        SELECT sn.search_seq, sn.subject_id, sn.name FROM subject_name sn
        WHERE {indexed} AND (sn.name || '') LIKE :pattern LIMIT :cap
    ), counted AS MATERIALIZED (SELECT count(*) AS candidates FROM candidate)
    SELECT candidates, NULL AS position, NULL AS matched, NULL AS id, NULL AS kind,
           NULL AS name, NULL AS uscc, NULL AS division
    FROM counted
    UNION ALL
    (SELECT NULL, c.search_seq, c.name, s.id, s.kind, s.name, s.uscc, s.division
     FROM (SELECT * FROM candidate
           WHERE CAST(:after AS bigint) IS NULL OR search_seq > CAST(:after AS bigint)
           ORDER BY search_seq) AS c
     JOIN subject s ON s.id = c.subject_id
     WHERE s.merged_into_id IS NULL {persons} AND (SELECT candidates FROM counted) < :cap
     ORDER BY c.search_seq LIMIT :limit)
    UNION ALL
    SELECT NULL, b.* FROM ({blocks}) AS b WHERE (SELECT candidates FROM counted) >= :cap"""


def _pg_substring(
    session: Session, q: str, params: dict[str, Any], persons: str
) -> tuple[Sequence[Any], int | None]:
    """PostgreSQL: a page of names containing a substring, in position order (see above), and
    where the next page starts if the blocks' probes stopped short (else None: as the rows
    say)."""
    plan = _substring_plan(session)
    limit = params["limit"]
    indexed, found = plan.index_lookup(q)
    asked = {f"indexed{i}": pattern for i, pattern in enumerate(indexed)}
    after = params["after"]
    first_block = 0 if after is None else (after + 1) // NAMES_PER_BLOCK
    last_block = first_block + MAX_BLOCKS - 1
    params = params | asked | {"first_block": first_block, "last_block": last_block}
    blocks = _PG_BLOCKS.format(persons=persons, indexed="sn.name LIKE :indexed0")
    short: tuple[Sequence[Any], int | None] = ([], None)
    for way in _WAYS[plan.first_way(found, limit, indexed[0])]:
        if way == "walk":
            walk = text(_PG_WALK.format(persons=persons))
            rows = session.execute(walk, params | {"budget": plan.budget}).all()
            if len(rows) >= limit:
                return rows, None
            continue
        if way == "index":
            cap = plan.cap(limit)
            conditions = " AND ".join(f"sn.name LIKE :{name}" for name in asked)
            statement = _PG_INDEXED.format(persons=persons, indexed=conditions, blocks=blocks)
            # After the blocks came up short, the statement does not probe them again (an
            # empty range): past its cap, their page stands.
            probed = {"last_block": first_block - 1} if short[1] is not None else {}
            with _planner(session, "enable_seqscan", "enable_indexscan"):  # the index only
                read = session.execute(text(statement), params | {"cap": cap} | probed).all()
            rows = sorted((r for r in read if r.position is not None), key=lambda r: r.position)
            if next(r.candidates for r in read if r.candidates is not None) < cap:
                return rows, None
            if probed:
                return short
        else:
            with _planner(session, "enable_seqscan"):  # each block through the index
                rows = session.execute(text(blocks), params).all()
        if len(rows) >= limit:
            return rows, None
        if (session.execute(_LAST_BLOCK).scalar() or 0) <= last_block:
            return rows, None  # the blocks ran to the last name
        short = (rows, (last_block + 1) * NAMES_PER_BLOCK - 1)
    return short


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
