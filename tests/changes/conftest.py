"""The app for change-feed tests: webhooks to loopback allowed (the receivers are local or a
MockTransport), no delivery thread (tests run the deliverer themselves), fast retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.changes.delivery import Deliverer, make_http_client
from credit_hub.config import Settings
from credit_hub.db import get_db
from tests.conftest import TestDatabase

HOOK_URL = "http://127.0.0.1:9/hook"


class Receiver:
    """A MockTransport handler that records requests and answers what the test says."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(204)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def hub_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhooks_worker": False,
            "webhooks_allow_loopback": True,
            "webhooks_retry_base_seconds": 0.0,
            "webhooks_disable_after": 3,
            "webhooks_max_attempts": 5,
            "webhooks_concurrency": 4,
        }
    )


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def app(hub_settings: Settings, session: Session, receiver: Receiver) -> Iterator[FastAPI]:
    http = make_http_client(hub_settings, transport=httpx.MockTransport(receiver))
    app = create_app(hub_settings, http_client=http)
    app.dependency_overrides[get_db] = lambda: TestDatabase(session)
    yield app
    http.close()


@pytest.fixture
def app_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def deliverer(app: FastAPI, session: Session, hub_settings: Settings) -> Iterator[Deliverer]:
    found = Deliverer(TestDatabase(session), app.state.http, app.state.keyring, hub_settings)
    yield found
    found.close()


def changes(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    response = client.get("/v1/changes", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()
