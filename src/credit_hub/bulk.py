"""Set-based writes for the hot paths (record, version, change, subject rows).

On PostgreSQL a batch goes in as ONE statement whose parameters are column arrays:
`INSERT ... SELECT * FROM unnest(%(c0)b::uuid[], %(c1)b::varchar[], ...)`, sent in binary
(text arrays would be escaped element by element in Python). The server plans and runs it
once instead of once per row. Plain inserts (no ON CONFLICT) use a binary COPY instead, the
same for updates: one `UPDATE ... FROM unnest(...)`. On SQLite, where a statement costs
microseconds in-process,
`executemany` is the fast path, fed with tuples built column by column with each type's own
bind processor: the stored bytes are exactly what SQLAlchemy writes, without its per-row
parameter machinery (which cost more than SQLite itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date
from functools import lru_cache
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    String,
    Table,
    TypeDecorator,
    Uuid,
    any_,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Rows = Sequence[Mapping[str, Any]]


def in_values(column: Any, name: str, dialect: Dialect) -> ColumnElement[bool]:
    """`column IN :name` with the list bound as one parameter, so that the statement text is
    the same whatever the list's length: on PostgreSQL one array (`= ANY(...)`), on SQLite one
    JSON array read by `json_each` (SQLite seeks the column's index for each of its values).
    SQLAlchemy's expanding IN made a bind parameter per value and a new statement text at
    every execution: ~15% of a 500-value lookup, of which a push makes several under SQLite's
    write lock."""
    clause: ColumnElement[bool]
    if dialect.name == "postgresql":
        clause = column == any_(bindparam(name, type_=ARRAY(column.type)))
    else:
        listed = func.json_each(bindparam(name, type_=_JsonArray(column.type)))
        clause = column.in_(select(listed.table_valued("value").c.value))
    return clause


class _JsonArray(TypeDecorator[list[Any]]):
    """A list bound as JSON text, each value as `item_type` binds it (a UUID as its hex...)."""

    impl = String
    cache_ok = True

    def __init__(self, item_type: TypeEngine[Any]) -> None:
        super().__init__()
        self.item_type = item_type

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        item = self.item_type._cached_bind_processor(dialect)

        def process(values: Any) -> str:
            if item is not None:
                values = [None if value is None else item(value) for value in values]
            return orjson.dumps(list(values)).decode()

        return process


def insert_rows(
    session: Session,
    table: Table,
    rows: Rows,
    *,
    on_conflict_do_nothing: Sequence[str] | None = None,
    bound: Collection[str] = (),
) -> int:
    """Insert `rows` (dicts with the same keys) in one go; the number of rows inserted. The
    columns in `bound` hold values bind_rows() made ready for the driver already."""
    conflict = None
    if on_conflict_do_nothing is not None:
        conflict = f" ON CONFLICT ({', '.join(on_conflict_do_nothing)}) DO NOTHING"
    return _insert(session, table, rows, conflict, bound)


def claim_rows(
    session: Session,
    table: Table,
    rows: Rows,
    *,
    key: Sequence[str],
    returning: str,
) -> list[Any]:
    """PostgreSQL only: insert `rows` and lock (as FOR UPDATE) the stored rows whose `key`
    they repeat instead, one row after another in the order given; the `returning` column of
    the rows inserted. Two transactions that claim in the same order never deadlock on these
    rows: each waits at the first row the other holds, holding none the other still needs."""
    if not rows:
        return []
    connection = session.connection()
    assert connection.dialect.name == "postgresql", "claim_rows() is for PostgreSQL"
    columns, rows = _with_defaults(table, rows)
    # DO UPDATE ... WHERE false locks the conflicting row and writes nothing (DO NOTHING
    # would neither lock it nor wait for it).
    statement = _pg_insert(
        table,
        columns,
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {key[0]} = excluded.{key[0]} "
        f"WHERE false RETURNING {returning}",
    )
    result = connection.exec_driver_sql(statement, _pg_params(table, columns, rows))
    return [row[0] for row in result]


def upsert_rows(
    session: Session,
    table: Table,
    rows: Rows,
    *,
    conflict: Sequence[str],
    set_: Mapping[str, str],
) -> int:
    """Insert `rows`, updating the conflicting ones: `set_` maps a column to an SQL expression
    over `<table>.<column>` and `excluded.<column>` (the same text on both databases)."""
    assignments = ", ".join(f"{column} = {expression}" for column, expression in set_.items())
    return _insert(
        session, table, rows, f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
    )


def update_rows(
    session: Session, table: Table, rows: Rows, *, key: Sequence[str], bound: Collection[str] = ()
) -> int:
    """Update one row per dict (found by the `key` columns) with the dict's other columns
    (`bound`: as for insert_rows)."""
    if not rows:
        return 0
    columns = tuple(rows[0])
    values = tuple(name for name in columns if name not in key)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        alias = ", ".join(columns)
        statement = (
            f"UPDATE {table.name} SET {', '.join(f'{c} = v.{c}' for c in values)} "
            f"FROM unnest({_pg_arrays(table, columns)}) AS v({alias}) "
            f"WHERE {' AND '.join(f'{table.name}.{c} = v.{c}' for c in key)}"
        )
        return _pg_execute(session, statement, _pg_params(table, columns, rows))
    statement = (
        f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in values)} "
        f"WHERE {' AND '.join(f'{c} = ?' for c in key)}"
    )
    params = _sqlite_params(table, connection.dialect, (*values, *key), rows, bound)
    return int(connection.exec_driver_sql(statement, params).rowcount)


def _insert(
    session: Session, table: Table, rows: Rows, conflict: str | None, bound: Collection[str] = ()
) -> int:
    if not rows:
        return 0
    connection = session.connection()
    columns, rows = _with_defaults(table, rows)
    if connection.dialect.name == "postgresql":
        if conflict is None:
            return _pg_copy(session, table, columns, rows)
        statement = _pg_insert(table, columns, conflict)
        return _pg_execute(session, statement, _pg_params(table, columns, rows))
    statement = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))}){conflict or ''}"
    )
    params = _sqlite_params(table, connection.dialect, columns, rows, bound)
    return int(connection.exec_driver_sql(statement, params).rowcount)


@lru_cache(maxsize=64)
def _scalar_defaults(table: Table) -> dict[str, Any]:
    return {
        column.name: column.default.arg  # type: ignore[attr-defined]
        for column in table.columns
        if column.default is not None and column.default.is_scalar
    }


def _with_defaults(table: Table, rows: Rows) -> tuple[tuple[str, ...], Rows]:
    """The columns to write and the rows: the given columns plus those with a scalar Python
    default, filled in as a Core INSERT would (callable defaults, such as ids, the caller
    provides)."""
    given = tuple(rows[0])
    defaults = {k: v for k, v in _scalar_defaults(table).items() if k not in given}
    if defaults:
        rows = [{**defaults, **row} for row in rows]
    return (*given, *defaults), rows


# -- SQLite -------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _processor(
    table: Table, name: str, dialect: Dialect
) -> tuple[Callable[[Any], Any] | None, bool, bool]:
    """(bind processor, whether to memoize it, whether it writes UUIDs as 32 hex digits):
    dates and times repeat across a batch."""
    sql_type = table.c[name].type
    impl = sql_type.dialect_impl(dialect)
    processor: Callable[[Any], Any] | None = impl.bind_processor(dialect)
    try:  # a TypeDecorator's python_type is `object`: ask what it decorates
        repeats = issubclass(getattr(sql_type, "impl_instance", sql_type).python_type, date)
    except NotImplementedError:
        repeats = False
    if processor is not None and _writes_iso_dates(processor):
        processor = _iso_dates(processor)
    hex_uuid = (
        processor is not None
        and type(impl) is Uuid
        and impl.as_uuid
        and not (dialect.supports_native_uuid and impl.native_uuid)
    )
    return processor, repeats, hex_uuid


def _writes_iso_dates(processor: Callable[[Any], Any]) -> bool:
    """Whether a bind processor writes a date as YYYY-MM-DD (SQLite's DATE by default)."""
    try:
        samples = (date(1, 2, 3), date(2024, 12, 31))
        return all(processor(day) == day.isoformat() for day in samples)
    except Exception:  # a processor of another type, refusing a date in its own way
        return False


def _iso_dates(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`processor` with dates written by date.isoformat(), in C: about a quarter of the time
    of SQLAlchemy's %-format of a dict of three fields, for thousands of dates a batch."""

    def process(value: Any) -> Any:
        return value.isoformat() if type(value) is date else processor(value)

    return process


def _bound_values(table: Table, dialect: Dialect, name: str, values: list[Any]) -> list[Any]:
    processor, repeats, hex_uuid = _processor(table, name, dialect)
    if processor is None:
        return values
    if hex_uuid:  # what Uuid's processor writes (`value.hex`), without a call per value
        # %-formatting: a third faster here than an f-string or format() with "032x".
        return [None if value is None else "%032x" % value.int for value in values]  # noqa: UP031
    if repeats:
        memo = {value: processor(value) for value in set(values)}
        return [memo[value] for value in values]
    return list(map(processor, values))


def _sqlite_params(
    table: Table, dialect: Dialect, columns: Iterable[str], rows: Rows, bound: Collection[str] = ()
) -> list[tuple[Any, ...]]:
    processed: list[list[Any]] = []
    for name in columns:
        values = [row[name] for row in rows]
        processed.append(values if name in bound else _bound_values(table, dialect, name, values))
    return list(zip(*processed, strict=True))


def bind_rows(
    dialect: Dialect, table: Table, rows: list[dict[str, Any]], columns: Collection[str]
) -> list[dict[str, Any]]:
    """`rows` with the values of `columns` made ready for the driver (in place), as the
    statements here would make them: done before a write transaction opens, SQLite's write lock
    is held for less. Pass the same `columns` as `bound` when writing the rows. PostgreSQL's
    paths send Python values: there the rows stay as they are."""
    if dialect.name != "sqlite" or not rows:
        return rows
    for name in columns:
        values = _bound_values(table, dialect, name, [row[name] for row in rows])
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_insert(table: Table, columns: tuple[str, ...], tail: str) -> str:
    """`INSERT ... SELECT * FROM unnest(<one array per column>)` and `tail`."""
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT * FROM unnest({_pg_arrays(table, columns)}){tail}"
    )


@lru_cache(maxsize=128)
def _pg_arrays(table: Table, columns: tuple[str, ...]) -> str:
    return ", ".join(
        f"%(c{index})b::{table.c[name].type.compile(dialect=_PG_DIALECT)}[]"
        for index, name in enumerate(columns)
    )


def _pg_params(table: Table, columns: Sequence[str], rows: Rows) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {}
    for index, name in enumerate(columns):
        values = [row[name] for row in rows]
        if isinstance(table.c[name].type, JSON):  # jsonb[] from text: serialized with orjson
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        params[f"c{index}"] = values
    return params


@lru_cache(maxsize=128)
def _pg_copy_types(table: Table, columns: tuple[str, ...]) -> tuple[list[str], list[bool]]:
    """psycopg's names of the columns' types ("varchar", "timestamptz"), and which are JSON."""
    names = [
        re.sub(r"\(.*\)", "", table.c[name].type.compile(dialect=_PG_DIALECT)).strip().lower()
        for name in columns
    ]
    return names, [isinstance(table.c[name].type, JSON) for name in columns]


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


def _pg_copy(session: Session, table: Table, columns: tuple[str, ...], rows: Rows) -> int:
    """COPY ... FROM STDIN in binary: about a third faster than `INSERT ... unnest` for the
    record versions, and no statement to plan. Only for tables without ON CONFLICT."""
    types, json = _pg_copy_types(table, columns)
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    wrap = [(index, Jsonb) for index, is_json in enumerate(json) if is_json]
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with dbapi.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            values = [row[name] for name in columns]
            for index, wrapper in wrap:
                if values[index] is not None:
                    values[index] = wrapper(values[index], dumps=_json_bytes)
            copy.write_row(values)
    return len(rows)


def _pg_execute(session: Session, statement: str, params: dict[str, list[Any]]) -> int:
    # `%(c0)b`: the arrays go as binary parameters. A text array is quoted and escaped element
    # by element in Python, which cost more than the statement itself.
    return int(session.connection().exec_driver_sql(statement, params).rowcount)
