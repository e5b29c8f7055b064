"""Who may act in due process: a data subject (session token) or a client (API key)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from credit_hub.access.auth import admit, principal_of
from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal
from credit_hub.clock import ClockDep
from credit_hub.db import DbDep
from credit_hub.errors import Forbidden, Unauthorized
from credit_hub.ratelimit import limit, limit_address
from credit_hub.selfservice import service

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key, or a data subject's session token (from POST /v1/self/session)",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of a due-process route: a client, or a data subject in a session."""

    client: Principal | None = None
    subject_id: uuid.UUID | None = None

    @property
    def kind(self) -> str:
        return "subject" if self.client is None else self.client.kind

    @property
    def is_subject(self) -> bool:
        return self.client is None

    @property
    def is_operator(self) -> bool:
        return self.client is not None and self.client.kind == ClientKind.OPERATOR


def current_actor(
    request: Request,
    db: DbDep,
    clock: ClockDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is not None and credentials.credentials.startswith(service.TOKEN_PREFIX):
        with db.read() as session:
            found = service.authenticate(session, credentials.credentials, now=clock.now())
        if found is None:
            limit_address(request)
            raise Unauthorized(
                "The subject session is unknown or has expired; redeem a new access code."
            )
        limit(request, f"subject:{found.subject_id}")
        return Actor(subject_id=found.subject_id)
    if credentials is None or credentials.scheme.lower() != "bearer":
        limit_address(request)
        raise Unauthorized("Send `Authorization: Bearer <api key>`.")
    return Actor(client=admit(request, principal_of(request, db, credentials.credentials)))


ActorDep = Annotated[Actor, Depends(current_actor)]


async def _subject_or_operator(actor: ActorDep) -> Actor:
    if not (actor.is_subject or actor.is_operator):
        raise Forbidden("This is for the data subject (access code) or an operator.")
    return actor


async def _subject(actor: ActorDep) -> Actor:
    if not actor.is_subject:
        raise Forbidden("This is for the data subject: redeem an access code at /v1/self/session.")
    return actor


SubjectOrOperatorDep = Annotated[Actor, Depends(_subject_or_operator)]
SubjectDep = Annotated[Actor, Depends(_subject)]
