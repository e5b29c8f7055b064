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
    """One per database file and process. A thread that finds another process writing waits
    for the `flock` in a helper thread of the queue's own (a blocking call, handed over by the
    kernel the moment the lock is released), itself with a timeout: no polling."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._start()

    def _start(self) -> None:
        self._threads = threading.Lock()
        # A descriptor of its own: flock() locks belong to the open file description.
        self._fd = os.open(self.path + "-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._state = threading.Lock()  # guards the two fields below
        self._request: threading.Event | None = None  # set when the lock is granted
        self._wanted = threading.Event()  # set while the helper is in (or going to) its flock
        self._helper: threading.Thread | None = None

    def _after_fork(self) -> None:
        """In a forked child: the parent's descriptor would share the parent's lock, and its
        helper thread and locks did not come along. A queue of the child's own."""
        inherited = self._fd
        self._start()
        os.close(inherited)  # closing a copy leaves the parent's lock alone

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked (no turn to write within timeout)")
        if not self._lock_file(deadline):
            self._threads.release()
            raise sqlite3.OperationalError("database is locked (no turn to write within timeout)")

    def try_acquire(self) -> bool:
        """The turn to write if it is free now (no thread of this process and no other
        process holds or awaits it), else False at once: for the event loop, which must not
        wait."""
        if not self._threads.acquire(blocking=False):
            return False
        with self._state:
            if self._lock_file_now():
                return True
        self._threads.release()
        return False

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _lock_file(self, deadline: float) -> bool:
        """The file lock, for the thread holding `_threads`: at once if no other process holds
        it, else from the helper thread, or False at the deadline."""
        with self._state:
            if self._lock_file_now():
                return True
            request = self._request = threading.Event()
            self._wanted.set()
            if self._helper is None:
                self._helper = threading.Thread(
                    target=self._wait_for_file, name="sqlite-writer-lock", daemon=True
                )
                self._helper.start()
        if request.wait(max(0.0, deadline - time.monotonic())):
            return True
        with self._state:
            if request.is_set():  # granted just as the wait ran out
                return True
            # Abandoned: when the helper gets the lock it hands it to a later request, if any
            # came, or lets it go.
            self._request = None
            return False

    def _lock_file_now(self) -> bool:
        """The file lock if no other process holds it, without waiting (holding `_state`).
        Never while the helper waits in flock: a lock taken here on the same descriptor would
        let the helper's call succeed too, and its unlock would then drop ours."""
        if self._wanted.is_set():
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _wait_for_file(self) -> None:
        while True:
            self._wanted.wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._state:
                self._wanted.clear()
                request, self._request = self._request, None
                if request is None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                else:
                    request.set()


def _forget_parent_queues() -> None:
    global _queues_lock
    _queues_lock = threading.Lock()
    for queue in _queues.values():
        queue._after_fork()


os.register_at_fork(after_in_child=_forget_parent_queues)


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

        def try_begin_write(self) -> bool:
            """BEGIN IMMEDIATE if it is nobody else's turn and SQLite's lock is free, else
            False without waiting (this connection's `busy_timeout` must be 0 for the latter:
            a writer outside the queue may hold SQLite's lock)."""
            if not queue.try_acquire():
                return False
            self._holds = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                self._let_go()
                if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    return False
                raise
            except BaseException:
                self._let_go()
                raise
            return True

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
