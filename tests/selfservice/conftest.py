"""The app under test runs on a FixedClock: tests move time instead of sleeping."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.clock import FixedClock
from credit_hub.config import Settings
from credit_hub.db import get_db
from tests.conftest import TestDatabase
from tests.objections.due_process import START


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def app(settings: Settings, session: Session, clock: FixedClock) -> FastAPI:
    app = create_app(settings, clock=clock)
    app.dependency_overrides[get_db] = lambda: TestDatabase(session)
    return app
