"""The per-process cache of checked keys: how long a key change outside this process takes."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from credit_hub.access.auth import PrincipalCache
from credit_hub.access.models import ApiKey
from credit_hub.access.service import Principal
from tests.conftest import Caller


def _principal() -> Principal:
    return Principal(
        id=uuid.uuid4(),
        kind="agency",
        name="a",
        uscc=None,
        standards=frozenset(),
        scopes=frozenset(),
        pushes_for=frozenset(),
    )


def test_a_remembered_key_is_forgotten_after_its_time() -> None:
    now = [100.0]
    cache = PrincipalCache(ttl=1.0, clock=lambda: now[0])
    principal = _principal()
    cache.put("chk_key", principal)
    assert cache.get("chk_key") is principal
    assert cache.get("chk_other") is None
    now[0] += 0.9
    assert cache.get("chk_key") is principal
    now[0] += 0.2
    assert cache.get("chk_key") is None


def test_zero_seconds_remembers_nothing() -> None:
    cache = PrincipalCache(ttl=0)
    cache.put("chk_key", _principal())
    assert cache.get("chk_key") is None


def _accepted(app_client: TestClient, caller: Caller) -> bool:
    status = app_client.get(f"/v1/records/{uuid.uuid4()}", headers=caller.headers).status_code
    assert status in (401, 404)
    return status == 404


def test_a_revocation_made_elsewhere_takes_effect_within_the_cache_time(
    app: FastAPI, app_client: TestClient, department: Caller, session: Session
) -> None:
    now = [0.0]
    app.state.principals = PrincipalCache(ttl=1.0, clock=lambda: now[0])
    assert _accepted(app_client, department)
    # Revoked by another process (the CLI, another worker): this one does not know yet...
    session.execute(
        update(ApiKey)
        .where(ApiKey.client_id == department.client.id)
        .values(revoked_at=ApiKey.created_at)
    )
    assert _accepted(app_client, department)
    # ...and refuses the key once the remembered principal is older than the cache time.
    now[0] += 1.5
    assert not _accepted(app_client, department)
