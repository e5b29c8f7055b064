"""The SQLite name index in a file of its own: built past a watermark, searched with its tail."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from credit_hub import migrate, sqlite_search
from credit_hub.config import Settings
from credit_hub.db import make_engine, new_id
from credit_hub.models import Base
from credit_hub.subjects import search
from credit_hub.subjects.models import Subject, SubjectKind, SubjectName

_DAY = date(2026, 4, 2)


def _database(path: Path) -> Settings:
    settings = Settings(database_url=f"sqlite:///{path}")
    migrate.upgrade(settings)
    return settings


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Engine]]:
    """A migrated file database whose background indexer never runs: the test indexes."""
    monkeypatch.setattr(sqlite_search, "INTERVAL_SECONDS", 3600.0)
    path = tmp_path / "s.db"
    engine = make_engine(_database(path))
    yield str(path), engine
    engine.dispose()


def _add(engine: Engine, *names: str) -> list[str]:
    """Commit one organization per name (with its name history row); their names."""
    with Session(engine) as session, session.begin():
        for name in names:
            subject = Subject(id=new_id(), kind=SubjectKind.ORGANIZATION, name=name)
            session.add(subject)
            session.flush()
            session.add(
                SubjectName(subject_id=subject.id, name=name, first_seen_on=_DAY, last_seen_on=_DAY)
            )
    return list(names)


def _matched(engine: Engine, q: str, *, limit: int = 50) -> list[str]:
    """Every matched name, page by page (`limit` per page), in the order search gives them."""
    found: list[str] = []
    cursor = None
    with Session(engine) as session:
        while True:
            hits, cursor = search.search(
                session, q, limit=limit, cursor=cursor, include_persons=False
            )
            found.extend(hit.matched_name for hit in hits)
            if cursor is None:
                return found


def _index(path: str) -> int:
    connection = sqlite_search.open_indexer(path)
    try:
        return sqlite_search.index_pending(connection)
    finally:
        connection.close()


def _through(engine: Engine) -> int | None:
    with engine.connect() as connection:
        dbapi = connection.connection.driver_connection
        return sqlite_search.indexed_through(dbapi)  # type: ignore[arg-type]


def _max_rowid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT max(rowid) FROM subject_name")) or 0)


def _fts_count(path: str, q: str) -> int:
    connection = sqlite3.connect(sqlite_search.index_path(path))
    try:
        query = "SELECT count(*) FROM name_fts WHERE name_fts MATCH ?"
        return int(connection.execute(query, (f'"{q}"',)).fetchone()[0])
    finally:
        connection.close()


def test_names_are_found_before_and_after_they_are_indexed(database: tuple[str, Engine]) -> None:
    path, engine = database
    first = _add(engine, *(f"福州示例{n}号贸易有限公司" for n in range(5)))
    assert _through(engine) == 0
    assert _matched(engine, "贸易有限") == first  # the tail only: nothing indexed yet

    assert _index(path) == 5
    assert _through(engine) == _max_rowid(engine)
    assert _fts_count(path, "贸易有限") == 5  # the index, not only the tail, holds them
    later = _add(engine, "福州后来贸易有限公司")
    assert _matched(engine, "贸易有限") == first + later  # index, then tail past the watermark
    # Pages of one cross the watermark without losing or repeating a name.
    assert _matched(engine, "贸易有限", limit=1) == first + later
    assert _matched(engine, "示例3号") == ["福州示例3号贸易有限公司"]

    assert _index(path) == 1
    assert _index(path) == 0  # nothing new: the watermark stays
    assert _matched(engine, "贸易有限") == first + later


def test_like_wildcards_in_the_query_match_themselves(database: tuple[str, Engine]) -> None:
    _, engine = database
    _add(engine, "ab_cd商行", "abxcd商行", "50%股份公司", "50元股份公司")
    assert _matched(engine, "ab_cd") == ["ab_cd商行"]
    assert _matched(engine, "50%股") == ["50%股份公司"]


def test_an_index_of_another_database_is_ignored_then_rebuilt(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    path, engine = database
    _add(engine, "旧库甲贸易公司", "旧库乙贸易公司")
    assert _index(path) == 2
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):  # the database replaced; its index file left behind
        Path(path + suffix).unlink(missing_ok=True)
    engine = make_engine(_database(Path(path)))
    try:
        _add(engine, "新库丙贸易公司", "新库丁贸易公司", "新库戊贸易公司")
        assert _through(engine) == 0  # the watermark's row holds another id now
        assert _matched(engine, "贸易公司") == [
            "新库丙贸易公司",
            "新库丁贸易公司",
            "新库戊贸易公司",
        ]

        assert _index(path) == 3
        assert _through(engine) == _max_rowid(engine)
        assert _fts_count(path, "旧库") == 0
        assert _matched(engine, "贸易公司") == [
            "新库丙贸易公司",
            "新库丁贸易公司",
            "新库戊贸易公司",
        ]
    finally:
        engine.dispose()


def test_one_indexer_at_a_time(database: tuple[str, Engine]) -> None:
    path, engine = database
    _add(engine, "并发甲贸易公司")
    holder = sqlite3.connect(sqlite_search.index_path(path), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process is indexing
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _index(path)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert _index(path) == 1
    assert _fts_count(path, "并发甲") == 1


def test_writers_do_not_lock_the_index_file(database: tuple[str, Engine]) -> None:
    path, engine = database
    _add(engine, "写锁甲贸易公司")
    with engine.begin() as connection:  # BEGIN IMMEDIATE: the main database's write lock
        connection.execute(text("DELETE FROM audit_event WHERE 0"))
        assert _index(path) == 1  # the attached index file was not locked with it


def test_the_background_thread_indexes_committed_names(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    engine = make_engine(_database(path))
    try:
        names = _add(engine, "后台甲贸易公司", "后台乙贸易公司")
        deadline = time.monotonic() + 30  # a round every 0.1 s; CI machines can be busy
        while _through(engine) != _max_rowid(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        indexers = [t.name for t in threading.enumerate() if t.name == "sqlite-search"]
        assert _through(engine) == _max_rowid(engine), f"indexer threads alive: {indexers}"
        assert _fts_count(str(path), "贸易公司") == 2
        assert _matched(engine, "贸易公司") == names
    finally:
        engine.dispose()


def test_an_in_memory_database_searches_without_an_index() -> None:
    engine = make_engine(Settings(database_url="sqlite:///:memory:"), poolclass=StaticPool)
    try:
        Base.metadata.create_all(engine)
        names = _add(engine, "内存甲贸易公司", "内存乙贸易公司")
        assert _through(engine) is None  # no index file attached: LIKE over every name
        assert _matched(engine, "贸易公司") == names
    finally:
        engine.dispose()
