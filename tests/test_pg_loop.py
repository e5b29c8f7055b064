"""PostgreSQL statements on the event loop: the same rows as the engine's, a bounded number
of connections, and no broken or cancelled connection used again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, cast, func, literal, select, text
from sqlalchemy.types import JSON, Date, Integer, String, Text, Uuid

from credit_hub.db import UtcDateTime
from credit_hub.fastsql import Prepared
from credit_hub.pg_loop import LoopConnections

TYPED = Prepared(
    select(
        bindparam("id", type_=Uuid()).label("id"),
        bindparam("on", type_=Date()).label("on"),
        bindparam("at", type_=UtcDateTime()).label("at"),
        func.json_build_object(
            literal("名称", Text), cast(bindparam("name", type_=Text()), Text), type_=JSON
        ).label("doc"),
    )
)
BACKEND = Prepared(select(func.pg_backend_pid().label("pid"), func.pg_sleep(bindparam("s"))))


@pytest.fixture
def postgres(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's asyncio reads")
    return engine


def test_rows_on_the_loop_are_the_rows_the_engine_reads(postgres: Engine) -> None:
    given: dict[str, Any] = {
        "id": uuid.uuid4(),
        "on": date(2099, 12, 31),
        "at": datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        "name": "某某市'; DROP TABLE record; --",
    }
    with postgres.connect() as connection:
        expected = TYPED.rows(connection, **given)

    async def read() -> list[Any]:
        reader = LoopConnections(postgres, size=2)
        try:
            return await reader.rows(TYPED, **given)
        finally:
            reader.close()

    found = asyncio.run(read())
    assert found == expected
    assert found[0].doc == {"名称": given["name"]}
    assert found[0].at == given["at"]
    assert found[0].at.tzinfo is not None


def test_concurrent_reads_share_at_most_size_connections(postgres: Engine) -> None:
    async def reads() -> set[int]:
        reader = LoopConnections(postgres, size=2)
        try:
            found = await asyncio.gather(*(reader.rows(BACKEND, s=0.02) for _ in range(8)))
            return {rows[0].pid for rows in found}
        finally:
            reader.close()

    assert len(asyncio.run(reads())) == 2


def test_a_connection_the_server_ended_is_replaced_before_use(postgres: Engine) -> None:
    async def reads() -> tuple[int, int]:
        reader = LoopConnections(postgres, size=1)
        try:
            first = (await reader.rows(BACKEND, s=0))[0].pid
            with postgres.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
                admin.commit()
            await asyncio.sleep(0.1)  # the backend's goodbye reaches the idle socket
            second = (await reader.rows(BACKEND, s=0))[0].pid
            return first, second
        finally:
            reader.close()

    first, second = asyncio.run(reads())
    assert first != second


def test_a_cancelled_read_does_not_leave_its_connection_to_the_next(postgres: Engine) -> None:
    async def reads() -> tuple[int, int]:
        reader = LoopConnections(postgres, size=1)
        try:
            slow = asyncio.create_task(reader.rows(BACKEND, s=5))
            await asyncio.sleep(0.2)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            rows = await asyncio.wait_for(reader.rows(BACKEND, s=0), timeout=3)
            with postgres.connect() as admin:
                active = admin.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%'"
                        " AND state = 'active' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            return rows[0].pid, active
        finally:
            reader.close()

    pid, still_sleeping = asyncio.run(reads())
    assert pid > 0
    assert still_sleeping == 0  # the cancelled statement's backend was ended with it


def test_a_failed_statement_raises_and_the_reader_goes_on(postgres: Engine) -> None:
    failing = Prepared(select(cast(bindparam("n", type_=String()), Integer).label("x")))

    async def reads() -> list[Any]:
        reader = LoopConnections(postgres, size=1)
        try:
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                await reader.rows(failing, n="一")
            return await reader.rows(BACKEND, s=0)
        finally:
            reader.close()

    assert asyncio.run(reads())[0].pid > 0


def test_a_closed_reader_reads_no_more(postgres: Engine) -> None:
    async def read() -> None:
        reader = LoopConnections(postgres, size=1)
        await reader.rows(BACKEND, s=0)
        reader.close()
        await reader.rows(BACKEND, s=0)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(read())
