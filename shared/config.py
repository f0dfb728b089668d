"""Settings, read once from the environment (names follow the Railway guide)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_MASTER_KEY = "sk-dev-master-key"
_PLACEHOLDER_MARKERS = ("change-me", "changeme", "your-", "placeholder", "sk-dev-")


class Settings(BaseSettings):
    """Every setting of the API and the worker, grouped by prefix."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    environment: str = "development"
    debug: bool = False
    host: str = "0.0.0.0"
    port: int = 8000

    database_url: str = "postgresql://postgres@127.0.0.1:5432/saas_llm"
    database_pool_size: int = 10
    database_max_overflow: int = 10
    database_echo: bool = False

    redis_url: str | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str | None = None
    # Commands retry through a Redis restart for about this many attempts (backoff capped at 2 s)
    # before the process gives up; the worker's default rides out a restart of up to ~1 minute.
    redis_retry_attempts: int = 30

    litellm_master_key: str = DEV_MASTER_KEY
    litellm_proxy_url: str = "http://127.0.0.1:4000"
    litellm_models_cache_seconds: float = 15.0

    admin_api_key: str | None = None

    # Worker: one arq task per call, tuned for I/O-bound work.
    worker_queue_name: str = "saas-llm:queue"
    worker_max_jobs: int = 200
    worker_poll_delay_seconds: float = 0.05
    worker_call_timeout_seconds: float = 300.0
    worker_max_attempts: int = 5
    worker_retry_base_seconds: float = 1.0
    worker_retry_max_seconds: float = 60.0
    worker_drain_seconds: float = 20.0
    worker_reconcile_seconds: int = 30
    # A running call whose worker stopped renewing it is handed back after its timeout plus this.
    worker_lease_grace_seconds: float = 30.0
    # A queued call not started this long after it was due is enqueued again.
    worker_requeue_grace_seconds: float = 10.0

    # Jobs and request limits.
    jobs_max_requests: int = 1000
    jobs_max_body_bytes: int = 5 * 1024 * 1024
    jobs_max_messages: int = 500
    jobs_open_ttl_seconds: int = 24 * 3600
    jobs_call_wait_max_seconds: float = 120.0
    idempotency_ttl_seconds: int = 24 * 3600
    # Event streams re-read their job this often besides being woken by its notifications.
    jobs_events_poll_seconds: float = 2.0

    # Webhooks (delivery lives in shared/webhooks).
    webhook_timeout_seconds: float = 15.0
    # Deliveries in flight per worker process, on the webhook queue's own consumer.
    webhook_max_concurrency: int = 50
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_allow_private_networks: bool = False
    webhook_secret_grace_seconds: int = 24 * 3600
    webhook_disable_after_seconds: int = 5 * 24 * 3600
    # Due deliveries are also swept this often (new ones are picked up at once via NOTIFY).
    webhook_sweep_seconds: float = 5.0

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.admin_api_key:
            self.admin_api_key = self.litellm_master_key
        return self

    @property
    def is_development(self) -> bool:
        return self.environment.lower() in {"development", "dev", "local", "test"}

    @property
    def effective_redis_url(self) -> str:
        """`REDIS_URL` if set, else one built from `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`."""
        if self.redis_url:
            return self.redis_url
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/0"

    @property
    def webhook_schedule(self) -> list[float]:
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]

    def insecure_secrets(self) -> list[str]:
        """Names of secrets that are missing or still a placeholder."""
        bad: list[str] = []
        for name in ("litellm_master_key", "admin_api_key"):
            value = (getattr(self, name) or "").strip()
            if len(value) < 16 or any(m in value.lower() for m in _PLACEHOLDER_MARKERS):
                bad.append(name.upper())
        return bad

    def check_production(self) -> None:
        """Refuse to start outside development with a missing or placeholder secret."""
        if self.is_development:
            return
        bad = self.insecure_secrets()
        if bad:
            raise RuntimeError(
                f"refusing to start in {self.environment!r}: missing or placeholder secret(s): "
                + ", ".join(bad)
            )


class DatabaseURL:
    """A Railway-style Postgres URL split into an asyncpg URL plus engine/driver options."""

    def __init__(self, raw: str) -> None:
        parts = urlsplit(raw.strip())
        scheme = parts.scheme.split("+", 1)[0]
        if scheme not in {"postgres", "postgresql"}:
            raise ValueError(f"DATABASE_URL must be a postgres URL, not {scheme!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.pool_size = int(query.pop("pool_size")) if "pool_size" in query else None
        self.max_overflow = int(query.pop("max_overflow")) if "max_overflow" in query else None
        self.sslmode = query.pop("sslmode", None) or query.pop("ssl", None)
        self.connect_args: dict[str, Any] = {}
        if self.sslmode and self.sslmode != "disable":
            # asyncpg understands libpq's sslmode names directly.
            self.connect_args["ssl"] = self.sslmode
        self._parts = parts
        self._query = query

    def url(self, driver: str = "asyncpg") -> str:
        return urlunsplit(
            (
                f"postgresql+{driver}",
                self._parts.netloc,
                self._parts.path,
                urlencode(self._query),
                "",
            )
        )

    @property
    def database(self) -> str:
        return self._parts.path.lstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
