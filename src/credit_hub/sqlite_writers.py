"""The queue of SQLite writers: who holds the database's one write lock next.

SQLite lets one transaction write at a time, and a writer that finds the lock taken waits in
SQLite's busy handler, which polls with sleeps that grow from 1 to 100 ms. Under load (every
profile read appends to the audit chain) those sleeps, not the work, set the latency. So
writers queue here first: threads of one process on a lock, processes on an `flock` of a file
beside the database, which hands the lock over as soon as it is released. Connections that do
not take part (another tool on the same file) still meet SQLite's own lock and busy handler:
the queue is an optimization, never what keeps the database consistent.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


class WriterQueue:
    """One per database file and process."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._threads = threading.Lock()
        self._fd = os.open(path + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (no turn to write within timeout)")
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._threads.release()
                    raise sqlite3.OperationalError(
                        "database is locked (no turn to write within timeout)"
                    ) from None
                # Another process writes: short polls, no blocking call that could not time out.
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


def queue_for(database: str, timeout: float) -> WriterQueue:
    path = os.path.abspath(database)
    with _queues_lock:
        queue = _queues.get(path)
        if queue is None:
            queue = _queues[path] = WriterQueue(path, timeout)
        return queue


def connection_factory(queue: WriterQueue) -> type[sqlite3.Connection]:
    """A sqlite3 connection class whose write transactions take turns on `queue`."""

    class QueuedConnection(sqlite3.Connection):
        _holds = False

        def begin_write(self) -> None:
            """BEGIN IMMEDIATE once it is this connection's turn."""
            queue.acquire()
            self._holds = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._let_go()
                raise

        def _let_go(self) -> None:
            if self._holds:
                self._holds = False
                queue.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                if not self.in_transaction:
                    self._let_go()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self._let_go()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self._let_go()

    return QueuedConnection


def begin(dbapi_connection: Any, read_only: bool) -> bool:
    """Start the transaction on a queued connection; False when it is not one."""
    if read_only or not hasattr(dbapi_connection, "begin_write"):
        return False
    dbapi_connection.begin_write()
    return True
