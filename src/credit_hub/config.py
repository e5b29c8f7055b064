"""The one settings object: every knob is an environment variable prefixed CREDIT_HUB_."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent.parent


def _bundled(name: str) -> Path:
    """A data folder shipped inside the wheel (`_name`) or beside the source tree (`name`)."""
    inside = PACKAGE_DIR / f"_{name}"
    return inside if inside.is_dir() else SOURCE_ROOT / name


DEFAULT_PURPOSES = [
    "procurement",
    "licensing_review",
    "credit_service",
    "financial_services",
    "law_enforcement",
    "supervision",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREDIT_HUB_", extra="ignore")

    database_url: str = "sqlite:///./credit_hub.db"
    schemas_dir: Path = Field(default_factory=lambda: _bundled("schemas"))
    migrations_dir: Path = Field(default_factory=lambda: _bundled("migrations"))

    # Secrets. On the embedded SQLite default, missing ones are generated once into
    # `secrets_file`; a server database refuses to start without them (see secrets.py).
    personal_data_key: SecretStr | None = None
    person_hmac_secret: SecretStr | None = None
    signing_key: SecretStr | None = None
    secrets_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    log_json: bool = False
    public_url: str = "http://127.0.0.1:8000"

    max_body_bytes: int = 32 * 1024 * 1024
    max_batch_records: int = 10_000
    max_json_depth: int = 32
    max_validate_records: int = 1_000
    idempotency_ttl_hours: int = 24

    purposes: list[str] = Field(default_factory=lambda: list(DEFAULT_PURPOSES))
    pool_size: int = 10

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
