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


def _add(session: Session, names: list[str]) -> None:
    for position, name in enumerate(names):
        subject = Subject(id=new_id(), kind=SubjectKind.ORGANIZATION, name=name)
        session.add(subject)
        session.flush()
        session.add(
            SubjectName(
                id=uuid.UUID(int=position + 1),  # the first positions of all
                subject_id=subject.id,
                name=name,
                first_seen_on=_DAY,
                last_seen_on=_DAY,
            )
        )
    session.flush()


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


def _steps(statements: list[str]) -> int:
    """How far the PostgreSQL search of one page went (see search.py): 1, 2 or 3."""
    walks = [i for i, s in enumerate(statements) if "ORDER BY w.id" in s]
    indexed = [i for i, s in enumerate(statements) if "candidate AS MATERIALIZED" in s]
    if not indexed:
        return 1
    return 3 if any(i > indexed[0] for i in walks) else 2


@pytest.mark.parametrize(
    ("q", "step"), [("共同体", 1), ("稀有名", 2), ("中间值", 3)], ids=["common", "rare", "middling"]
)
def test_substring_pages_follow_positions(
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
    q: str,
    step: int,
) -> None:
    # Small numbers for a small table: walk 8 names; read through the index if fewer than
    # 2 * 4 * 12 / 8 = 12 names match (a page is 3 hits, read as 4).
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    monkeypatch.setattr(search, "_substring_plan", lambda _: search._Plan(12, BUDGET, 0.0))
    _add(session, NAMES)
    expected = [name for name in NAMES if q in name]
    statements.clear()
    first, _ = search.search(session, q, limit=LIMIT, cursor=None, include_persons=False)
    assert [hit.matched_name for hit in first] == expected[:LIMIT]
    if session.get_bind().dialect.name == "postgresql":
        assert _steps(statements) == step
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


def test_a_walk_that_finds_its_matches_far_off_ends_the_page_short(
    session: Session, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> None:
    # Fifteen matches (more than the index cap of 12) all after thirty other names: step 3
    # walks 16 names a request (2 budgets), answers what it found with a cursor from there,
    # and the pages together still hold every match, in order.
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    monkeypatch.setattr(search, "STEP3_BUDGETS", 2)
    monkeypatch.setattr(search, "_substring_plan", lambda _: search._Plan(12, BUDGET, 0.0))
    clustered = [f"聚集地新区{i}有限公司" for i in range(15)]
    _add(session, [f"其他{i}号公司" for i in range(30)] + clustered)
    statements.clear()
    first, cursor = search.search(
        session, "聚集地", limit=LIMIT, cursor=None, include_persons=False
    )
    pages = _pages(session, "聚集地")
    assert [name for page in pages for name in page] == clustered
    if session.get_bind().dialect.name == "postgresql":  # SQLite's index fills every page
        assert (first, cursor is not None) == ([], True)
        assert _steps(statements) == 3
        # Each request walks 16 names: names 1-16 hold no match, 17-32 the first two.
        assert [len(page) for page in pages[:2]] == [0, 2]


def _sampled(names: list[str], table_names: int) -> search._Sample:
    return search._Sample.of(names, table_names)


def _first(plan: search._Plan, q: str, limit: int = 22) -> bool:
    return plan.index_first(plan.index_lookup(q)[1], limit)


def test_the_sample_estimates_which_step_goes_first() -> None:
    # A page of 21 (read as 22) of a table of 1,000,000 names goes to the index first when
    # even (found + 2) / sampled of the table is few enough that reading them all costs less
    # than a page's walk: most^2 <= 0.2 * 22 * 1,000,000, that is most <= 2,097.
    names = ["稀有名甲公司"] + ["常见名有限公司"] * 300 + ["其他"] * 1699
    plan = search._Plan(1_000_000, 10_247, 0.0, _sampled(names, 1_000_000))
    assert _first(plan, "无此名")  # (0 + 2) / 2,000 of 1M: 1,000 at most
    assert _first(plan, "稀有名")  # 1,500 at most
    assert not _first(plan, "常见名")  # 151,000
    # 200 names cannot vouch for a substring they lack: one name in 100 may hold it.
    small = search._Plan(1_000_000, 10_247, 0.0, _sampled(names[:200], 1_000_000))
    assert not _first(small, "无此名")
    # The same share of a ten times larger table: the walk of a page costs the same, reading
    # the matches ten times more.
    share = ["稀有名甲公司"] * 3 + ["其他"] * 1997  # 3 in 2,000: 2,500 of 1M at most
    assert _first(search._Plan(100_000, 3_240, 0.0, _sampled(share, 100_000)), "稀有名")
    assert not _first(search._Plan(1_000_000, 10_247, 0.0, _sampled(share, 1_000_000)), "稀有名")
    assert not _first(search._Plan(12, BUDGET, 0.0), "无此名")  # no sample: walk first
    assert not _first(search._Plan(0, BUDGET, 0.0, _sampled(names, 0)), "无此名")  # no size
    assert not _first(search._Plan(12, BUDGET, 0.0, _sampled([], 0)), "无此名")
    # No piece pg_trgm makes a trigram of: its index would be read whole, so never first.
    assert not _first(plan, "·-·")


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
    assert not _first(plan, "甲乙丙丁")  # walked first, as without a sample
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
    # names of 12: 1.8^2 <= 0.2 * 4 * 12), "共同体" in 8 (4.4^2 > 9.6).
    monkeypatch.setattr(search, "MIN_BUDGET", 2)
    plan = search._Plan(12, BUDGET, 0.0, _sampled(NAMES, 12))
    monkeypatch.setattr(search, "_substring_plan", lambda _: plan)
    _add(session, NAMES)
    statements.clear()
    pages = _pages(session, q)
    assert [name for page in pages for name in page] == [name for name in NAMES if q in name]
    if session.get_bind().dialect.name == "postgresql":
        searched = [
            s for s in statements if "ORDER BY w.id" in s or "candidate AS MATERIALIZED" in s
        ]
        assert ("candidate AS MATERIALIZED" in searched[0]) is index_first
        if index_first:  # the index held them all: no walk at all
            assert all("ORDER BY w.id" not in s for s in searched)


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
        assert all("ORDER BY w.id" not in s for s in statements)  # the index, first and only


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
