"""credit_hub.client: retries (httpx.MockTransport) and the whole API through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from credit_hub.app import create_app
from credit_hub.client import ApiError, CreditHub
from credit_hub.config import Settings
from credit_hub.db import get_db
from credit_hub.ingest.jobs import JobContext, Worker
from tests import conftest, factories
from tests.conftest import Caller

REPORT = {
    "submission_id": "0190b2a0-0000-7000-8000-000000000001",
    "status": "accepted",
    "standard": "administrative_penalty",
    "version": "1.0",
    "mode": "partial",
    "counts": {"received": 1, "created": 1, "updated": 0, "unchanged": 0, "rejected": 0},
    "errors": [],
    "error_summary": [],
    "body_sha256": "0" * 64,
    "received_at": "2026-05-06T09:00:00Z",
}


def scripted(*answers: int | type[Exception]) -> tuple[CreditHub, list[httpx.Request], list[float]]:
    """A client whose transport answers with the given statuses (or raises), in order."""
    seen: list[httpx.Request] = []
    sleeps: list[float] = []
    script = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        answer = next(script)
        if isinstance(answer, type):
            raise answer("network down", request=request)
        if answer in (200, 201):
            return httpx.Response(answer, json=REPORT)
        headers = {"Retry-After": "2"} if answer == 429 else {}
        body = {"type": "about:blank", "title": "busy", "status": answer}
        return httpx.Response(answer, json=body, headers=headers)

    hub = CreditHub(
        "http://hub.test", "chk_key", transport=httpx.MockTransport(handler), sleep=sleeps.append
    )
    return hub, seen, sleeps


def test_a_push_is_retried_with_one_idempotency_key() -> None:
    hub, seen, sleeps = scripted(503, httpx.ConnectError, 429, 201)
    report = hub.push_records("administrative_penalty", [factories.penalty(1)])
    assert report.counts.created == 1
    assert len(seen) == 4
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(keys) == 1
    assert {r.content for r in seen} == {seen[0].content}
    assert seen[0].headers["authorization"] == "Bearer chk_key"
    # Exponential backoff with jitter, Retry-After honoured.
    assert 0.25 <= sleeps[0] <= 0.5
    assert 0.5 <= sleeps[1] <= 1.0
    assert sleeps[2] == 2.0


def test_retries_give_up_after_the_limit() -> None:
    hub, seen, _ = scripted(*([503] * 6))
    with pytest.raises(ApiError) as caught:
        hub.push_records("administrative_penalty", [factories.penalty(1)])
    assert caught.value.status == 503
    assert len(seen) == 6
    hub, seen, _ = scripted(*([httpx.ReadTimeout] * 6))
    with pytest.raises(httpx.ReadTimeout):
        hub.list_standards()


def test_client_errors_are_not_retried() -> None:
    hub, seen, _ = scripted(422)
    with pytest.raises(ApiError) as caught:
        hub.push_records("administrative_penalty", [{}])
    assert caught.value.status == 422
    assert len(seen) == 1


def test_an_upload_streams_the_file_again_on_retry(tmp_path: Path) -> None:
    path = tmp_path / "rows.ndjson"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(503)
        return httpx.Response(
            202,
            json={
                "submission_id": "0190b2a0-0000-7000-8000-000000000001",
                "status": "queued",
                "status_url": "/v1/submissions/x",
                "errors_url": "/v1/submissions/x/errors",
                "format": "ndjson",
                "encoding": "utf-8",
                "filename": "rows.ndjson",
                "size_bytes": 9000,
                "body_sha256": "0" * 64,
                "received_at": "2026-05-06T09:00:00Z",
            },
        )

    hub = CreditHub(
        "http://hub.test", "k", transport=httpx.MockTransport(handler), sleep=lambda _: None
    )
    sent: list[int] = []
    accepted = hub.upload_file(path, standard="administrative_penalty", on_bytes=sent.append)
    assert accepted.status == "queued"
    assert [len(r.content) for r in seen] == [9000, 9000]
    assert seen[0].headers["content-length"] == "9000"
    assert seen[0].headers["content-type"] == "application/x-ndjson"
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]
    assert seen[0].url.params["filename"] == "rows.ndjson"


# -- against the real app ----------------------------------------------------------------------


@pytest.fixture
def hub_app(settings: Settings, session: Session, tmp_path: Path) -> FastAPI:
    app = create_app(settings.model_copy(update={"spool_dir": tmp_path / "spool"}))
    app.dependency_overrides[get_db] = lambda: conftest.TestDatabase(session)
    return app


@pytest.fixture
def test_client(hub_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(hub_app, raise_server_exceptions=False) as client:
        yield client


def test_the_whole_api_through_the_client(
    hub_app: FastAPI,
    test_client: TestClient,
    session: Session,
    department: Caller,
    agency: Caller,
    tmp_path: Path,
) -> None:
    as_department = CreditHub("", http=test_client, sleep=lambda _: None)
    as_department.headers = department.headers
    as_agency = CreditHub("", http=test_client, sleep=lambda _: None)
    as_agency.headers = agency.headers

    assert {s["id"] for s in as_department.list_standards()} >= {"administrative_penalty"}
    checked = as_department.validate("administrative_penalty", [factories.penalty(1)])
    assert (checked["valid"], checked["invalid"]) == (1, 0)
    report = as_department.push_records("administrative_penalty", [factories.penalty(1)])
    assert report.counts.created == 1
    assert report.submission_id is not None
    record_id = report.records[0]["record_id"]
    assert as_department.get_record(record_id)["id"] == record_id
    assert len(as_department.record_history(record_id)["versions"]) == 1

    path = tmp_path / "penalties.ndjson"
    bad = factories.penalty(3, counterpart_uscc="914403001922038217")
    path.write_bytes(orjson.dumps(factories.penalty(2)) + b"\n" + orjson.dumps(bad) + b"\n")
    accepted = as_department.upload_file(path, standard="administrative_penalty")
    state = hub_app.state
    context = JobContext.of(state.settings, state.standards, state.keyring, state.clock)
    Worker(conftest.TestDatabase(session), context, name="test").run_until_idle()
    done = as_department.wait_for_submission(accepted.submission_id, poll_seconds=0)
    assert (done.status, done.progress.created, done.progress.rejected) == (
        "partially_accepted",
        1,
        1,
    )
    errors = as_department.download_errors(done.submission_id, tmp_path / "errors.ndjson")
    assert orjson.loads(errors.read_bytes().splitlines()[0])["_row"] == 2
    listed = as_department.list_submissions(kind="file")
    assert [s.submission_id for s in listed.items] == [done.submission_id]

    uscc = factories.penalty(1)["counterpart_uscc"]
    profile = as_agency.read_profile(uscc, purpose="procurement", case_ref="FJZC2026-G-001")
    assert profile["subject"]["uscc"] == uscc
    screened = as_agency.screen([uscc], purpose="procurement", case_ref="FJZC2026-G-001")
    assert screened["results"][0]["found"] is True
    assert as_agency.search_subjects(uscc)["items"]
    with pytest.raises(ApiError) as caught:
        as_agency.get_submission(done.submission_id)
    assert caught.value.status == 403
    withdrawn = as_department.withdraw_record(record_id, "处罚决定已被撤销")
    assert withdrawn["status"] == "withdrawn"
