"""Secrets and personal data: required secrets on a server database, API keys stored hashed
and compared in constant time, no clear ID number or key in logs, audit payloads or any body,
security headers on every answer, CORS off unless configured."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select
from sqlalchemy.orm import Session

from credit_hub.access import service as access
from credit_hub.access.models import ApiKey, ClientKind, Scope
from credit_hub.app import create_app
from credit_hub.audit.models import AuditEvent
from credit_hub.clock import FixedClock
from credit_hub.config import Settings
from credit_hub.db import get_db
from credit_hub.keyring import SECRET_NAMES, SecretsMissing, generate_env
from credit_hub.log import SECURITY_HEADERS
from tests import conftest, factories
from tests.conftest import Caller, register
from tests.objections.due_process import READ, START

PERSON_IDS = [factories.make_id_number(n, birth="19750315") for n in (11, 12)]
UNKNOWN_PERSON = factories.make_id_number(13, birth="19750315")
# An ID number with a wrong check character: rejected, and never echoed back.
BAD_CHECK = PERSON_IDS[0][:17] + ("0" if PERSON_IDS[0][17] != "0" else "1")


def _secrets() -> dict[str, str]:
    lines = dict(line.split("=", 1) for line in generate_env().splitlines())
    return {k.removeprefix("CREDIT_HUB_").lower(): v for k, v in lines.items()}


@pytest.mark.parametrize("missing", SECRET_NAMES)
def test_a_server_database_refuses_to_start_without_each_secret(missing: str) -> None:
    given = {k: v for k, v in _secrets().items() if k != missing}
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:1/none",
        webhooks_worker=False,
        worker_enabled=False,
        **given,  # type: ignore[arg-type]
    )
    with pytest.raises(SecretsMissing, match=f"CREDIT_HUB_{missing.upper()}"):
        create_app(settings)


def test_api_keys_are_stored_as_hashes_only(session: Session) -> None:
    caller = register(session, ClientKind.AGENCY)
    stored = session.scalars(select(ApiKey).where(ApiKey.client_id == caller.client.id)).one()
    assert stored.key_hash == hashlib.sha256(caller.key.encode()).hexdigest()
    assert caller.key.startswith(stored.prefix)
    assert len(stored.prefix) < len(caller.key) // 4  # the visible part, not the secret
    assert caller.key not in _every_stored_value(session)


def test_api_keys_are_compared_in_constant_time(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = register(session, ClientKind.AGENCY)
    compared: list[tuple[str, str]] = []
    real = access.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    assert access.authenticate(session, caller.key) is not None
    digest = hashlib.sha256(caller.key.encode()).hexdigest()
    assert compared == [(digest, digest)]
    assert access.authenticate(session, caller.key[:-1] + "x") is None


def _every_stored_value(session: Session) -> str:
    """Every row of every table, as text."""
    meta = MetaData()
    meta.reflect(session.connection())
    out: list[str] = []
    for table in meta.sorted_tables:
        for row in session.execute(select(table)):
            out.extend(str(v) for v in row)
    return "\n".join(out)


@dataclass
class Recorder:
    """Every answer the flow saw, with who asked and whether it may hold a clear ID."""

    seen: list[tuple[str, httpx.Response, bool]] = field(default_factory=list)


@contextmanager
def running_hub(settings: Settings, session: Session) -> Iterator[TestClient]:
    """The app, made inside the test body: the service logs to the sys.stderr of the moment
    create_app runs, and only the test body's stream is the one capfd reads."""
    quiet = settings.model_copy(
        update={"webhooks_worker": False, "log_json": True, "log_level": "debug"}
    )
    app = create_app(quiet, clock=FixedClock(START))
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)

    @app.post("/test/crash")
    def crash(body: dict[str, Any]) -> None:
        # An unexpected error whose message quotes the payload, as a driver's error might.
        raise RuntimeError(f"boom with {body}")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_no_clear_id_number_or_key_in_logs_audit_or_bodies(
    settings: Settings, session: Session, capfd: pytest.CaptureFixture[str]
) -> None:
    with running_hub(settings, session) as http:
        _scan_a_full_flow(http, session, capfd)


