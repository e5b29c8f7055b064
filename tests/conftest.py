"""Shared fixtures: a migrated database (SQLite file, or PostgreSQL when the environment names
one), a session per test inside a transaction that is rolled back, and the app under test.

Set CREDIT_HUB_TEST_DATABASE_URL=postgresql://... to run the whole suite on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, text
from sqlalchemy.orm import Session

from credit_hub.access import service as access
from credit_hub.access.models import Client, ClientKind
from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import Database, get_db, make_engine
from credit_hub.migrate import upgrade
from tests import factories

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
        spool_dir=tmp_path_factory.mktemp("spool"),  # never the working directory
        maintenance_every_hours=0,  # tests run maintenance themselves, on a FixedClock
        worker_enabled=False,  # tests run file-submission jobs themselves
        # Reads append their audit events in the test's own transaction (tests/audit tests the
        # appender on a database of its own).
        audit_group_commit=False,
        gc_tuning=False,  # one test process starts hundreds of apps
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


class TestDatabase(Database):
    """The app's Database, bound to the test's session: every transaction is a savepoint."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def one_writer(self) -> bool:
        return self.session.get_bind().dialect.name == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self.session.begin_nested():
            yield self.session

    @contextmanager
    def read(self) -> Iterator[Session]:
        yield self.session


@pytest.fixture
def app(settings: Settings, session: Session) -> FastAPI:
    app = create_app(settings)
    app.dependency_overrides[get_db] = lambda: TestDatabase(session)
    return app


@pytest.fixture
def app_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def schemas_root() -> Path:
    return Path(__file__).resolve().parent.parent / "schemas"


@dataclass
class Caller:
    """A registered client and the headers that authenticate it."""

    client: Client
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def pushed(
    client: TestClient,
    caller: Caller,
    records: list[Any],
    standard: str = "administrative_penalty",
) -> Any:
    """Push a batch that must be stored (201); the submission report."""
    response = client.post(
        "/v1/records", json={"standard": standard, "records": records}, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def register(
    session: Session,
    kind: ClientKind,
    *,
    name: str | None = None,
    uscc: str | None = None,
    standards: list[str] | None = None,
    scopes: list[str] | None = None,
    pushes_for: list[str] | None = None,
) -> Caller:
    client = access.create_client(
        session,
        kind=kind,
        name=name or f"test {kind}",
        uscc=uscc,
        standards=standards if standards is not None else list(ALL_STANDARDS),
        scopes=scopes or [],
        pushes_for=pushes_for or [],
    )
    _, key = access.issue_key(session, client)
    return Caller(client, key)


ALL_STANDARDS = ("administrative_penalty", "administrative_licensing")


@pytest.fixture
def operator(session: Session) -> Caller:
    return register(session, ClientKind.OPERATOR)


@pytest.fixture
def department(session: Session) -> Caller:
    return register(
        session, ClientKind.DEPARTMENT, name="福州市市场监督管理局", uscc=factories.DEPARTMENT_USCC
    )


@pytest.fixture
def other_department(session: Session) -> Caller:
    return register(
        session,
        ClientKind.DEPARTMENT,
        name="深圳市市场监督管理局",
        uscc=factories.OTHER_DEPARTMENT_USCC,
    )


@pytest.fixture
def agency(session: Session) -> Caller:
    return register(session, ClientKind.AGENCY, name="福州市公共资源交易中心")


@pytest.fixture
def privileged_agency(session: Session) -> Caller:
    return register(
        session,
        ClientKind.AGENCY,
        name="福州市中级人民法院",
        scopes=["personal_data", "unpublished"],
    )
