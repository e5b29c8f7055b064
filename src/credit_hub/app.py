"""create_app(settings) -> FastAPI: state, routers, middleware and problem handlers."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from credit_hub import __version__
from credit_hub.access.auth import PrincipalCache
from credit_hub.access.router import router as admin_router
from credit_hub.audit.router import router as audit_router
from credit_hub.audit.service import Appender
from credit_hub.changes.delivery import Deliverer, DeliveryThread, make_http_client
from credit_hub.changes.router import router as changes_router
from credit_hub.changes.webhooks_router import router as subscriptions_router
from credit_hub.clock import Clock
from credit_hub.config import Settings, get_settings
from credit_hub.db import Database, make_engine, make_sessionmaker
from credit_hub.errors import (
    PROBLEM_BASE,
    BadRequest,
    install_problem_handlers,
    problem_responses,
)
from credit_hub.ingest.jobs import JobContext, Worker
from credit_hub.ingest.router import router as ingest_router
from credit_hub.ingest.schemas import RecordBatch
from credit_hub.ingest.submissions_router import router as submissions_router
from credit_hub.keyring import load_keyring
from credit_hub.log import RequestContextMiddleware, configure_logging
from credit_hub.migrate import head_revision
from credit_hub.objections import maintenance
from credit_hub.objections.router import router as due_process_router
from credit_hub.ops.router import router as ops_router
from credit_hub.pg_loop import LoopConnections
from credit_hub.profiles.router import direct_routes
from credit_hub.profiles.router import router as profiles_router
from credit_hub.ratelimit import make_limiter
from credit_hub.records.router import router as records_router
from credit_hub.selfservice.router import router as self_router
from credit_hub.standards.registry import Standards
from credit_hub.standards.router import router as standards_router
from credit_hub.standards.schemas import ValidateRequest
from credit_hub.subjects.router import router as subjects_router

DESCRIPTION = """
credit_hub is a public-credit data-exchange hub. Government departments push standardized
credit records (administrative licences and penalties, ...); the hub validates them against the
published data standards, stores every version, links each record to one subject and lets
partner agencies read a unified, audited profile per subject.

* **Authentication**: `Authorization: Bearer <api key>`; standards and ops need none.
* **Errors**: every error is RFC 9457 `application/problem+json` with a stable `type`; record
  errors list `index` (or `row`), `source_id`, JSON `pointer`, `code` and `message`.
* **Retries**: `429` and `503` (the database did not answer) carry `Retry-After`; a push retried
  with its `Idempotency-Key` is stored at most once.
