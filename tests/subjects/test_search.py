"""Name search: pages in position order, whichever way the database finds the names."""

from __future__ import annotations

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
