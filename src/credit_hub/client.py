"""A Python client of the hub's API on httpx, with retries that never duplicate a push.

    from credit_hub.client import CreditHub

    with CreditHub("https://hub.example", api_key) as hub:
        accepted = hub.upload_file("penalties.csv", standard="administrative_penalty")
        done = hub.wait_for_submission(accepted.submission_id)
        if done.progress.rejected:
            hub.download_errors(done.submission_id, "penalties.errors.csv")

Requests that answer 429 or 503, and network errors, are retried with exponential backoff
(honouring `Retry-After`). Pushes and uploads carry an `Idempotency-Key`, the same one on every
retry, so a retry after a lost answer returns the first submission instead of a second one.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson

from credit_hub.ingest.schemas import SubmissionReport
from credit_hub.ingest.submission_schemas import (
    FINAL,
    SubmissionAccepted,
    SubmissionPage,
    SubmissionRead,
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MEDIA_TYPES = {
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class ApiError(Exception):
    """The hub answered with a problem (RFC 9457): `status`, `type` and the whole body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


class CreditHub:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`http` may be any httpx.Client (FastAPI's TestClient is one); `transport` an
        httpx transport (tests pass httpx.MockTransport)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owned = http is None
        self.http = http or httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"User-Agent": "credit-hub-client"},
        )
        self.headers = headers
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep

    def __enter__(self) -> CreditHub:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.http.close()

    # -- the transport loop ------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = response.headers.get("retry-after", "")
            if after.isdigit():
                return float(min(float(after), self.max_backoff))
        cap = min(self.max_backoff, self.backoff * float(2**attempt))
        return cap / 2 + random.uniform(0, cap / 2)  # jitter: retries of many clients spread

    def request(
        self,
        method: str,
        path: str,
        *,
        content: Callable[[], Any] | None = None,
        expect: Sequence[int] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, retrying 429/502/503/504 and network errors; raise ApiError on a problem.
        `content` is a factory so that a streamed body starts over on each attempt."""
        headers = self.headers | kwargs.pop("headers", {})
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                body = content() if content is not None else None
                response = self.http.request(method, path, headers=headers, content=body, **kwargs)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    break
                response.close()
            self.sleep(self._delay(attempt, response))
            attempt += 1
        if response.status_code not in expect:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:500]}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    # -- ingestion ---------------------------------------------------------------------------

    def push_records(
        self,
        standard: str,
        records: Sequence[dict[str, Any]],
        *,
        version: str | None = None,
        mode: str = "partial",
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> SubmissionReport:
        """`POST /v1/records`. A 422 `records-invalid` raises ApiError carrying the report."""
        body: dict[str, Any] = {"standard": standard, "mode": mode, "records": list(records)}
        if version:
            body["version"] = version
        raw = orjson.dumps(body)
        key = idempotency_key or str(uuid.uuid4())
        response = self.request(
            "POST",
            "/v1/records",
            content=lambda: raw,
            params={"dry_run": "true"} if dry_run else None,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            expect=(200, 201),
        )
        return SubmissionReport.model_validate(response.json())

    def upload_file(
        self,
        path: str | Path,
        *,
        standard: str,
        version: str | None = None,
        mode: str = "partial",
        format: str | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
        idempotency_key: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        chunk_size: int = 1024 * 1024,
    ) -> SubmissionAccepted:
        """`POST /v1/submissions` with the file streamed as the raw body (never read whole)."""
        path = Path(path)
        size = path.stat().st_size
        params = {"standard": standard, "mode": mode, "filename": path.name}
        params |= {
            k: v
            for k, v in (
                ("version", version),
                ("format", format),
                ("encoding", encoding),
                ("sheet", sheet),
            )
            if v
        }

        def stream() -> Iterator[bytes]:
            with path.open("rb") as file:
                while chunk := file.read(chunk_size):
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    yield chunk

        response = self.request(
            "POST",
            "/v1/submissions",
            content=stream,
            params=params,
            headers={
                "Content-Type": MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                "Content-Length": str(size),
                "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
            },
            expect=(200, 202),
        )
        return SubmissionAccepted.model_validate(response.json())

    def get_submission(self, submission_id: uuid.UUID | str) -> SubmissionRead:
        response = self.request("GET", f"/v1/submissions/{submission_id}")
        return SubmissionRead.model_validate(response.json())

    def list_submissions(
        self, *, limit: int = 50, cursor: str | None = None, kind: str | None = None
    ) -> SubmissionPage:
        params: dict[str, Any] = {"limit": limit}
        params |= {k: v for k, v in (("cursor", cursor), ("kind", kind)) if v}
        response = self.request("GET", "/v1/submissions", params=params)
        return SubmissionPage.model_validate(response.json())

    def wait_for_submission(
        self,
        submission_id: uuid.UUID | str,
        *,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[SubmissionRead], None] | None = None,
    ) -> SubmissionRead:
        """Poll until the submission is final (or raise TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.get_submission(submission_id)
            if on_progress is not None:
                on_progress(found)
            if found.status in FINAL:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"submission {submission_id} is still {found.status}")
            self.sleep(poll_seconds)

    def download_errors(
        self,
        submission_id: uuid.UUID | str,
        dest: str | Path,
        *,
        format: str | None = None,
    ) -> Path:
        """Stream the rejected rows to `dest` (CSV or NDJSON, as the upload by default)."""
        dest = Path(dest)
        params = {"format": format} if format else None
        path = f"/v1/submissions/{submission_id}/errors"
        attempt = 0
        while True:
            try:
                with self.http.stream("GET", path, params=params, headers=self.headers) as answer:
                    if answer.status_code in RETRY_STATUSES and attempt < self.retries:
                        pass
                    elif answer.status_code != 200:
                        answer.read()
                        raise ApiError(answer.status_code, answer.json())
                    else:
                        with dest.open("wb") as out:
                            for chunk in answer.iter_bytes():
                                out.write(chunk)
                        return dest
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            self.sleep(self._delay(attempt, None))
            attempt += 1

    # -- reading -----------------------------------------------------------------------------

    def list_standards(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/standards").json()
        return result

    def validate(
        self, standard: str, records: Sequence[dict[str, Any]], *, version: str | None = None
    ) -> dict[str, Any]:
        """`POST /v1/standards/{id}/validate`: check records, store nothing."""
        body: dict[str, Any] = {"records": list(records)}
        if version:
            body["version"] = version
        raw = orjson.dumps(body)
        response = self.request(
            "POST",
            f"/v1/standards/{standard}/validate",
            content=lambda: raw,
            headers={"Content-Type": "application/json"},
        )
        result: dict[str, Any] = response.json()
        return result

    def get_record(self, record_id: uuid.UUID | str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/records/{record_id}").json()
        return result

    def record_history(self, record_id: uuid.UUID | str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/records/{record_id}/history").json()
        return result

    def withdraw_record(self, record_id: uuid.UUID | str, reason: str) -> dict[str, Any]:
        raw = orjson.dumps({"reason": reason})
        response = self.request(
            "POST",
            f"/v1/records/{record_id}/withdraw",
            content=lambda: raw,
            headers={"Content-Type": "application/json"},
        )
        result: dict[str, Any] = response.json()
        return result

    def search_subjects(
        self, q: str, *, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"q": q, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = self.request("GET", "/v1/subjects", params=params).json()
        return result

    def read_profile(
        self,
        key: str,
        *,
        purpose: str,
        case_ref: str,
        as_of: date | None = None,
        standards: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"purpose": purpose, "case_ref": case_ref}
        if as_of is not None:
            params["as_of"] = as_of.isoformat()
        if standards:
            params["standards"] = list(standards)
        if include:
            params["include"] = list(include)
        result: dict[str, Any] = self.request(
            "GET", f"/v1/subjects/{key}/profile", params=params
        ).json()
        return result

    def screen(
        self,
        identifiers: Sequence[str],
        *,
        purpose: str,
        case_ref: str,
        standards: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/profiles/screen`: up to 1,000 identifiers at once."""
        body: dict[str, Any] = {
            "identifiers": list(identifiers),
            "purpose": purpose,
            "case_ref": case_ref,
        }
        if standards:
            body["standards"] = list(standards)
        raw = orjson.dumps(body)
        response = self.request(
            "POST",
            "/v1/profiles/screen",
            content=lambda: raw,
            headers={"Content-Type": "application/json"},
        )
        result: dict[str, Any] = response.json()
        return result