"""

TAGS = [
    {"name": "standards", "description": "Published data standards (JSON Schema 2020-12)."},
    {"name": "ops", "description": "Liveness and readiness."},
    {
        "name": "ingestion",
        "description": "Departments push records: validated, normalized, "
        "versioned, with a signed receipt.",
    },
    {"name": "records", "description": "A department's records: read, history, withdraw."},
    {"name": "subjects", "description": "Search subjects; who read a subject's profile."},
    {
        "name": "profiles",
        "description": "Agencies: unified profiles for a declared purpose, "
        "person lookup, batch screening. Every read is audited.",
    },
    {"name": "admin", "description": "Operators: clients, API keys, the audit log."},
    {"name": "receipts", "description": "Keys to verify signed submission receipts offline."},
    {
        "name": "changes",
        "description": "Agencies follow changes: the feed, watch lists, signed webhooks.",
    },
    {
        "name": "due process",
        "description": "Objections and credit repair: filed by the subject or an operator, "
        "answered by the owning department, with due dates.",
    },
    {"name": "self", "description": "Data subjects: access codes, sessions, their own report."},
]

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri", "examples": [PROBLEM_BASE + "records-invalid"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "row": {"type": "integer"},
                    "source_id": {"type": ["string", "null"]},
                    "pointer": {"type": "string"},
                    "parameter": {"type": "string"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


GC_YOUNG_THRESHOLD = 20_000


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    http_client: httpx.Client | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # Loaded here, not in the lifespan: a broken standard or missing secret stops the boot.
    standards = Standards.load(settings.schemas_dir)
    keyring = load_keyring(settings)
    engine = make_engine(settings)
    # Outgoing calls (webhooks): explicit timeouts, redirects never followed.
    http = http_client or make_http_client(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What is loaded by now (modules, standards, compiled schemas) lives as long as the
        # process: keep it out of the cyclic collector's scans, and collect the youngest
        # generation less often (a 1,000-record batch allocates ~10^6 objects, nearly all freed
        # by reference counting). About a fifth of a batch's CPU went to collections.
        if settings.gc_tuning:
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        if settings.audit_group_commit:
            if engine.dialect.name == "postgresql":  # profile reads and their events
                app.state.pg_loop = LoopConnections(engine, settings.pool_size)
            app.state.audit_appender = Appender(
                app.state.db, plain_connection=True, loop_connections=app.state.pg_loop
            )
        stop = None
        if settings.maintenance_every_hours > 0:  # expiry and retention without a cron
            _, stop = maintenance.schedule(
                app.state.db,
                app.state.clock,
                every_hours=settings.maintenance_every_hours,
                at=settings.maintenance_at,
            )
        webhooks = None
        if settings.webhooks_worker:  # deliver the outbox from this process too
            webhooks = DeliveryThread(
                Deliverer(app.state.db, http, keyring, settings, app.state.clock)
            )
            webhooks.start()
        if settings.worker_enabled:  # file submissions: more workers run as `credit-hub worker`
            app.state.worker = Worker(
                app.state.db,
                JobContext.of(settings, standards, keyring, app.state.clock),
                name=f"serve:{os.getpid()}",
                poll_seconds=settings.worker_poll_seconds,
            )
            app.state.worker.start()
        yield
        if app.state.worker is not None:
            app.state.worker.stop()
        if app.state.audit_appender is not None:
            app.state.audit_appender.close()
        if app.state.pg_loop is not None:
            app.state.pg_loop.close()
        if webhooks is not None:
            webhooks.stop()
        if stop is not None:
            stop.set()
        if http_client is None:
            http.close()
        engine.dispose()

    app = FastAPI(
        title="credit_hub",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock or Clock()
    app.state.standards = standards
    app.state.keyring = keyring
    app.state.http = http
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.db = Database(app.state.sessionmaker)
    app.state.head_revision = head_revision(settings)
    app.state.worker = None
    app.state.principals = PrincipalCache(settings.auth_cache_seconds)
    app.state.audit_appender = None  # started by the lifespan (audit_group_commit)
    app.state.pg_loop = None  # PostgreSQL's connections for the event loop, with the appender
    app.state.rate_limiter = make_limiter(settings.rate_limit_per_second, settings.rate_limit_burst)

    install_problem_handlers(app)
    if settings.cors_origins:  # off unless configured; inside the request middleware: headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-None-Match"],
            expose_headers=["ETag", "Location", "X-Request-Id", "Retry-After"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_limits={"/v1/submissions": settings.max_upload_bytes},
        body_idle_seconds=settings.body_idle_timeout_seconds,
    )
    # The profile read first: routes are matched in order, and it is the busiest.
    app.router.routes[:0] = direct_routes()
    for router in (
        profiles_router,
        ops_router,
        standards_router,
        ingest_router,
        submissions_router,
        records_router,
        subjects_router,
        admin_router,
        audit_router,
        due_process_router,
        self_router,
        changes_router,
        subscriptions_router,
    ):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = PROBLEM_SCHEMA
            for model in (ValidateRequest, RecordBatch):
                schemas[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            # What the request middleware answers on any route: a NUL in the URL (400).
            for operations in spec["paths"].values():
                for operation in operations.values():
                    for status, entry in problem_responses(BadRequest).items():
                        operation["responses"].setdefault(str(status), entry)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
