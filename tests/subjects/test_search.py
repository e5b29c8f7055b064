"""Name search: pages in position order, whichever way the database finds the names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from credit_hub.db import new_id
from credit_hub.subjects import search
from credit_hub.subjects.models import Subject, SubjectKind, SubjectName

_DAY = date(2026, 4, 2)
LIMIT = 3
BUDGET = 8

# Positions (name row ids) in this order, ahead of any other name in the database: eight
# names with a common substring first, fifteen with a middling one next, two with a rare one
# among fillers.
COMMON = [f"共同体示范{i}有限公司" for i in range(8)]
MIDDLING = [f"中间值样本{i}有限公司" for i in range(15)]
NAMES = [
    *COMMON,
    *MIDDLING,
    "填充一号公司",
    "稀有名甲公司",
    *[f"填充{i}号商行" for i in range(10)],
    "乙稀有名公司",
]


def _add(session: Session, names: list[str], blocks: list[int] | None = None) -> None:
    """Names in this order of positions; on PostgreSQL, each in the block given, if any."""
    for position, name in enumerate(names):
        subject = Subject(id=new_id(), kind=SubjectKind.ORGANIZATION, name=name)
        session.add(subject)
        session.flush()
        name_id = uuid.UUID(int=position + 1)
        session.add(
            SubjectName(
                id=name_id,
                subject_id=subject.id,
                name=name,
                first_seen_on=_DAY,
                last_seen_on=_DAY,
            )
        )
        session.flush()
        if blocks is not None and session.get_bind().dialect.name == "postgresql":
            session.execute(
                text("UPDATE subject_name SET search_seq = :seq WHERE id = :id"),
                {"seq": blocks[position] * search.NAMES_PER_BLOCK + position, "id": name_id},
            )


@pytest.fixture
def statements(session: Session) -> Iterator[list[str]]:
    seen: list[str] = []

    def listen(*args: object) -> None:
        seen.append(str(args[2]))

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", listen)
    yield seen
    event.remove(engine, "before_cursor_execute", listen)


def _pages(session: Session, q: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        hits, cursor = search.search(session, q, limit=LIMIT, cursor=cursor, include_persons=False)
        pages.append([hit.matched_name for hit in hits])
        if cursor is None:
            return pages


def _ways(statements: list[str]) -> list[str]:
    """The ways the PostgreSQL search took (see search.py), in turn: the index's statement
    goes on to the blocks by itself, and counts as the index."""
    marks = {
        "ORDER BY w.search_seq": "walk",
        "candidate AS MATERIALIZED": "index",
        "generate_series": "blocks",
    }
    ways = []
    for statement in statements:
        way = next((way for mark, way in marks.items() if mark in statement), None)
        if way is not None:
            ways.append(way)
    return ways


@pytest.mark.parametrize(
    ("q", "ways"),
    [("共同体", ["walk"]), ("稀有名", ["walk", "index"]), ("中间值", ["walk", "index"])],
    ids=["common", "rare", "middling"],
)
def test_substring_pages_follow_positions(
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
    q: str,
    ways: list[str],
) -> None:
    # Small numbers for a small table, no sample: walk 8 names; read through the index if
    # fewer than 2 * 4 = 8 names match (a page is 3 hits, read as 4); else (in the same
    # statement) probe the blocks.
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    monkeypatch.setattr(search, "_substring_plan", lambda _: search._Plan(12, BUDGET, 0.0))
    _add(session, NAMES)
    expected = [name for name in NAMES if q in name]
    statements.clear()
    first, _ = search.search(session, q, limit=LIMIT, cursor=None, include_persons=False)
    assert [hit.matched_name for hit in first] == expected[:LIMIT]
    if session.get_bind().dialect.name == "postgresql":
        assert _ways(statements) == ways
    pages = _pages(session, q)
    assert [name for page in pages for name in page] == expected
    assert all(len(page) == LIMIT for page in pages[:-1])
    # The planner switches are back on for the rest of the transaction.
    if session.get_bind().dialect.name == "postgresql":
        settings = session.execute(
            text(
                "SELECT current_setting('enable_seqscan'), "
                "current_setting('enable_indexscan'), current_setting('enable_bitmapscan')"
            )
        ).one()
        assert tuple(settings) == ("on", "on", "on")


def test_blocks_probed_in_vain_end_the_page_short(
    session: Session, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> None:
    # Fifteen matches (more than the index cap of 8) all in block 10, thirty other names
    # three to a block in blocks 0-9: a request walks 8 names, then probes 4 blocks, answers
    # what it found with a cursor from there, and the pages together still hold every match,
    # in order.
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    monkeypatch.setattr(search, "MAX_BLOCKS", 4)
    monkeypatch.setattr(search, "_substring_plan", lambda _: search._Plan(12, BUDGET, 0.0))
    clustered = [f"聚集地新区{i}有限公司" for i in range(15)]
    others = [f"其他{i}号公司" for i in range(30)]
    _add(session, others + clustered, [i // 3 for i in range(30)] + [10] * 15)
    statements.clear()
    first, cursor = search.search(
        session, "聚集地", limit=LIMIT, cursor=None, include_persons=False
    )
    ways = _ways(statements)
    pages = _pages(session, "聚集地")
    assert [name for page in pages for name in page] == clustered
    if session.get_bind().dialect.name == "postgresql":  # SQLite's index fills every page
        assert (first, cursor is not None) == ([], True)
        assert ways == ["walk", "index"]  # the index's statement probed the blocks
        # Blocks 0-3 and 4-7 hold no match, 8-11 the first page.
        assert [len(page) for page in pages[:3]] == [0, 0, LIMIT]
        assert len(pages) == 2 + 5


def test_the_blocks_page_through_matches_in_many_blocks(
    session: Session, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> None:
    # A middling substring (per the sample) spread over blocks 0, 1, 3 and 5, among names
    # without it: the blocks go first, and a page may take its hits from several blocks.
    names = [f"分块名{i}有限公司" if i % 3 == 0 else f"其他{i}号公司" for i in range(24)]
    blocks = [i // 6 if i // 6 < 2 else 2 * (i // 6) - 1 for i in range(24)]
    plan = search._Plan(1_000_000, 10_247, 0.0, _sampled(["分块名"] * 3 + ["其他"] * 997, 1))
    monkeypatch.setattr(search, "_substring_plan", lambda _: plan)
    assert _way(plan, "分块名", LIMIT + 1) == "blocks"
    _add(session, names, blocks)
    statements.clear()
    pages = _pages(session, "分块名")
    assert [name for page in pages for name in page] == [n for n in names if "分块名" in n]
    assert all(len(page) == LIMIT for page in pages[:-1])
    if session.get_bind().dialect.name == "postgresql":
        assert set(_ways(statements)) == {"blocks"}


def test_blocks_that_come_up_short_stand_when_the_index_finds_too_many(
    session: Session, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> None:
    # The sample says the blocks, but the matches all lie in block 40, past the 16 blocks a
    # request probes here; the index then finds more than its cap (13 at this size), so the
    # page the blocks gave stands: none, with a cursor past block 15.
    monkeypatch.setattr(search, "MAX_BLOCKS", 16)
    plan = search._Plan(100_000, 3_240, 0.0, _sampled(["分块名"] * 3 + ["其他"] * 997, 1))
    monkeypatch.setattr(search, "_substring_plan", lambda _: plan)
    assert _way(plan, "分块名", LIMIT + 1) == "blocks"
    assert plan.cap(LIMIT + 1) == 13
    clustered = [f"分块名{i}有限公司" for i in range(15)]
    _add(session, ["其他1号公司", "其他2号公司", *clustered], [0, 1] + [40] * 15)
    statements.clear()
    first, cursor = search.search(
        session, "分块名", limit=LIMIT, cursor=None, include_persons=False
    )
    ways = _ways(statements)
    pages = _pages(session, "分块名")
    assert [name for page in pages for name in page] == clustered
    if session.get_bind().dialect.name == "postgresql":
        assert (first, cursor is not None) == ([], True)
        assert ways == ["blocks", "index"]
        # Blocks 0-15 and 16-31 hold no match; 32-47 hold them all, five pages of three.
        assert [len(page) for page in pages] == [0, 0, 3, 3, 3, 3, 3]


def _sampled(names: list[str], table_names: int) -> search._Sample:
    return search._Sample.of(names, table_names)


def _way(plan: search._Plan, q: str, limit: int = 22) -> str:
    patterns, found = plan.index_lookup(q)
    return plan.first_way(found, limit, patterns[0])


def test_the_sample_chooses_the_way_that_goes_first() -> None:
    # A page of 21 (read as 22) of a table of 1,000,000 names; 20,000 names sampled.
    names = ["稀有名甲公司"] + ["中间名公司"] * 40 + ["常见名有限公司"] * 3000
    names += [f"其他{i}" for i in range(20_000 - len(names))]
    plan = search._Plan(1_000_000, 10_247, 0.0, _sampled(names, 1_000_000))
    # Held by ~100 names: reading them all through the index costs least.
    assert _way(plan, "稀有名") == "index"
    assert plan.cap(22) == 336  # a page within 16 blocks on average past that many
    assert _way(plan, "无此名") == "index"
    # ~2,000 names: a walk of ~11,000 names, or 2,000 matches read, or 3 blocks probed.
    assert _way(plan, "中间名") == "blocks"
    # 15%: a page's walk is ~150 names.
    assert _way(plan, "常见名") == "walk"
    # The index reads at most a number of matches proportional to the table (past it, a page
    # is within a few blocks), and a block's probe costs the same at any size: the way of a
    # substring held by a given share of the names does not change with the table's size.
    for table_size, budget in ((100_000, 3_240), (1_000_000, 10_247), (10_000_000, 32_404)):
        for held, way in ((2, "index"), (10, "blocks")):
            share = ["稀有名甲公司"] * held + [f"其他{i}" for i in range(20_000 - held)]
            scaled = search._Plan(table_size, budget, 0.0, _sampled(share, table_size))
            assert _way(scaled, "稀有名") == way
    assert _way(search._Plan(12, BUDGET, 0.0), "无此名") == "walk"  # no sample
    assert _way(search._Plan(0, BUDGET, 0.0, _sampled(names, 0)), "无此名") == "walk"  # no size
    assert _way(search._Plan(12, BUDGET, 0.0, _sampled([], 0)), "无此名") == "walk"
    # No piece pg_trgm makes a trigram of: its index would be read whole, so never first.
    assert _way(plan, "·-·") == "walk"


def test_the_index_is_asked_for_the_uncommon_pieces_of_the_substring() -> None:
    # 100 sampled names: a piece in more than 10 of them is common.
    names = ["甲乙丙丁", "甲乙丙戊", "乙丙丁己", "乙丙丁庚", "乙丙丁辛"] + ["乙丙丁某"] * 20
    plan = search._Plan(100, BUDGET, 0.0, _sampled(names + ["有限公司"] * 60 + ["其他"] * 15, 100))
    assert plan.index_lookup("甲乙丙丁") == (["%甲乙丙%"], 1)  # 乙丙丁 is in 24
    assert plan.index_lookup("乙丙丁辛") == (["%丙丁辛%"], 1)
    assert plan.index_lookup("乙丙丁") == (["%乙丙丁%"], 24)  # all common: the rarest
    assert plan.index_lookup("有限公司") == (["%有限公%"], 60)
    assert plan.index_lookup("ab甲乙丙") == (["%ab甲%", "%b甲乙%", "%甲乙丙%"], 0)
    assert plan.index_lookup("无此名") == (["%无此名%"], 0)
    # Pieces with other characters are never asked for; without any, the whole substring.
    assert plan.index_lookup("丁·甲乙丙") == (["%甲乙丙%"], 0)
    assert plan.index_lookup("a%b_c") == (["%a\\%b\\_c%"], None)
    assert search._Plan(60, BUDGET, 0.0).index_lookup("甲乙丙丁") == (["%甲乙丙丁%"], None)


def test_without_chinese_trigrams_only_ascii_pieces_are_asked_of_the_index() -> None:
    # A database whose LC_CTYPE is "C": pg_trgm makes no trigram of Chinese characters, and
    # asking its index for one would read the whole index.
    names = ["甲乙丙丁", "ABC甲乙", "其他"] * 100
    plan = search._Plan(300, BUDGET, 0.0, _sampled(names, 300), chinese_trigrams=False)
    assert plan.index_lookup("甲乙丙丁") == (["%甲乙丙丁%"], None)
    assert _way(plan, "甲乙丙丁") == "walk"  # as without a sample
    assert plan.index_lookup("ABC甲乙") == (["%ABC%"], 100)


def test_the_plan_knows_whether_the_database_makes_chinese_trigrams(session: Session) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's substring search; SQLite's FTS5 trigrams are of any character")
    made = session.execute(text("SELECT cardinality(show_trgm('甲乙丙')) > 0")).scalar_one()
    search._plans.clear()
    assert search._substring_plan(session).chinese_trigrams is made


def test_a_sample_goes_stale_with_time_and_size() -> None:
    sample = _sampled(["名"], 1000)
    assert not sample.stale(1000)
    assert not sample.stale(1200)
    assert sample.stale(1300)
    assert sample.stale(700)
    old = search._Sample("名", {}, 1, 1000, time.monotonic() - search.SAMPLE_SECONDS - 1)
    assert old.stale(1000)


@pytest.mark.parametrize(
    ("q", "index_first"),
    [("稀有名", True), ("不存在的名", True), ("共同体", False)],
    ids=["rare", "absent", "common"],
)
def test_a_substring_rare_in_the_sample_is_read_through_the_index_first(
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
    q: str,
    index_first: bool,
) -> None:
    # The sample holds every name: "稀有名" is in 2 of 27 (at most (2 + 2) * 12 / 27 = 1.8
    # names of 12, read at 3 µs each, against a walk of 0.6 * 4 * 12 / 1.3 names at 0.6 µs),
    # "共同体" in 8 (4.4 names: 13 µs against 7 µs).
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    plan = search._Plan(12, BUDGET, 0.0, _sampled(NAMES, 12))
    monkeypatch.setattr(search, "_substring_plan", lambda _: plan)
    _add(session, NAMES)
    statements.clear()
    pages = _pages(session, q)
    assert [name for page in pages for name in page] == [name for name in NAMES if q in name]
    if session.get_bind().dialect.name == "postgresql":
        ways = _ways(statements)
        assert (ways[0] == "index") is index_first
        if index_first:  # the index held them all: no walk at all
            assert set(ways) == {"index"}


def test_the_index_reads_the_rarest_piece_and_keeps_the_names_with_the_whole_substring(
    session: Session, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> None:
    # 乙丙丁 is common in the sample: for 甲乙丙丁 the index reads the two names holding
    # 甲乙丙, and only the one holding 甲乙丙丁 is a hit.
    names = ["甲乙丙丁", "甲乙丙戊", "乙丙丁己", "乙丙丁庚", "乙丙丁辛"]
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    sampled = names + ["乙丙丁某"] * 150 + ["其他"] * 845
    plan = search._Plan(5, BUDGET, 0.0, _sampled(sampled, 5))
    assert plan.index_lookup("甲乙丙丁")[0] == ["%甲乙丙%"]
    monkeypatch.setattr(search, "_substring_plan", lambda _: plan)
    _add(session, names)
    statements.clear()
    assert _pages(session, "甲乙丙丁") == [["甲乙丙丁"]]
    assert _pages(session, "乙丙丁") == [["甲乙丙丁", "乙丙丁己", "乙丙丁庚"], ["乙丙丁辛"]]
    if session.get_bind().dialect.name == "postgresql":
        assert set(_ways(statements)) == {"index"}  # the index, first and only


def test_the_sample_is_of_names_that_are_not_persons(session: Session) -> None:
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's substring search; SQLite's index needs no sample")
    _add(session, ["样本企业甲有限公司", "样本企业乙有限公司"])
    person = Subject(id=new_id(), kind=SubjectKind.NATURAL_PERSON, name="样本个人")
    session.add(person)
    session.flush()
    session.add(
        SubjectName(
            id=new_id(),
            subject_id=person.id,
            name="样本个人",
            first_seen_on=_DAY,
            last_seen_on=_DAY,
        )
    )
    session.flush()
    names = session.execute(text("SELECT count(*) FROM subject_name")).scalar_one()
    drawn = search._sampled_names(session, names)
    assert len(drawn) == names - 1
    assert {"样本企业甲有限公司", "样本企业乙有限公司"} <= set(drawn)
    assert "样本个人" not in drawn
    sample = search._draw_sample(session, names)
    assert sample.of_names == names
    assert not sample.stale(names)


def test_a_sample_counts_the_names_holding_each_piece() -> None:
    sample = search._Sample.of(["甲乙丙甲乙丙", "甲乙丙丁", "乙丙丁", "戊己庚"], 40)
    assert sample.size == 4
    assert sample.holders("甲乙丙") == 2  # a name holding a piece twice counts once
    assert sample.holders("乙丙丁") == 2
    assert sample.holders("丙甲乙") == 1  # in one name: left out, and taken as one
    assert sample.holders("戊己庚") == 1
    assert sample.holders("无此名") == 1
    assert set(sample.holding) == {"甲乙丙", "乙丙丁"}
    assert sample.text.split("\0") == ["甲乙丙甲乙丙", "甲乙丙丁", "乙丙丁", "戊己庚"]
