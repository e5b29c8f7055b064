"""`credit-hub admin bootstrap` and `credit-hub audit verify` on a fresh SQLite database."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from credit_hub.access.models import Client, ClientKind
from credit_hub.access.service import authenticate
from credit_hub.audit.models import AuditEvent
from credit_hub.cli import app
from credit_hub.config import Settings, get_settings
from credit_hub.db import make_engine

runner = CliRunner()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SQLite database named by the environment, as the command reads it; its path."""
    path = tmp_path / "hub.db"
    monkeypatch.setenv("CREDIT_HUB_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("CREDIT_HUB_SECRETS_FILE", str(tmp_path / "secrets.json"))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def bootstrap(*args: str) -> tuple[int, list[str], str]:
    result = runner.invoke(app, ["admin", "bootstrap", *args])
    return result.exit_code, result.stdout.splitlines(), result.stderr


def verify() -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify"])
    return result.exit_code, result.stdout


def query(statement: Select[Any]) -> list[Any]:
    """The first column of every row, read from the database the command wrote."""
    engine = make_engine(Settings())
    try:
        with Session(engine) as session:
            return list(session.scalars(statement))
    finally:
        engine.dispose()


def tamper(path: Path, sql: str) -> None:
    with closing(sqlite3.connect(path)) as connection, connection:
        assert connection.execute(sql).rowcount == 1


def test_bootstrap_prints_a_key_that_authenticates_an_operator(hub: Path) -> None:
    status, stdout, stderr = bootstrap("--name", "平台运维")
    assert status == 0, stderr
    key = stdout[-1]
    assert key == key.strip()
    assert key.startswith("chk_")
    assert " " not in key
    engine = make_engine(Settings())
    try:
        with Session(engine) as session:
            principal = authenticate(session, key)
    finally:
        engine.dispose()
    assert principal is not None
    assert principal.kind == ClientKind.OPERATOR
    assert principal.name == "平台运维"
    assert query(select(AuditEvent.action)) == ["client.bootstrapped"]
    assert query(select(AuditEvent.actor_kind)) == ["cli"]
    assert query(select(AuditEvent.payload)) == [{"client_id": str(principal.id)}]


def test_a_second_bootstrap_needs_force(hub: Path) -> None:
    first, _, _ = bootstrap()
    assert first == 0
    status, stdout, _ = bootstrap()
    assert status == 1
    assert not any(line.startswith("chk_") for line in stdout)
    assert query(select(func.count()).select_from(Client)) == [1]
    forced, stdout, _ = bootstrap("--force", "--name", "second operator")
    assert forced == 0
    assert stdout[-1].startswith("chk_")
    kinds = query(select(Client.kind).order_by(Client.created_at))
    assert kinds == [ClientKind.OPERATOR, ClientKind.OPERATOR]


def test_audit_verify_passes_on_an_intact_chain(hub: Path) -> None:
    for args in ([], ["--force"], ["--force"]):
        assert bootstrap(*args)[0] == 0
    status, stdout = verify()
    assert status == 0, stdout
    assert re.search(r"\b3\b", stdout)  # the events it checked


def test_audit_verify_on_an_empty_database_passes(hub: Path) -> None:
    status, stdout = verify()
    assert status == 0, stdout


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_event SET payload = json_set(payload, '$.client_id', 'x') WHERE id = 2",
        "UPDATE audit_event SET actor_kind = 'operator' WHERE id = 2",
        "UPDATE audit_event SET prev_hash = hash WHERE id = 2",
        "DELETE FROM audit_event WHERE id = 2",
    ],
    ids=["payload", "actor", "prev_hash", "deleted"],
)
def test_audit_verify_fails_and_names_the_tampered_event(hub: Path, sql: str) -> None:
    for args in ([], ["--force"], ["--force"]):
        assert bootstrap(*args)[0] == 0
    assert verify()[0] == 0
    tamper(hub, sql)
    status, stdout = verify()
    assert status == 1
    assert re.search(r"\bevent 2\b", stdout)
