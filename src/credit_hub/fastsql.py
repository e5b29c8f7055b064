"""Statements of the hottest read paths, compiled once and run on the DBAPI cursor.

A profile read runs about six small statements; SQLAlchemy's per-execution machinery (cache
key, compiled-cache lookup, execution context, result wrapping) costs ~50 µs for each, as
much as SQLite takes to answer. A `Prepared` statement is compiled once per dialect; at run
time its parameters and result columns go through the column types' own bind and result
processors, so what is stored and read is exactly what SQLAlchemy would write and read. It
runs inside the session's current transaction, or on a plain Connection (no Session, and no
BEGIN of SQLAlchemy's: a single statement in autocommit). When something listens to the engine's
cursor events (the benchmark's EXPLAIN capture), it runs through SQLAlchemy instead.

Only scalar bound parameters: expanding `IN` lists stay with SQLAlchemy. On PostgreSQL a
statement can also run on a psycopg asyncio connection (`rows_async`, `pg_loop`).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import psycopg
from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session


class _Compiled:
    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("Prepared statements take scalar parameters only (no IN lists)")
        self.sql: str = compiled.string
        self.defaults: dict[str, Any] = compiled.construct_params(_check=False)
        self.processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type._cached_bind_processor(dialect)) is not None
        }
        self.positional: list[str] | None = (
            list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        )
        columns = compiled._result_columns
        self.row: Any = namedtuple("Row", [c.keyname for c in columns]) if columns else None
        self.results = [c.type._cached_result_processor(dialect, None) for c in columns]

    def made(self, raw: list[Any]) -> list[Any]:
        """The driver's rows as named tuples, through the columns' result processors."""
        make, processors = self.row._make, self.results
        if not any(processors):
            return [make(r) for r in raw]
        return [
            make([p(v) if p is not None else v for p, v in zip(processors, r, strict=True)])
            for r in raw
        ]

    def parameters(self, given: dict[str, Any]) -> Any:
        values = self.defaults | given
        for name, processor in self.processors.items():
            values[name] = processor(values[name])
        if self.positional is not None:
            return tuple(values[name] for name in self.positional)
        return values


class Prepared:
    """A Core statement (SELECT, INSERT of one row, ...) with named scalar parameters."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[int, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        """The statement for this dialect: `sql`, `parameters(given)`, the `row` type."""
        found = self._by_dialect.get(id(dialect))
        if found is None:
            found = self._by_dialect[id(dialect)] = _Compiled(self.statement, dialect)
        return found

    def rows(self, source: Session | Connection, /, **params: Any) -> list[Any]:
        """The result rows (named tuples), or [] for a statement without any."""
        connection = source.connection() if isinstance(source, Session) else source
        compiled = self.compiled(connection.dialect)
        if connection.dispatch.before_cursor_execute:  # someone watches: the usual path
            result = connection.execute(self.statement, params)
            return list(result) if result.returns_rows else []
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, compiled.parameters(params))
            if compiled.row is None:
                return []
            raw = cursor.fetchall()
        finally:
            cursor.close()
        return compiled.made(raw)

    async def rows_async(
        self, connection: psycopg.AsyncConnection[Any], dialect: Dialect, /, **params: Any
    ) -> list[Any]:
        """`rows` on a psycopg asyncio connection (in autocommit) for `dialect`'s engine: the
        statement runs alone, in a snapshot of its own."""
        compiled = self.compiled(dialect)
        async with connection.cursor() as cursor:
            await cursor.execute(compiled.sql, compiled.parameters(params))
            if compiled.row is None:
                return []
            raw = await cursor.fetchall()
        return compiled.made(raw)

    def first(self, source: Session | Connection, /, **params: Any) -> Any:
        found = self.rows(source, **params)
        return found[0] if found else None
