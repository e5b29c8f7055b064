"""Authentication and authorization as FastAPI dependencies: `Authorization: Bearer <key>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal, authenticate
from credit_hub.db import DbDep
from credit_hub.errors import Forbidden, Unauthorized
from credit_hub.ratelimit import limit_address, limit_client

_bearer = HTTPBearer(auto_error=False, description="An API key issued by an operator")


def current_client(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        limit_address(request)
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    with db.read() as session:
        principal = authenticate(session, credentials.credentials)
    if principal is None:
        limit_address(request)  # guessing keys costs the guesser's address its rate
        raise Unauthorized("The API key is unknown, revoked, or its client is disabled.")
    limit_client(request, principal.id)
    request.state.principal = principal
    return principal


ClientDep = Annotated[Principal, Depends(current_client)]


def _require(kind: ClientKind) -> object:
    def dependency(client: ClientDep) -> Principal:
        if client.kind != kind:
            raise Forbidden(f"This operation is for {kind} clients; this key is a {client.kind}'s.")
        return client

    return dependency


DepartmentDep = Annotated[Principal, Depends(_require(ClientKind.DEPARTMENT))]
AgencyDep = Annotated[Principal, Depends(_require(ClientKind.AGENCY))]
OperatorDep = Annotated[Principal, Depends(_require(ClientKind.OPERATOR))]
