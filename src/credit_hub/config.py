"""The one settings object: every knob is an environment variable prefixed CREDIT_HUB_."""

from __future__ import annotations

from datetime import time
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
    # Browser origins allowed to call the API (CORS); empty, the default: no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)

    max_body_bytes: int = 32 * 1024 * 1024
    max_batch_records: int = 10_000
    max_json_depth: int = 32
    max_validate_records: int = 1_000
    # Requests per second per API client (per address without a key), `burst` saved up; 0 turns
    # it off. Kept in each server process: with N workers a client may get up to N times this.
    rate_limit_per_second: float = Field(default=0, ge=0)
    rate_limit_burst: int = Field(default=20, ge=1)
    # Slow clients: idle seconds allowed between two pieces of a request body (408 after;
    # 0 waits forever), and between two requests on a keep-alive connection (uvicorn).
    body_idle_timeout_seconds: float = Field(default=30, ge=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    idempotency_ttl_hours: int = 24
    # How long a server process trusts a key it has checked (revocation reaches the other
    # worker processes within this time; 0 checks every request).
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Audit events of concurrent reads appended together, one commit for all (docs/architecture.md).
    audit_group_commit: bool = True
    # Server processes: freeze what start-up loaded and collect garbage less often (app.py).
    gc_tuning: bool = True

    purposes: list[str] = Field(default_factory=lambda: list(DEFAULT_PURPOSES))
    pool_size: int = 10

    # File submissions (docs/bulk-submissions.md).
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    spool_dir: Path | None = None  # default: `credit_hub_spool` beside the SQLite file, or ./
    worker_enabled: bool = True  # the in-process job worker; `credit-hub worker` runs more
    worker_poll_seconds: float = 1.0
    job_chunk_rows: int = 1_000
    job_lease_seconds: int = 60
    job_max_attempts: int = 3
    xlsx_max_uncompressed_bytes: int = 1024 * 1024 * 1024
    xlsx_max_ratio: int = 200

    # Change feed, watch lists and webhooks (docs/change-feed.md).
    changes_max_limit: int = 1000
    watchlist_max: int = 100_000
    webhooks_worker: bool = True  # deliver from the outbox in a thread of each server process
    webhooks_allow_loopback: bool = False  # development: http:// and 127.0.0.1 receivers
    webhooks_allow_private: bool = False  # private, link-local and reserved addresses
    webhooks_connect_timeout: float = 3.0
    webhooks_read_timeout: float = 10.0
    webhooks_concurrency: int = 16
    webhooks_batch: int = 500
    webhooks_poll_seconds: float = 0.2  # the first wait after a round that found nothing due
    webhooks_idle_poll_seconds: float = 1.0  # the longest: idle waits double up to it
    webhooks_lease_seconds: float = (
        60.0  # a claimed delivery is retried after this if its worker dies
    )
    webhooks_retry_base_seconds: float = 10.0
    webhooks_retry_max_seconds: float = 3600.0
    webhooks_max_attempts: int = 12
    webhooks_disable_after: int = (
        50  # consecutive failed attempts before a subscription is disabled
    )

    # Due process (see docs/due-process.md).
    access_code_days: int = Field(default=14, ge=1)
    subject_session_minutes: int = Field(default=30, ge=1)
    objection_due_days: int = Field(default=20, ge=1)
    repair_decision_working_days: int = Field(default=3, ge=1)
    repair_case_working_days: int = Field(default=10, ge=1)
    # The in-process maintenance schedule (expiry, retention purge): at `maintenance_at` (UTC,
    # the hub's calendar day) and every `maintenance_every_hours` from there; 0 turns it off.
    maintenance_every_hours: float = Field(default=24, ge=0)
    maintenance_at: time = time(0, 10)

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

    @property
    def upload_dir(self) -> Path:
        """Where uploads are spooled: a folder every worker process can read."""
        if self.spool_dir is not None:
            return self.spool_dir
        if self.is_sqlite:
            database = self.database_url.split("///", 1)[-1]
            if database and database != ":memory:":
                return Path(database).resolve().parent / "credit_hub_spool"
        return Path("credit_hub_spool").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
