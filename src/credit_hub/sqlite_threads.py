"""Background threads of SQLite databases: one per database file and process, for as long as an
engine on that file lives.

The WAL checkpointer (`sqlite_checkpoint`) and the name indexer (`sqlite_search`) each keep one
daemon thread per file. It starts on an engine's first connection, in the process that makes the
connection (so after any fork), and ends once no engine on the file is left: engines are held
weakly, and a later connection starts a new thread. A file is the file found at the path when
the thread starts: when another file takes its place (a database deleted and created again, as
tests do), the thread ends, and the new file gets a thread of its own. A thread still working
on the old file through its open connection would otherwise meet the new file's log and
shared-memory files under the same names.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine

FileId = tuple[int, int] | None  # (device, inode); None while there is no file
Key = tuple[int, str, FileId]  # (process id, absolute path of the database, its file)


def file_id(path: str) -> FileId:
    # A replaced file cannot reuse the old one's inode number while a thread's connection
    # still holds the old file open.
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class DatabaseThreads:
    """Runs `body(path, wanted)` in one thread per database file and process; the body loops
    while `wanted()` is true."""

    def __init__(self, name: str, body: Callable[[str, Callable[[], bool]], None]) -> None:
        self.name = name
        self._body = body
        self._lock = threading.Lock()
        self._engines: dict[Key, weakref.WeakSet[Engine]] = {}
        self._threads: dict[Key, threading.Thread] = {}

    def ensure(self, path: str, engine: Engine) -> None:
        """The thread for `path` runs (started if needed) at least as long as `engine` lives."""
        key = (os.getpid(), path, file_id(path))
        with self._lock:
            self._engines.setdefault(key, weakref.WeakSet()).add(engine)
            thread = self._threads.get(key)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._body,
                args=(path, partial(self._wanted, key)),
                name=self.name,
                daemon=True,
            )
            self._threads[key] = thread
            thread.start()

    def _wanted(self, key: Key) -> bool:
        with self._lock:
            if self._engines.get(key) and file_id(key[1]) == key[2]:
                return True
            self._threads.pop(key, None)  # a later connection starts a new thread
            self._engines.pop(key, None)
            return False


BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Run the calling thread at a lower CPU priority than the requests (`BACKGROUND_NICENESS`
    more): on a busy machine the writer that holds the database's one write lock goes first,
    and background work takes the time the requests leave. Linux schedules threads one by one,
    and any thread may lower its own priority, but raising it back needs a privilege; a thread
    started later takes its creator's priority. Elsewhere, or if refused, nothing changes."""
    try:
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + BACKGROUND_NICENESS, 19))
    except (AttributeError, OSError):
        pass