def _scan_a_full_flow(
    http: TestClient, session: Session, capfd: pytest.CaptureFixture[str]
) -> None:
    dept = register(session, ClientKind.DEPARTMENT, uscc=factories.DEPARTMENT_USCC)
    agency = register(session, ClientKind.AGENCY)
    privileged = register(session, ClientKind.AGENCY, scopes=[Scope.PERSONAL_DATA])
    operator = register(session, ClientKind.OPERATOR)
    recorder = Recorder()

    def call(
        caller: Caller | None, method: str, url: str, *, may_see_ids: bool = False, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {}) | (caller.headers if caller else {})
        response = http.request(method, url, headers=headers, **kw)
        recorder.seen.append((url, response, may_see_ids))
        return response

    people = [
        factories.person_penalty(20 + i, person_id_no=pid) for i, pid in enumerate(PERSON_IDS)
    ]
    pushed = call(
        dept, "POST", "/v1/records", json={"standard": "administrative_penalty", "records": people}
    )
    assert pushed.status_code == 201, pushed.text
    record_id = pushed.json()["records"][0]["record_id"]
    invalid = [factories.person_penalty(30, person_id_no=BAD_CHECK)]
    rejected = call(
        dept,
        "POST",
        "/v1/records",
        json={"standard": "administrative_penalty", "mode": "atomic", "records": invalid},
    )
    assert rejected.status_code == 422
    checked = call(
        None,
        "POST",
        "/v1/standards/administrative_penalty/validate",
        json={"records": invalid},
    )
    assert checked.status_code == 200
    ndjson = "\n".join(json.dumps(r, ensure_ascii=False) for r in [*invalid, people[0]])
    uploaded = call(
        dept,
        "POST",
        "/v1/submissions",
        params={"standard": "administrative_penalty", "format": "ndjson"},
        content=ndjson.encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert uploaded.status_code == 202, uploaded.text
    call(dept, "GET", f"/v1/records/{record_id}")
    call(dept, "GET", f"/v1/records/{record_id}/history")

    lookup = {"id_type": "身份证", "id_number": PERSON_IDS[0], **READ}
    assert call(agency, "POST", "/v1/subjects/lookup", json=lookup).status_code == 403
    found = call(privileged, "POST", "/v1/subjects/lookup", json=lookup, may_see_ids=True)
    assert found.status_code == 200
    assert PERSON_IDS[0] in found.text  # the scan can see a clear number when there is one
    person_id = found.json()["subject"]["id"]
    missing = call(
        privileged, "POST", "/v1/subjects/lookup", json=lookup | {"id_number": UNKNOWN_PERSON}
    )
    assert missing.status_code == 404
    screen = {"identifiers": [*PERSON_IDS, UNKNOWN_PERSON], **READ}
    call(agency, "POST", "/v1/profiles/screen", json=screen)
    call(privileged, "POST", "/v1/profiles/screen", json=screen, may_see_ids=True)
    call(agency, "GET", f"/v1/subjects/{person_id}/profile", params=READ)
    call(privileged, "GET", "/v1/subjects", params={"q": "王五"}, may_see_ids=True)
    call(agency, "GET", "/v1/changes")
    call(operator, "GET", "/v1/admin/audit")
    call(operator, "GET", f"/v1/subjects/{person_id}/access-log")

    # A subject's access code by ID number; the subject objects and reads its report.
    issued = call(
        operator,
        "POST",
        "/v1/admin/access-codes",
        json={"id_type": "身份证", "id_number": PERSON_IDS[0]},
    )
    assert issued.status_code == 201, issued.text
    session_opened = call(None, "POST", "/v1/self/session", json={"code": issued.json()["code"]})
    token = session_opened.json()["token"]
    subject = {"Authorization": f"Bearer {token}"}
    objection = call(
        None,
        "POST",
        "/v1/objections",
        json={"record_id": record_id, "reason": "身份证号码有误"},
        headers=subject,
    )
    assert objection.status_code == 201, objection.text
    call(None, "GET", "/v1/self/report", headers=subject)
    call(
        operator,
        "POST",
        "/v1/admin/access-codes",
        json={"id_type": "身份证", "id_number": UNKNOWN_PERSON},
    )
    call(operator, "POST", "/v1/admin/maintenance")

    # Errors: a revoked key, a bad key, malformed JSON, a crash quoting the payload.
    call(None, "GET", "/v1/admin/audit", headers={"Authorization": f"Bearer {dept.key}x"})
    call(
        dept,
        "POST",
        "/v1/records",
        content=b'{"records": [',
        headers={"Content-Type": "application/json"},
    )
    crash = call(None, "POST", "/test/crash", json={"id": PERSON_IDS[1], "key": operator.key})
    assert crash.status_code == 500

    logs = capfd.readouterr()
    assert "unhandled_exception" in logs.err  # the capture sees the service's log lines
    audit = [
        json.dumps(
            [e.payload, e.case_ref, e.purpose, e.result, e.action], ensure_ascii=False, default=str
        )
        for e in session.scalars(select(AuditEvent))
    ]
    secrets = [*PERSON_IDS, UNKNOWN_PERSON, BAD_CHECK]
    keys = [dept.key, agency.key, privileged.key, operator.key, token, issued.json()["code"]]
    leaks: list[str] = []
    for text, where in [(logs.out + logs.err, "logs"), ("\n".join(audit), "audit payloads")]:
        leaks += [f"{where}: {s[:8]}…" for s in [*secrets, *keys] if s in text]
    for url, response, may_see_ids in recorder.seen:
        body = response.text
        found_ids = [] if may_see_ids else [s for s in secrets if s in body]
        found_keys = [k for k in keys if k in body and not _answers_with(url, k)]
        leaks += [f"{url} ({response.status_code}): {s[:8]}…" for s in found_ids + found_keys]
    assert not leaks, "\n".join(leaks)
    stored = _every_stored_value(session)
    assert not [s for s in [*secrets, *keys] if s in stored], "a secret is stored in clear"


def _answers_with(url: str, secret: str) -> bool:
    """The routes that hand out a secret, once, by design."""
    return url in ("/v1/admin/access-codes", "/v1/self/session")


def test_security_headers_on_every_answer(settings: Settings, session: Session) -> None:
    with running_hub(settings, session) as http:
        _security_headers(http)


def _security_headers(http: TestClient) -> None:
    answers = [
        http.get("/healthz"),
        http.get("/v1/standards"),
        http.get("/v1/nowhere"),  # 404 from the router
        http.delete("/healthz"),  # 405
        http.get("/v1/admin/audit"),  # 401
        http.post("/v1/records", content=b"{", headers={"Content-Type": "application/json"}),
        http.post("/test/crash", json={}),  # 500 from an unexpected exception
    ]
    for response in answers:
        for name, value in SECURITY_HEADERS:
            assert response.headers[name.decode()], (response.status_code, name)
            if name != b"cache-control":
                assert response.headers[name.decode()] == value.decode()
        assert response.headers["x-request-id"]
    assert [r.status_code for r in answers] == [200, 200, 404, 405, 401, 401, 500]


def test_cors_is_off_unless_configured(settings: Settings, session: Session) -> None:
    preflight = {
        "Origin": "https://portal.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization",
    }
    quiet = settings.model_copy(update={"webhooks_worker": False})
    off = create_app(quiet)
    with TestClient(off) as client:
        answer = client.get("/healthz", headers={"Origin": "https://portal.example"})
        assert "access-control-allow-origin" not in answer.headers
        assert client.options("/v1/standards", headers=preflight).status_code == 405

    on = create_app(quiet.model_copy(update={"cors_origins": ["https://portal.example"]}))
    with TestClient(on) as client:
        answer = client.get("/healthz", headers={"Origin": "https://portal.example"})
        assert answer.headers["access-control-allow-origin"] == "https://portal.example"
        allowed = client.options("/v1/standards", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["x-content-type-options"] == "nosniff"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
