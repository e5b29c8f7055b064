"""Set-based inserts for the hot paths (record, version, change, subject rows).

On PostgreSQL a batch goes in as ONE statement whose parameters are column arrays:
`INSERT ... SELECT * FROM unnest(%(c0)s::uuid[], %(c1)s::varchar[], ...)`. The server plans
and runs it once instead of once per row, and psycopg binds a handful of array parameters
instead of parsing a statement with thousands of placeholders. On SQLite, where a statement
costs microseconds in-process, `executemany` is already the fast path.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=64)
def _pg_statement(table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] | None) -> str:
    casts: list[str] = []
    for name in columns:
        sql_type = table.c[name].type.compile(dialect=_PG_DIALECT)
        casts.append(f"%(c{len(casts)})s::{sql_type}[]")
    statement = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({', '.join(casts)})"
    )
    if conflict is not None:
        statement += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    return statement


def _json_columns(table: Table, columns: Sequence[str]) -> set[str]:
    return {name for name in columns if isinstance(table.c[name].type, JSON)}


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    on_conflict_do_nothing: Sequence[str] | None = None,
) -> int:
    """Insert `rows` (dicts with the same keys) in one go; the number of rows inserted."""
    if not rows:
        return 0
    columns = tuple(rows[0])
    if session.get_bind().dialect.name != "postgresql":
        stmt: Any = sqlite.insert(table)
        if on_conflict_do_nothing is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(on_conflict_do_nothing))
        result: Any = session.execute(stmt, list(rows))
        return int(result.rowcount)
    conflict = tuple(on_conflict_do_nothing) if on_conflict_do_nothing is not None else None
    statement = _pg_statement(table, columns, conflict)
    json_columns = _json_columns(table, columns)
    params: dict[str, Any] = {}
    for index, name in enumerate(columns):
        values = [row[name] for row in rows]
        if name in json_columns:  # jsonb[] from text: serialize once, with orjson
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        params[f"c{index}"] = values
    cursor = session.connection().exec_driver_sql(statement, params)
    return int(cursor.rowcount)
