"""The WAL checkpointer: rounds in the background at a lower priority, RESTART at the requests'."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from credit_hub import sqlite_checkpoint, sqlite_threads
from credit_hub.config import Settings
from credit_hub.db import make_engine
from tests.live import until

pytestmark = pytest.mark.skipif(
    not hasattr(os, "getpriority") or not Path("/proc/self/task").exists(),
    reason="per-thread priorities are Linux's",
)


def _priority(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def _named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def file_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
    yield engine
    engine.dispose()


def test_background_rounds_yield_to_requests_and_a_restart_does_not(
    file_engine: Engine,
) -> None:
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    if mine >= 19:
        pytest.skip("this process already runs at the lowest priority")
    lowered = min(mine + sqlite_threads.BACKGROUND_NICENESS, 19)
    with file_engine.connect():  # the engine's first connection starts its threads
        pass
    assert until(
        lambda: bool(_named("sqlite-checkpoint-restart")) and bool(_named("sqlite-search"))
    )
    rounds = [t for t in _named("sqlite-checkpoint") if t.name == "sqlite-checkpoint"]
    assert rounds
    assert until(lambda: {_priority(t) for t in rounds + _named("sqlite-search")} == {lowered})
    assert {_priority(t) for t in _named("sqlite-checkpoint-restart")} == {mine}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


class _RecordingQueue:
    def __init__(self, events: list[tuple[str, str]]) -> None:
        self.events = events

    def acquire(self) -> None:
        self.events.append(("acquire", threading.current_thread().name))

    def release(self) -> None:
        self.events.append(("release", threading.current_thread().name))


def test_a_long_log_is_restarted_on_the_restart_thread_in_a_writers_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "r.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (body TEXT)")
    writer.executemany("INSERT INTO t VALUES (?)", [("x" * 3000,)] * 50)
    events: list[tuple[str, str]] = []
    queue_for = sqlite_checkpoint.sqlite_writers.queue_for  # other tests' engines keep theirs
    monkeypatch.setattr(
        sqlite_checkpoint.sqlite_writers,
        "queue_for",
        lambda at, timeout: _RecordingQueue(events) if at == path else queue_for(at, timeout),
    )
    checkpointer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="restarter") as restarts:
            sqlite_checkpoint.checkpoint(checkpointer, path, restarts)
            assert events == []  # 50 pages: under MAX_WAL_PAGES, a PASSIVE round only
            monkeypatch.setattr(sqlite_checkpoint, "MAX_WAL_PAGES", 10)
            sqlite_checkpoint.checkpoint(checkpointer, path, restarts)
        assert [e for e, _ in events] == ["acquire", "release"]
        assert all(name.startswith("restarter") for _, name in events)
        writer.execute("INSERT INTO t VALUES ('after')")  # the log starts over
        assert checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] <= 3
    finally:
        checkpointer.close()
        writer.close()
