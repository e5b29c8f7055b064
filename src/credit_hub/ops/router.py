"""Liveness, readiness and the public key that verifies signed receipts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from credit_hub import ratelimit
from credit_hub.errors import ServiceUnavailable, problem_responses
from credit_hub.migrate import current_revision

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    database: str
    migration: str | None
    expected_migration: str | None


class PublicKey(BaseModel):
    key_id: str = Field(description="Short id of the key (first 16 hex chars of its SHA-256)")
    algorithm: str = Field(examples=["Ed25519"])
    public_key: str = Field(description="Raw 32-byte public key, base64")
    public_key_pem: str = Field(description="The same key as a PEM SubjectPublicKeyInfo")


class PublicKeys(BaseModel):
    keys: list[PublicKey]
    receipt_signing: str = Field(
        description="How receipts are signed: the signature covers the UTF-8 bytes of the "
        "receipt's `signed_payload` string, exactly as sent."
    )


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(ServiceUnavailable),
)
def readyz(request: Request) -> Any:
    """The database answers and its schema is at the newest migration."""
    state = request.app.state
    try:
        with state.engine.connect().execution_options(read_only=True) as connection:
            connection.execute(text("SELECT 1"))
            current = current_revision(connection)
    except Exception as exc:
        raise ServiceUnavailable(f"The database is unreachable ({type(exc).__name__}).") from None
    if current != state.head_revision:
        raise ServiceUnavailable(
            f"The database schema is at {current!r}, expected {state.head_revision!r}; "
            "run `credit-hub db upgrade`.",
        )
    return Readiness(
        status="ready", database="ok", migration=current, expected_migration=state.head_revision
    )


@router.get(
    "/v1/keys",
    response_model=PublicKeys,
    tags=["receipts"],
    dependencies=[Depends(ratelimit.by_address)],
)
def get_public_keys(request: Request) -> JSONResponse:
    """The hub's Ed25519 public key: verify a submission receipt offline with it."""
    keyring = request.app.state.keyring
    body = PublicKeys(
        keys=[
            PublicKey(
                key_id=keyring.key_id(),
                algorithm="Ed25519",
                public_key=keyring.public_key_b64(),
                public_key_pem=keyring.public_key_pem(),
            )
        ],
        receipt_signing="Ed25519 over the UTF-8 bytes of receipt.signed_payload",
    )
    return JSONResponse(body.model_dump(), headers={"Cache-Control": "public, max-age=3600"})
