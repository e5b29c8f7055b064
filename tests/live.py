"""Helpers for tests that need real commits or a real server process: a dedicated database
(a SQLite file, or a PostgreSQL database of its own beside the suite's), settings for it, a
registered department, and `credit-hub serve` started and always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from credit_hub.access import service as access
from credit_hub.access.models import ClientKind
from credit_hub.config import Settings
from credit_hub.db import make_engine, make_sessionmaker
from credit_hub.keyring import SECRET_NAMES, generate_env, load_keyring
from credit_hub.migrate import upgrade
from tests import factories


def until(condition: Callable[[], bool], seconds: float = 5) -> bool:
    """Whether `condition()` holds within `seconds` (polled every 10 ms): for what background
    threads do in their own time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


SERVER_DATABASE_URL = os.environ.get("CREDIT_HUB_TEST_DATABASE_URL")
BIN = Path(sys.executable).parent


def _admin_url() -> Any:
    assert SERVER_DATABASE_URL
    return make_url(SERVER_DATABASE_URL).set(drivername="postgresql+psycopg")


def recreate_database(name: str, *, create: bool = True) -> None:
    """Drop (and create) a PostgreSQL database next to the suite's own."""
    admin = create_engine(
        _admin_url().set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        if create:
            connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()


def generated_secrets() -> dict[str, str]:
    """Fresh secrets as Settings fields (what `credit-hub secrets generate` prints)."""
    pairs = dict(line.split("=", 1) for line in generate_env().splitlines())
    return {k.removeprefix("CREDIT_HUB_").lower(): v for k, v in pairs.items()}


@contextmanager
def dedicated_settings(folder: Path, name: str, **overrides: Any) -> Iterator[Settings]:
    """Settings on a fresh, migrated database of the suite's kind; dropped afterwards."""
    secrets: dict[str, str] = {}
    if SERVER_DATABASE_URL:
        # Named after the suite's database too: two suites on one server (credit_hub_test_a,
        # credit_hub_test_b) never drop each other's dedicated databases.
        suite = make_url(SERVER_DATABASE_URL).database or ""
        name = f"{name}_{suite.removeprefix('credit_hub_test').strip('_')}".rstrip("_")[:63]
        recreate_database(name)
        url = _admin_url().set(database=name).render_as_string(hide_password=False)
        secrets = generated_secrets()
    else:
        url = f"sqlite:///{folder / f'{name}.db'}"
    settings = Settings(
        database_url=url,
        secrets_file=folder / "secrets.json",
        spool_dir=folder / "spool",
        worker_enabled=False,
        maintenance_every_hours=0,
        **(secrets | overrides),
    )
    upgrade(settings)
    load_keyring(settings)  # writes the embedded secrets file before any server starts
    try:
        yield settings
    finally:
        if SERVER_DATABASE_URL:
            recreate_database(name, create=False)


@contextmanager
def sessions_on(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the settings' database, for a module's fixture."""
    engine = make_engine(settings)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def new_client(
    sessions: sessionmaker[Session], kind: ClientKind, standards: list[str] | None = None
) -> tuple[uuid.UUID, str]:
    """A committed client of that kind and its API key."""
    with sessions.begin() as session:
        client = access.create_client(
            session,
            kind=kind,
            name="福州市市场监督管理局" if kind == ClientKind.DEPARTMENT else f"live {kind}",
            uscc=factories.DEPARTMENT_USCC if kind == ClientKind.DEPARTMENT else None,
            standards=standards or ["administrative_penalty", "administrative_licensing"],
            scopes=[],
            pushes_for=[],
        )
        _, key = access.issue_key(session, client)
        return client.id, key


def new_department(
    sessions: sessionmaker[Session], standards: list[str] | None = None
) -> tuple[uuid.UUID, str]:
    """A committed department client and its API key."""
    return new_client(sessions, ClientKind.DEPARTMENT, standards)


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `credit-hub` subprocess needs to use these settings."""
    env = os.environ | {
        "CREDIT_HUB_DATABASE_URL": settings.database_url,
        "CREDIT_HUB_SPOOL_DIR": str(settings.spool_dir),
        "CREDIT_HUB_LOG_LEVEL": "warning",
        "CREDIT_HUB_MAINTENANCE_EVERY_HOURS": "0",
        "CREDIT_HUB_WEBHOOKS_WORKER": "false",
    }
    if settings.is_sqlite:
        env["CREDIT_HUB_SECRETS_FILE"] = str(settings.secrets_file)
    else:
        for name in SECRET_NAMES:
            env[f"CREDIT_HUB_{name.upper()}"] = getattr(settings, name).get_secret_value()
    return env | extra


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(
    settings: Settings, log_path: Path, *, workers: int = 1, **env: str
) -> Iterator[str]:
    """`credit-hub serve` on a free port until the block ends (then terminated, or killed)."""
    port = free_port()
    command = [
        str(BIN / "credit-hub"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-migrate",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, env=environment(settings, **env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    pytest.fail(
                        f"the server exited with {server.returncode}:\n{log_path.read_text()}"
                    )
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the server was not ready within 30 s:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
