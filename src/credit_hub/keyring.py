"""The hub's own secrets: the personal-data encryption key, the person HMAC secret and the
Ed25519 key that signs submission receipts.

On the embedded SQLite default, any secret not set in the environment is generated once and
kept in a 0600 file beside the database, so a first start needs no set-up. On a server database
every secret must come from the environment: the service refuses to start otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from credit_hub.config import Settings

SECRET_NAMES = ("personal_data_key", "person_hmac_secret", "signing_key")


class SecretsMissing(RuntimeError):
    """A server database without explicit secrets: refuse to start."""


@dataclass(frozen=True)
class Keyring:
    fernet: Fernet
    hmac_secret: bytes
    signing_key: Ed25519PrivateKey

    def person_key(self, kind: str, id_number: str) -> str:
        """Keyed hash of a normalized personal identifier: stable, irreversible without the key."""
        message = f"{kind}\x1f{id_number}".encode()
        return hmac.new(self.hmac_secret, message, hashlib.sha256).hexdigest()

    def keyed_digest(self, data: bytes) -> str:
        """Content hash of data that may hold personal identifiers (plain SHA-256 is guessable)."""
        return hmac.new(self.hmac_secret, data, hashlib.sha256).hexdigest()

    def encrypt(self, data: bytes) -> bytes:
        return self.fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes | None:
        try:
            return self.fernet.decrypt(token)
        except InvalidToken:
            return None

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.signing_key.sign(data)).decode()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def public_key_b64(self) -> str:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def key_id(self) -> str:
        return hashlib.sha256(self.public_key_b64().encode()).hexdigest()[:16]


def _generate() -> dict[str, str]:
    signing = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return {
        "personal_data_key": Fernet.generate_key().decode(),
        "person_hmac_secret": secrets.token_urlsafe(32),
        "signing_key": base64.b64encode(signing).decode(),
    }


def _secrets_file(settings: Settings) -> Path:
    if settings.secrets_file is not None:
        return settings.secrets_file
    url = settings.database_url
    db_path = url.split("///", 1)[1] if "///" in url else ""
    if db_path and db_path != ":memory:":
        return Path(db_path).with_suffix(".secrets.json")
    return Path("credit_hub.secrets.json")


def _stored_secrets(path: Path) -> dict[str, str]:
    """The embedded default's secrets file, created once: with O_EXCL, so that two worker
    processes starting together cannot both write (and one of them lose) a fresh set."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                json.dump(_generate(), out, indent=2)
    for _ in range(50):  # a concurrent creator may still be writing it
        try:
            stored: dict[str, str] = json.loads(path.read_text())
        except json.JSONDecodeError:
            time.sleep(0.05)
            continue
        if all(name in stored for name in SECRET_NAMES):
            return stored
        break
    raise SecretsMissing(f"The secrets file {path} is incomplete or unreadable.")


def load_keyring(settings: Settings) -> Keyring:
    given = {
        name: value.get_secret_value()
        for name in SECRET_NAMES
        if (value := getattr(settings, name)) is not None
    }
    missing = [n for n in SECRET_NAMES if n not in given]
    if missing and not settings.is_sqlite:
        names = ", ".join(f"CREDIT_HUB_{n.upper()}" for n in missing)
        raise SecretsMissing(
            f"A server database needs explicit secrets; set {names} "
            "(`credit-hub secrets generate` prints a fresh set)."
        )
    if missing:
        stored = _stored_secrets(_secrets_file(settings))
        given = {n: stored[n] for n in missing} | given
    return Keyring(
        fernet=Fernet(given["personal_data_key"].encode()),
        hmac_secret=given["person_hmac_secret"].encode(),
        signing_key=Ed25519PrivateKey.from_private_bytes(base64.b64decode(given["signing_key"])),
    )


def generate_env() -> str:
    """A fresh set of secrets as environment assignments (for `credit-hub secrets generate`)."""
    return "\n".join(f"CREDIT_HUB_{k.upper()}={v}" for k, v in _generate().items())
