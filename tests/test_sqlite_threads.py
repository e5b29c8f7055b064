"""Background threads per database file: one per file and process, gone with the last engine."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine

from credit_hub.sqlite_threads import DatabaseThreads
from tests.live import until


def test_one_thread_per_file_while_an_engine_lives(tmp_path: Path) -> None:
    started: list[str] = []
    stopped = threading.Event()

    def body(path: str, wanted: Callable[[], bool]) -> None:
        started.append(path)
        while wanted():
            time.sleep(0.01)
        stopped.set()

    threads = DatabaseThreads("test-db-thread", body)
    path = str(tmp_path / "one.db")
    first = create_engine(f"sqlite:///{path}")
    second = create_engine(f"sqlite:///{path}")
    threads.ensure(path, first)
    threads.ensure(path, second)
    threads.ensure(path, first)
    assert until(lambda: started == [path])
    assert [t.name for t in threading.enumerate()].count("test-db-thread") == 1

    del first
    gc.collect()
    time.sleep(0.05)
    assert not stopped.is_set()  # the second engine still lives

    del second
    gc.collect()
    assert until(stopped.is_set)

    third = create_engine(f"sqlite:///{path}")
    threads.ensure(path, third)  # a later engine starts a new thread
    assert until(lambda: started == [path, path])
    third.dispose()


def test_files_get_threads_of_their_own(tmp_path: Path) -> None:
    seen: set[str] = set()

    def body(path: str, wanted: Callable[[], bool]) -> None:
        seen.add(path)
        while wanted():
            time.sleep(0.01)

    threads = DatabaseThreads("test-db-files", body)
    engines = [create_engine(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db")]
    for engine, name in zip(engines, ("a.db", "b.db"), strict=True):
        threads.ensure(str(tmp_path / name), engine)
    assert until(lambda: seen == {str(tmp_path / "a.db"), str(tmp_path / "b.db")})


def test_a_file_replaced_under_its_path_ends_the_thread_and_gets_its_own(tmp_path: Path) -> None:
    """A database deleted and created again while an engine on it lives: the thread of the
    old file ends (its connection must not meet the new file's log), the new one gets its own."""
    started: list[int] = []
    ended: list[int] = []

    def body(path: str, wanted: Callable[[], bool]) -> None:
        started.append(Path(path).stat().st_ino)
        while wanted():
            time.sleep(0.01)
        ended.append(started[len(ended)])

    threads = DatabaseThreads("test-db-replaced", body)
    database = tmp_path / "replaced.db"
    path = str(database)
    database.write_bytes(b"old")
    engine = create_engine(f"sqlite:///{path}")
    threads.ensure(path, engine)
    assert until(lambda: len(started) == 1)
    old = started[0]

    with database.open("rb"):  # open, as the thread's connection holds it: no inode reuse
        database.unlink()
        database.write_bytes(b"new")
        assert until(lambda: ended == [old])  # the engine still lives; the file changed
        threads.ensure(path, engine)  # its next connection, to the new file
        assert until(lambda: len(started) == 2)
        assert started[1] == database.stat().st_ino != old
    engine.dispose()
