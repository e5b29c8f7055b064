"""WAL checkpoints off the commit path: one background thread per SQLite database and process.

In WAL mode SQLite copies the log back into the database file (a checkpoint, with an fsync)
on the COMMIT that takes the log past `wal_autocheckpoint` pages. A 1,000-record batch writes
several MB, so pushes paid 10-25 ms of checkpoint per batch while holding the write lock. Here
a daemon thread on its own connection runs PASSIVE checkpoints (they block neither readers nor
writers) several times a second; a writer then starts the log over from its beginning. When
busy readers keep the log from starting over and it grows past `MAX_WAL_PAGES`, the thread
runs a RESTART checkpoint, which waits for the current writer and makes the next one start
over. The connections keep a higher auto-checkpoint as a backstop: the log stays bounded even
when the thread falls behind or is not running. The rounds run at a lower CPU priority than the
requests; a RESTART, which holds the writers' queue, does not (see _run).
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from urllib.request import pathname2url

import structlog
from sqlalchemy import Engine, event

from credit_hub import sqlite_writers
from credit_hub.sqlite_threads import DatabaseThreads, lower_priority

# A round writes each page changed since the last round once: the index pages every batch
# touches are written once per round, not once per batch. bench/ingest.py in paired runs:
# pushes 4-6% faster than with rounds every 0.1 s. At 0.5 s as fast, but a round took up to
# 100 ms, the log passed 32 MiB (RESTARTs took writers' turns) and more batches passed 250 ms.
INTERVAL_SECONDS = 0.25
AUTOCHECKPOINT_PAGES = 65536  # the connections' backstop: 256 MiB of log at 4 KiB pages
MAX_WAL_PAGES = 16384  # 64 MiB: past this, RESTART
RESTART_WAIT_SECONDS = 30

log = structlog.get_logger()


def attach(engine: Engine, database: str) -> None:
    """Checkpoint `database` in the background while `engine` (or another on it) lives."""
    path = os.path.abspath(database)
    engine_ref = weakref.ref(engine)

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        live = engine_ref()
        if live is not None:
            _threads.ensure(path, live)

    event.listen(engine, "connect", on_connect)


def _run(path: str, wanted: Callable[[], bool]) -> None:
    try:  # mode=rw: never create a database that was removed (a test's temporary one)
        uri = f"file:{pathname2url(path)}?mode=rw"
        # Used by this thread and its restart thread in turn, never at once.
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return
    # The rounds run at a lower priority than the requests (sqlite_threads.lower_priority); a
    # RESTART does not, as it holds the writers' queue: writers waiting for it must not wait
    # for a thread the scheduler puts last. Its thread is started before this one lowers its
    # own priority, which a new thread would take on.
    restarts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint-restart")
    try:
        restarts.submit(int).result()
        lower_priority()
        connection.execute("PRAGMA busy_timeout=100")  # for readers, when it holds the queue
        while True:
            time.sleep(INTERVAL_SECONDS)
            if not wanted():  # also when the file is gone or another one took its place
                break
            checkpoint(connection, path, restarts)
    finally:
        restarts.shutdown()
        connection.close()


def checkpoint(connection: sqlite3.Connection, path: str, restarts: Executor) -> None:
    """One round: PASSIVE, then RESTART (on `restarts`) if the log has grown long anyway."""
    try:
        row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if row is None or row[1] <= MAX_WAL_PAGES:
            return
        restarts.submit(_restart, connection, path).result()
    # Busy or locked: the next round tries again. RuntimeError: the interpreter is exiting and
    # takes no new work for the restart thread.
    except (sqlite3.Error, RuntimeError) as exc:
        log.debug("sqlite_checkpoint_skipped", error=str(exc))


def _restart(connection: sqlite3.Connection, path: str) -> None:
    # RESTART needs the write lock: take a turn in the writers' queue rather than poll for a
    # gap between back-to-back writers. Readers hold it up briefly at most.
    queue = sqlite_writers.queue_for(path, timeout=RESTART_WAIT_SECONDS)
    queue.acquire()
    try:
        connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    finally:
        queue.release()


_threads = DatabaseThreads("sqlite-checkpoint", _run)
