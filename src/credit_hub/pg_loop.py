"""PostgreSQL on the event loop (psycopg's asyncio connections), for the profile read.

A profile read on PostgreSQL is one statement and an audit append. Run from a worker thread,
its hop to the thread pool and the GIL hand-overs of threads waiting on the network cost the
server more CPU than the statement's own client side (see docs/performance.md). Here the
event loop waits on the socket itself. The connections are this pool's own (the engine's
pool is synchronous), opened as needed up to `size` and kept, in autocommit (a statement
runs in a snapshot of its own; a transaction is BEGIN ... COMMIT sent by its user), with the
adapters the engine's connections have (orjson for JSON). A connection whose user failed or
was cancelled is closed, never reused: closing it ends any transaction it was in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from credit_hub.db import written_unasked
from credit_hub.fastsql import Prepared


class LoopConnections:
    """Connections for the calling event loop, at most `size` of them in use at a time."""

    def __init__(self, engine: Engine, size: int) -> None:
        self._dialect = engine.dialect
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @property
    def dialect(self) -> Dialect:
        """The engine's dialect: statements are compiled and their rows processed for it."""
        return self._dialect

    async def rows(self, statement: Prepared, /, **params: Any) -> list[Any]:
        """The statement's rows (as `Prepared.rows` answers them), in autocommit."""
        async with self.connection() as connection:
            return await statement.rows_async(connection, self._dialect, **params)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the pool, idle and in autocommit, back to it after the block
        (closed instead if the block raised or was cancelled)."""
        async with self._slots:
            connection = await self._connection()
            try:
                yield connection
            except BaseException:
                _close_now(connection)
                raise
            if self._closed or connection.info.transaction_status != _IDLE:
                _close_now(connection)
            else:
                self._idle.append(connection)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise RuntimeError("the loop's connections are closed")
        while self._idle:
            connection = self._idle.pop()
            if _usable(connection):
                return connection
            _close_now(connection)
        cargs, cparams = self._connect_args
        return await psycopg.AsyncConnection.connect(*cargs, **cparams, autocommit=True)

    def close(self) -> None:
        """Close the idle connections; those in use close when their statement ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            _close_now(connection)


def _usable(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Open, idle and not closed by the server: an idle connection's socket has nothing to
    read unless the backend ended and sent its last error (as `db._closed_by_server`)."""
    if connection.closed or connection.info.transaction_status != _IDLE:
        return False
    return not written_unasked(connection.fileno())


def _close_now(connection: psycopg.AsyncConnection[Any]) -> None:
    # Without awaiting (the caller may be cancelled): ends the libpq connection and its socket.
    connection.pgconn.finish()


_IDLE = psycopg.pq.TransactionStatus.IDLE
