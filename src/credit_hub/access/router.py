"""Operators register clients and manage their keys under /v1/admin."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from sqlalchemy import select

from credit_hub.access import service
from credit_hub.access.auth import OperatorDep, forget_principals
from credit_hub.access.models import ApiKey, Client
from credit_hub.access.schemas import (
    ClientCreate,
    ClientCreated,
    ClientRead,
    ClientUpdate,
    KeyCreate,
    KeyCreated,
    KeyRead,
)
from credit_hub.audit import service as audit
from credit_hub.db import ReadSessionDep, SessionDep, utcnow
from credit_hub.errors import (
    Conflict,
    Forbidden,
    MalformedJson,
    NotFound,
    RequestInvalid,
    Unauthorized,
    problem_responses,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_COMMON = problem_responses(Unauthorized, Forbidden, RequestInvalid)
_WITH_BODY = problem_responses(MalformedJson, Unauthorized, Forbidden, RequestInvalid)


def _client_read(client: Client) -> ClientRead:
    return ClientRead.model_validate(client, from_attributes=True)


def _key_read(key: ApiKey) -> KeyRead:
    return KeyRead.model_validate(key, from_attributes=True)


def _check_standards(request: Request, standards: list[str]) -> None:
    known = request.app.state.standards.by_id
    unknown = [s for s in standards if s not in known]
    if unknown:
        raise RequestInvalid(
            f"Unknown standard(s): {', '.join(unknown)}.",
            errors=[
                {
                    "pointer": "/standards",
                    "code": "unknown_standard",
                    "message": f"{s!r} is not published.",
                }
                for s in unknown
            ],
        )


@router.post("/clients", status_code=201, response_model=ClientCreated, responses=_WITH_BODY)
def create_client(
    body: ClientCreate, request: Request, session: SessionDep, operator: OperatorDep
) -> ClientCreated:
    """Register a department, agency or operator; the answer holds its first API key, once."""
    _check_standards(request, body.standards)
    client = service.create_client(
        session,
        kind=body.kind,
        name=body.name,
        uscc=body.uscc,
        standards=body.standards,
        scopes=list(body.scopes),
        pushes_for=body.pushes_for,
    )
    api_key, key = service.issue_key(session, client, label="first key")
    audit.record(
        session,
        actor=operator,
        action="client.created",
        payload={"client_id": str(client.id), "kind": client.kind},
    )
    return ClientCreated(**_client_read(client).model_dump(), api_key=key, key=_key_read(api_key))


@router.get("/clients", response_model=list[ClientRead], responses=_COMMON)
def list_clients(session: ReadSessionDep, operator: OperatorDep) -> list[ClientRead]:
    """Every registered client."""
    return [_client_read(c) for c in session.scalars(select(Client).order_by(Client.created_at))]


@router.get(
    "/clients/{client_id}",
    response_model=ClientRead,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def get_client(client_id: uuid.UUID, session: ReadSessionDep, operator: OperatorDep) -> ClientRead:
    """One client."""
    return _client_read(service.get_client(session, client_id))


@router.patch(
    "/clients/{client_id}",
    response_model=ClientRead,
    responses=problem_responses(MalformedJson, Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def update_client(
    client_id: uuid.UUID,
    body: ClientUpdate,
    request: Request,
    session: SessionDep,
    operator: OperatorDep,
) -> ClientRead:
    """Rename a client, change its standards or scopes, disable or enable it."""
    client = service.get_client(session, client_id)
    if body.name is not None:
        client.name = body.name
    if body.standards is not None:
        _check_standards(request, body.standards)
        client.standards = body.standards
    if body.scopes is not None:
        client.scopes = list(body.scopes)
    if body.disabled is not None:
        client.disabled_at = utcnow() if body.disabled else None
    session.flush()
    forget_principals(request)
    audit.record(
        session,
        actor=operator,
        action="client.updated",
        payload={"client_id": str(client.id), "fields": sorted(body.model_dump(exclude_none=True))},
    )
    return _client_read(client)


@router.post(
    "/clients/{client_id}/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=problem_responses(
        MalformedJson, Unauthorized, Forbidden, NotFound, Conflict, RequestInvalid
    ),
)
def issue_key(
    client_id: uuid.UUID, body: KeyCreate, session: SessionDep, operator: OperatorDep
) -> KeyCreated:
    """Issue another API key for a client (shown once)."""
    client = service.get_client(session, client_id)
    api_key, key = service.issue_key(session, client, label=body.label)
    audit.record(
        session,
        actor=operator,
        action="key.issued",
        payload={"client_id": str(client.id), "key_id": str(api_key.id)},
    )
    return KeyCreated(**_key_read(api_key).model_dump(), api_key=key)


@router.get(
    "/clients/{client_id}/keys",
    response_model=list[KeyRead],
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def list_keys(
    client_id: uuid.UUID, session: ReadSessionDep, operator: OperatorDep
) -> list[KeyRead]:
    """A client's keys (prefixes only; a key is never shown again)."""
    service.get_client(session, client_id)
    keys = session.scalars(
        select(ApiKey).where(ApiKey.client_id == client_id).order_by(ApiKey.created_at)
    )
    return [_key_read(k) for k in keys]


@router.delete(
    "/clients/{client_id}/keys/{key_id}",
    response_model=KeyRead,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, RequestInvalid),
)
def revoke_key(
    client_id: uuid.UUID,
    key_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    operator: OperatorDep,
) -> KeyRead:
    """Revoke a key: it answers 401 from now on (within `auth_cache_seconds` on the other
    server processes)."""
    api_key = service.revoke_key(session, client_id, key_id)
    session.flush()
    forget_principals(request)
    audit.record(
        session,
        actor=operator,
        action="key.revoked",
        payload={"client_id": str(client_id), "key_id": str(key_id)},
    )
    return _key_read(api_key)
