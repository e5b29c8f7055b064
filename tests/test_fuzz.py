"""Property-based API fuzzing: schemathesis drives every operation of /openapi.json with valid
and invalid inputs, as every kind of caller, and checks each answer against the document.

Pass condition: no 5xx; every status, media type, header and body is the documented one;
negative data is rejected; every error is application/problem+json and carries the security
headers. Sizes come from the environment, so `bench/fuzz.sh` runs the same test for longer:

    CREDIT_HUB_FUZZ_EXAMPLES   examples per operation, caller and mode (CI: 6)
    CREDIT_HUB_FUZZ_SEED       a seed for a random run (CI: derandomized, reproducible)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi
from sqlalchemy.orm import Session

from credit_hub.access.models import ClientKind, Scope
from credit_hub.access.service import Principal
from credit_hub.app import create_app
from credit_hub.clock import Clock
from credit_hub.config import Settings
from credit_hub.db import get_db
from credit_hub.errors import PROBLEM_MEDIA_TYPE
from credit_hub.log import SECURITY_HEADERS
from credit_hub.selfservice import service as selfservice
from credit_hub.subjects.models import Subject
from tests import conftest, factories
from tests.conftest import register

EXAMPLES = int(os.environ.get("CREDIT_HUB_FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("CREDIT_HUB_FUZZ_SEED")

CALLERS = ("none", "department", "agency", "agency_personal_data", "operator", "subject")
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def problem_json_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error answer is RFC 9457 problem+json with type, title and the status sent."""
    if response.status_code < 400:
        return None
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    assert media_type == PROBLEM_MEDIA_TYPE, f"error answered as {media_type!r}"
    body = response.json()
    assert isinstance(body, dict), "a problem is a JSON object"
    assert body.get("status") == response.status_code, "problem status differs from HTTP status"
    assert isinstance(body.get("type"), str)
    assert isinstance(body.get("title"), str)
    return True


def security_headers(ctx: Any, response: Any, case: Any) -> bool | None:
    """The middleware's headers are on every answer, errors included."""
    for name, value in SECURITY_HEADERS:
        if name == b"cache-control":  # some routes set their own caching on purpose
            continue
        got = response.headers.get(name.decode(), [None])[0]
        assert got == value.decode(), f"{name.decode()} is {got!r}"
    return True


CHECKS: list[Callable[..., bool | None]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXTRA_CHECKS: list[Callable[..., bool | None]] = [problem_json_errors, security_headers]


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    found = Tally()
    yield found
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and found.requests:
        reporter.write_line(
            f"fuzz: {found.requests} requests, statuses "
            f"{dict(sorted(found.statuses.items()))}, {len(found.failures)} distinct failures"
        )


@pytest.fixture
def fuzz_app(settings: Settings, session: Session) -> Iterator[FastAPI]:
    # No background threads: the ASGI client keeps the lifespan running until shut down.
    quiet = settings.model_copy(update={"webhooks_worker": False})
    app = create_app(quiet)
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    seed_records(app, session)
    yield app
    asgi.shutdown_lifespans()


def seed_records(app: FastAPI, session: Session) -> None:
    """Records of an enterprise and a natural person, so that lists, feeds and profiles
    answer with data the response schemas are checked against."""
    pusher = register(session, ClientKind.DEPARTMENT, uscc=factories.DEPARTMENT_USCC)
    records = [factories.penalty(1), factories.licence(2), factories.person_penalty(3)]
    for record in records:
        standard = "administrative_licensing" if "license_category" in record else None
        pushed = TestClient(app).post(  # no lifespan: the fuzzer's client runs it
            "/v1/records",
            json={"standard": standard or "administrative_penalty", "records": [record]},
            headers=pusher.headers,
        )
        assert pushed.status_code == 201, pushed.text


def caller_headers(session: Session, kind: str) -> dict[str, str]:
    """The Authorization header of one kind of caller (registered inside the test's
    transaction)."""
    if kind == "none":
        return {}
    if kind == "subject":
        subject = Subject(kind="enterprise", uscc=factories.make_uscc(990), name="模糊测试有限公司")
        session.add(subject)
        session.flush()
        operator = register(session, ClientKind.OPERATOR)
        _, code = selfservice.issue_code(
            session, subject.id, operator=Principal.of(operator.client), now=Clock().now(), days=1
        )
        _, token = selfservice.redeem(session, code, now=Clock().now(), minutes=60)
        return {"Authorization": f"Bearer {token}"}
    if kind == "department":
        caller = register(session, ClientKind.DEPARTMENT, uscc=factories.DEPARTMENT_USCC)
    elif kind == "agency":
        caller = register(session, ClientKind.AGENCY)
    elif kind == "agency_personal_data":
        caller = register(
            session, ClientKind.AGENCY, scopes=[Scope.PERSONAL_DATA, Scope.UNPUBLISHED]
        )
    else:
        caller = register(session, ClientKind.OPERATOR)
    return caller.headers


def _fuzz_operation(
    operation: Any, mode: GenerationMode, headers: dict[str, str], tally: Tally, label: str
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        tally.requests += 1
        try:
            response = case.call(headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # the transport failed: an app crash
            tally.failures[(label, case.operation.label, "call")] = repr(exc)
            return
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(
                response, checks=CHECKS, additional_checks=EXTRA_CHECKS, headers=headers
            )
        except (Exception, BaseExceptionGroup) as exc:
            key = (label, case.operation.label, type(exc).__name__)
            tally.failures.setdefault(key, f"{exc}\n  {case.as_curl_command()}")

    if SEED:
        run = seed(int(SEED))(run)
    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): the positive run covers it.
        assert mode is GenerationMode.NEGATIVE


@pytest.mark.parametrize("kind", CALLERS)
def test_fuzz_every_operation(fuzz_app: FastAPI, session: Session, kind: str, tally: Tally) -> None:
    headers = caller_headers(session, kind)
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    # The caller's own Authorization header is sent with every case: generating (or leaving
    # out) one would make a negative case that the real header then makes valid again.
    schema.config.generation.update(with_security_parameters=False)
    before = len(tally.failures)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in MODES:
            _fuzz_operation(operation, mode, headers, tally, kind)
    assert operations >= 50, "the OpenAPI document lost operations"
    failures = {k: v for k, v in list(tally.failures.items())[before:]}
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_openapi_documents_every_error_as_a_problem(fuzz_app: FastAPI) -> None:
    """The document itself: no FastAPI default 422 (its body is not what we send), a 400 on
    every operation with a body (malformed JSON), a 401 on every authenticated one."""
    document = fuzz_app.openapi()
    missing: list[str] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            label = f"{method.upper()} {path}"
            for status, response in responses.items():
                if int(status) >= 400:
                    content = response.get("content", {})
                    if list(content) != [PROBLEM_MEDIA_TYPE]:
                        missing.append(f"{label}: {status} is not problem+json")
            if "requestBody" in operation and "400" not in responses:
                missing.append(f"{label}: no 400 for a malformed body")
            if operation.get("security") and "401" not in responses:
                missing.append(f"{label}: no 401")
    assert not missing, "\n".join(missing)
