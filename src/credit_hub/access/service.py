"""Rules of clients and keys: registration, key issue and revocation, authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from credit_hub.access.models import ApiKey, Client, ClientKind
from credit_hub.db import utcnow
from credit_hub.errors import Conflict, NotFound

KEY_PREFIX = "chk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, detached from any session."""

    id: uuid.UUID
    kind: str
    name: str
    uscc: str | None
    standards: frozenset[str]
    scopes: frozenset[str]
    pushes_for: frozenset[str]
    key_id: uuid.UUID | None = None

    def may_use(self, standard: str) -> bool:
        return standard in self.standards

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @classmethod
    def of(cls, client: Client, key_id: uuid.UUID | None = None) -> Principal:
        return cls(
            id=client.id,
            kind=client.kind,
            name=client.name,
            uscc=client.uscc,
            standards=frozenset(client.standards or ()),
            scopes=frozenset(client.scopes or ()),
            pushes_for=frozenset(client.pushes_for or ()),
            key_id=key_id,
        )


def hash_key(key: str) -> str:
    # API keys carry 256 random bits: a fast hash is enough, no password hashing needed.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key, visible prefix): the key is shown once; only its hash is stored."""
    visible = secrets.token_hex(4)
    return f"{KEY_PREFIX}{visible}_{secrets.token_urlsafe(32)}", f"{KEY_PREFIX}{visible}"


def create_client(
    session: Session,
    *,
    kind: ClientKind,
    name: str,
    uscc: str | None,
    standards: list[str],
    scopes: list[str],
    pushes_for: list[str],
) -> Client:
    client = Client(
        kind=kind, name=name, uscc=uscc, standards=standards, scopes=scopes, pushes_for=pushes_for
    )
    session.add(client)
    session.flush()
    return client


def issue_key(session: Session, client: Client, *, label: str | None = None) -> tuple[ApiKey, str]:
    if client.disabled_at is not None:
        raise Conflict("The client is disabled; enable it before issuing keys.")
    key, prefix = new_key()
    api_key = ApiKey(client_id=client.id, prefix=prefix, key_hash=hash_key(key), label=label)
    session.add(api_key)
    session.flush()
    return api_key, key


def get_client(session: Session, client_id: uuid.UUID) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"No client {client_id}.")
    return client


def revoke_key(session: Session, client_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    api_key = session.get(ApiKey, key_id)
    if api_key is None or api_key.client_id != client_id:
        raise NotFound(f"No key {key_id} for client {client_id}.")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
    return api_key


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key of an enabled client; None otherwise."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = hash_key(key)
    row = session.execute(
        select(ApiKey, Client)
        .join(Client, Client.id == ApiKey.client_id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if row is None:
        return None
    api_key, client = row
    # The index lookup found it; compare in constant time all the same.
    if not hmac.compare_digest(api_key.key_hash, digest):
        return None
    if api_key.revoked_at is not None or client.disabled_at is not None:
        return None
    return Principal.of(client, api_key.id)


def bootstrap_operator(session: Session, *, name: str = "operator") -> tuple[Client, str]:
    client = create_client(
        session,
        kind=ClientKind.OPERATOR,
        name=name,
        uscc=None,
        standards=[],
        scopes=[],
        pushes_for=[],
    )
    _, key = issue_key(session, client, label="bootstrap")
    return client, key
