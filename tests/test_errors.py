"""A database that cannot answer is a 503 with Retry-After, not a 500: the client may retry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.access.models import ClientKind
from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.db import make_engine
from credit_hub.errors import DATABASE_RETRY_AFTER_SECONDS
from credit_hub.pg_loop import LoopConnections
from tests import factories
from tests.live import dedicated_settings, generated_secrets, new_client, sessions_on

NOWHERE = "postgresql://postgres@127.0.0.1:1/nothing"  # a port nothing listens on
READ = {"purpose": "procurement", "case_ref": "UNAVAILABLE-1"}


def _assert_unavailable(answer: Any) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    problem = answer.json()
    assert problem["type"].endswith("/service-unavailable")
    assert "OperationalError" in problem["detail"]
    assert "127.0.0.1" not in problem["detail"]  # the driver's message stays in the log


def test_requests_to_a_hub_whose_database_is_down_are_503(tmp_path: Path) -> None:
    settings = Settings(
        database_url=NOWHERE,
        secrets_file=tmp_path / "secrets.json",
        spool_dir=tmp_path / "spool",
        worker_enabled=False,
        webhooks_worker=False,
        maintenance_every_hours=0,
        **generated_secrets(),
    )
    with TestClient(create_app(settings)) as client:
        key = {"Authorization": "Bearer chk_0123456789abcdef0123456789abcdef"}
        _assert_unavailable(
            client.get(f"/v1/subjects/{factories.make_uscc(1)}/profile", params=READ, headers=key)
        )
        pushed = client.post(
            "/v1/records",
            json={"standard": "administrative_penalty", "records": [factories.penalty(1)]},
            headers=key,
        )
        _assert_unavailable(pushed)
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # the process itself is up


@pytest.fixture
def hub_settings(tmp_path: Path) -> Any:
    with dedicated_settings(
        tmp_path, "credit_hub_test_unavailable", webhooks_worker=False, auth_cache_seconds=60
    ) as made:
        yield made


def test_a_profile_read_on_the_event_loop_whose_database_is_down_is_503(
    hub_settings: Settings,
) -> None:
    if not hub_settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's reads on the event loop")
    sessions: sessionmaker[Session]
    with sessions_on(hub_settings) as sessions:
        _, key = new_client(sessions, ClientKind.AGENCY)
    headers = {"Authorization": f"Bearer {key}"}
    url = f"/v1/subjects/{factories.make_uscc(2)}/profile"
    with TestClient(create_app(hub_settings)) as client:
        state: Any = client.app.state  # type: ignore[attr-defined]
        assert client.get(url, params=READ, headers=headers).status_code == 404  # key cached
        working = state.pg_loop
        nowhere = make_engine(hub_settings.model_copy(update={"database_url": NOWHERE}))
        state.pg_loop = LoopConnections(nowhere, size=1)
        try:
            _assert_unavailable(client.get(url, params=READ, headers=headers))
        finally:
            state.pg_loop.close()
            state.pg_loop = working
            nowhere.dispose()
        assert client.get(url, params=READ, headers=headers).status_code == 404
