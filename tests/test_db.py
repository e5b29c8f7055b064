"""PostgreSQL connections: a pooled connection whose server side ended is replaced on
checkout, without a ping round trip and without an error for the caller."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from credit_hub.config import Settings
from credit_hub.db import make_engine


@pytest.fixture
def pg_engine(settings: Settings) -> Iterator[Engine]:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL connections")
    engine = make_engine(settings, pool_size=2)
    yield engine
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(settings: Settings, pids: set[int]) -> None:
    """What a restart does to every backend: end it (the client's socket gets its FATAL)."""
    url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
            ).fetchone()
            if alive == (0,):
                return
            time.sleep(0.02)
    raise AssertionError("the backends did not end")


def test_a_healthy_pooled_connection_is_reused(pg_engine: Engine) -> None:
    assert _backend(pg_engine) == _backend(pg_engine)


def test_connections_the_server_ended_are_replaced_on_checkout(
    settings: Settings, pg_engine: Engine
) -> None:
    with pg_engine.connect() as first, pg_engine.connect() as second:
        pids = {
            int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)
        }
    assert pg_engine.pool.checkedin() == 2  # type: ignore[attr-defined]
    _terminate(settings, pids)
    with pg_engine.connect() as first, pg_engine.connect() as second:
        now = {
            int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)
        }
    assert len(now) == 2
    assert not now & pids
