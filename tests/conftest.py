"""Shared fixtures: a migrated database (SQLite file, or PostgreSQL when the environment names
one), a session per test inside a transaction that is rolled back, and the app under test.

Set CREDIT_HUB_TEST_DATABASE_URL=postgresql://... to run the whole suite on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, text
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import get_session, make_engine
from credit_hub.migrate import upgrade

TEST_DATABASE_URL = os.environ.get("CREDIT_HUB_TEST_DATABASE_URL")


def reset_database(settings: Settings) -> None:
    """Drop everything, then build the schema the way production does: Alembic to head."""
    engine = make_engine(settings)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        else:
            meta = MetaData()
            meta.reflect(connection)
            meta.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    upgrade(settings)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if TEST_DATABASE_URL:
        return TEST_DATABASE_URL
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    secrets: dict[str, str] = {}
    if not database_url.startswith("sqlite"):
        from credit_hub.keyring import generate_env

        secrets = dict(line.split("=", 1) for line in generate_env().splitlines())
        secrets = {k.removeprefix("CREDIT_HUB_").lower(): v for k, v in secrets.items()}
    return Settings(
        database_url=database_url,
        secrets_file=tmp_path_factory.mktemp("secrets") / "secrets.json",
        **secrets,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    reset_database(settings)
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose commits are savepoints inside one transaction that is rolled back."""
    with engine.connect() as connection:
        outer = connection.begin()
        with Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        ) as session:
            yield session
        outer.rollback()


@pytest.fixture
def app_client(settings: Settings, session: Session) -> Iterator[TestClient]:
    app = create_app(settings)

    def test_session() -> Iterator[Session]:
        # Like get_session: the request's work commits (to a savepoint) or rolls back.
        with session.begin_nested():
            yield session

    app.dependency_overrides[get_session] = test_session
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def schemas_root() -> Path:
    return Path(__file__).resolve().parent.parent / "schemas"
