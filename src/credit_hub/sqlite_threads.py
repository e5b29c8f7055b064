"""Background threads of SQLite databases: one per database file and process, for as long as an
engine on that file lives.

The WAL checkpointer (`sqlite_checkpoint`) and the name indexer (`sqlite_search`) each keep one
daemon thread per file. It starts on an engine's first connection, in the process that makes the
connection (so after any fork), and ends once no engine on the file is left: engines are held
weakly, and a later connection starts a new thread.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine

Key = tuple[int, str]  # (process id, absolute path of the database)


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
        key = (os.getpid(), path)
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
            if self._engines.get(key):
                return True
            self._threads.pop(key, None)  # a later connection starts a new thread
            return False
