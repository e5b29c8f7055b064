"""API models of clients and keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from credit_hub.access.models import ClientKind, Scope
from credit_hub.subjects.identifiers import IdentifierError, parse_uscc


class ClientCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "department",
                    "name": "福州市市场监督管理局",
                    "uscc": "11350100MB0123456X",
                    "standards": ["administrative_penalty", "administrative_licensing"],
                    "scopes": [],
                }
            ]
        },
    )

    kind: ClientKind
    name: str = Field(min_length=1, max_length=200)
    uscc: str | None = Field(
        default=None, description="The client's own USCC (government organs hold one)"
    )
    standards: list[str] = Field(
        default_factory=list, description="Standards it may push (department) or read (agency)"
    )
    scopes: list[Scope] = Field(default_factory=list)
    pushes_for: list[str] = Field(
        default_factory=list,
        description="USCCs of other organs whose records this department may push",
    )

    @field_validator("uscc")
    @classmethod
    def _uscc(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_uscc(value)
        except IdentifierError as exc:
            raise ValueError(exc.message) from None

    @field_validator("pushes_for")
    @classmethod
    def _pushes_for(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                out.append(parse_uscc(value))
            except IdentifierError as exc:
                raise ValueError(f"{value!r}: {exc.message}") from None
        return out


class ClientUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    standards: list[str] | None = None
    scopes: list[Scope] | None = None
    disabled: bool | None = None


class KeyRead(BaseModel):
    id: uuid.UUID
    prefix: str = Field(description="The visible start of the key, to recognise it in logs")
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyRead):
    api_key: str = Field(description="The key itself: shown this once, stored only as a hash")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=200)


class ClientRead(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    uscc: str | None
    standards: list[str]
    scopes: list[str]
    pushes_for: list[str]
    created_at: datetime
    disabled_at: datetime | None


class ClientCreated(ClientRead):
    api_key: str = Field(description="The client's first API key: shown this once")
    key: KeyRead
