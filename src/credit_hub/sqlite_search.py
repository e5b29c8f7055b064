"""The trigram name index of a SQLite database: in a file of its own, kept off the write lock.

Kept by triggers inside the database, the FTS5 index of `subject_name` cost a fifth of every
push's time under SQLite's one write lock. It now lives in `<database>-search`: a daemon thread
per process indexes the `subject_name` rows past a watermark (the last indexed rowid and that
row's id) in transactions on that file only, so it never holds the main database's write lock;
when several processes run one, the index file's own lock lets one index at a time. Searches
read the index for the rows up to the watermark and scan the rows past it (the few committed
since the last round, and the searcher's own uncommitted ones) with LIKE: a name is found as
soon as the push that brought it commits, indexed or not.

`subject_name` rows are only ever inserted (a known name only widens its dates), and with one
writer at a time their rowids only grow, so the watermark says what is indexed. A watermark
whose row is gone or holds another id (the database was rebuilt or replaced) makes searches
ignore the index and the thread rebuild it. The app's connections attach the file read-only:
`BEGIN IMMEDIATE` then takes a read snapshot of it, never a lock writers would queue for.
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from urllib.request import pathname2url

import structlog
from sqlalchemy import Engine, event

from credit_hub.sqlite_threads import DatabaseThreads, lower_priority

SCHEMA = "names"  # what the index file is attached as
INTERVAL_SECONDS = 0.1
ROWS_PER_ROUND = 20_000  # a first build over a large store goes in rounds of this many names

log = structlog.get_logger()

_SETUP = (
    "PRAGMA journal_mode=WAL",
    # Contentless: the names themselves stay in subject_name; a hit's rowid is its row there.
    "CREATE VIRTUAL TABLE IF NOT EXISTS name_fts USING fts5(name, content='', tokenize='trigram')",
    "CREATE TABLE IF NOT EXISTS name_index (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "through INTEGER NOT NULL, through_id TEXT)",
    "INSERT OR IGNORE INTO name_index (id, through, through_id) VALUES (1, 0, NULL)",
)


def index_path(database: str) -> str:
    return os.path.abspath(database) + "-search"


def _uri(path: str, mode: str) -> str:
    return f"file:{pathname2url(path)}?mode={mode}"


def prepare(database: str) -> None:
    """Create the index file (empty, watermark 0) if it is not there yet."""
    connection = sqlite3.connect(index_path(database), isolation_level=None, timeout=30)
    try:
        for statement in _SETUP:
            connection.execute(statement)
    finally:
        connection.close()


def attach(engine: Engine, database: str) -> None:
    """Attach the index file read-only to `engine`'s connections (which must accept URIs) and
    keep it up to date in the background while the engine lives."""
    path = os.path.abspath(database)
    prepare(path)
    engine_ref = weakref.ref(engine)

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        if not os.path.exists(index_path(path)):  # removed under a live engine (tests)
            prepare(path)
        dbapi_connection.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (_uri(index_path(path), "ro"),))
        live = engine_ref()
        if live is not None:
            _threads.ensure(path, live)

    event.listen(engine, "connect", on_connect)


def indexed_through(connection: sqlite3.Connection) -> int | None:
    """The last rowid of subject_name the index covers (0: none), or None when no index file is
    attached (an in-memory database): then every name is searched with LIKE."""
    attached = connection.execute(
        "SELECT 1 FROM pragma_database_list WHERE name = ?", (SCHEMA,)
    ).fetchone()
    if attached is None:
        return None
    row = connection.execute(
        f"SELECT through, through_id FROM {SCHEMA}.name_index WHERE id = 1"
    ).fetchone()
    if row is None or not row[0]:
        return 0
    through, through_id = row
    return through if _row_id(connection, through) == through_id else 0


def _row_id(connection: sqlite3.Connection, rowid: int) -> str | None:
    row = connection.execute(
        "SELECT id FROM main.subject_name WHERE rowid = ?", (rowid,)
    ).fetchone()
    return None if row is None else str(row[0])


def index_pending(connection: sqlite3.Connection, *, limit: int = ROWS_PER_ROUND) -> int:
    """Index up to `limit` subject_name rows past the watermark, in one transaction on the index
    file; the number indexed. `connection` (autocommit) is on the main database with the index
    file attached read-write as SCHEMA. Raises sqlite3.OperationalError when another process
    is indexing (its lock is taken without waiting)."""
    connection.execute("BEGIN")  # deferred: the main database is only read
    try:
        # The index file's write lock before anything is read: the watermark cannot move.
        connection.execute(f"UPDATE {SCHEMA}.name_index SET through = through WHERE id = 1")
        through, through_id = connection.execute(
            f"SELECT through, through_id FROM {SCHEMA}.name_index WHERE id = 1"
        ).fetchone()
        rebuilt = bool(through) and _row_id(connection, through) != through_id
        if rebuilt:  # another database than the one indexed: start over
            log.info("sqlite_name_index_rebuilt")
            connection.execute(f"INSERT INTO {SCHEMA}.name_fts (name_fts) VALUES ('delete-all')")
            through = 0
        (last,) = connection.execute(
            "SELECT max(rowid) FROM (SELECT rowid FROM main.subject_name WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?)",
            (through, limit),
        ).fetchone()
        if last is None and not rebuilt:
            connection.execute("ROLLBACK")
            return 0
        indexed = 0
        if last is not None:
            indexed = connection.execute(
                f"INSERT INTO {SCHEMA}.name_fts (rowid, name) SELECT rowid, name "
                "FROM main.subject_name WHERE rowid > ? AND rowid <= ?",
                (through, last),
            ).rowcount
        connection.execute(
            f"UPDATE {SCHEMA}.name_index SET through = ?, through_id = ? WHERE id = 1",
            (last or 0, None if last is None else _row_id(connection, last)),
        )
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return indexed


def open_indexer(database: str) -> sqlite3.Connection:
    """A connection for index_pending(): the main database (never created here) with the
    index file attached read-write."""
    path = os.path.abspath(database)
    connection = sqlite3.connect(_uri(path, "rw"), uri=True, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout=0")  # busy: someone else indexes this round
        connection.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (index_path(path),))
    except BaseException:
        connection.close()
        raise
    return connection


def _run(path: str, wanted: Callable[[], bool]) -> None:
    connection: sqlite3.Connection | None = None
    # Indexing holds no lock a request waits for (searches scan what is not indexed yet).
    lower_priority()
    try:
        while True:
            time.sleep(INTERVAL_SECONDS)
            if not wanted():  # also when the file is gone or another one took its place
                break
            try:
                # Opened in the loop: a first attempt can fail (the file is being created or
                # migrated), and a thread that gave up would leave the index unbuilt for good.
                if connection is None:
                    connection = open_indexer(path)
                while index_pending(connection) == ROWS_PER_ROUND:
                    pass  # a backlog (first build): no pause between rounds
            except sqlite3.Error as exc:  # busy, or the schema is not there yet
                log.debug("sqlite_name_index_skipped", error=str(exc))
    finally:
        if connection is not None:
            connection.close()


_threads = DatabaseThreads("sqlite-search", _run)
