"""Settings, read once from the environment (names follow the Railway guide)."""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_MASTER_KEY = "sk-dev-master-key"
# A fixed Fernet key so development works without setup; refused in production like every
# example below.
DEV_WEBHOOK_SECRETS_KEY = "ZGV2LW9ubHktd2ViaG9vay1zZWNyZXRzLWtleS0wMDA="
MIN_SECRET_LENGTH = 32
DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local", "test"})
_PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "your-",
    "your_",
    "placeholder",
    "sk-dev-",
    "example",
    "generate",
    "replace",
    "secure-random",
    "xxxxxx",
    "<",
    "...",
    "\u2026",
)
# Every key printed as an example in the deployment guide, the docs and the compose file.
KNOWN_EXAMPLE_SECRETS = frozenset(
    {
        DEV_MASTER_KEY,
        DEV_WEBHOOK_SECRETS_KEY,
        "sk-prod-1234567890abcdef",
        "sk-prod-8vN_zK2QmR4tX7wY3jL9pF1nH6cV5bA8",
        "sk-prod-CHANGE-ME-TO-SECURE-RANDOM-KEY",
        "sk-local-compose-master-key-change-me",
        "sk-proj-YOUR-OPENAI-KEY",
        "sk-ant-YOUR-ANTHROPIC-KEY",
    }
)


def secret_problem(value: str | None) -> str | None:
    """Why `value` is unfit to be a production secret, or None."""
    value = (value or "").strip()
    if not value:
        return "is missing"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if value in KNOWN_EXAMPLE_SECRETS:
        return "is an example key from the docs"
    lowered = value.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return "is a placeholder"
    if len(set(value)) < 8:
        return "is not random"
    return None


class Settings(BaseSettings):
    """Every setting of the API and the worker, grouped by prefix."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)
    _admin_key_set: bool = PrivateAttr(default=False)

    # Production unless told otherwise: `saas-llm up` and the tests select development.
    environment: str = "production"
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
    # The API's Redis pool: at most this many connections (each open event stream holds one);
    # a request waits up to the timeout for a free one, then gets 503.
    redis_max_connections: int = 100
    redis_pool_timeout_seconds: float = 2.0

    litellm_master_key: str = DEV_MASTER_KEY
    litellm_proxy_url: str = "http://127.0.0.1:4000"
    litellm_models_cache_seconds: float = 15.0
    # Response cache TTL for teams with caching on and no cache_ttl_seconds of their own.
    cache_default_ttl_seconds: int = 3600
    # `proxy`: calls go to the LiteLLM proxy over HTTP. `inprocess`: the worker runs LiteLLM's
    # Router itself, built from LITELLM_CONFIG_PATH (provider keys then live in the worker).
    llm_gateway: Literal["proxy", "inprocess"] = "proxy"
    litellm_config_path: str = "proxy/config.yaml"

    admin_api_key: str | None = None
    # Bearer token for /metrics; unset: /metrics answers 404 outside development.
    metrics_token: str | None = None
    # /docs, /redoc and /openapi.json; unset: on in development, off in production.
    docs_enabled: bool | None = None
    # Dashboard (/admin) and team portal (/portal) sessions: signed cookies. The signing secret
    # defaults to one derived from ADMIN_API_KEY, so every API process agrees on it.
    admin_session_secret: str | None = None
    admin_session_hours: float = 12.0
    admin_signin_max_failures: int = 5
    admin_signin_lockout_seconds: int = 900
    # Cookies carry `Secure` outside development (the platform is then behind HTTPS).
    admin_cookie_secure: bool | None = None
    portal_link_minutes: float = 15.0
    portal_session_hours: float = 24.0
    # Origins allowed to embed /portal in an iframe (CSP frame-ancestors), space-separated.
    portal_frame_ancestors: str = ""

    # Failed authentications (a key presented and refused) per window before 429; 0: no limit.
    auth_max_failures_per_address: int = 30
    auth_max_failures_per_key_prefix: int = 30
    auth_throttle_window_seconds: int = 60
    # Authenticated keys are cached per API process this long (0: off); a revoke, suspension or
    # team change drops them at once everywhere (shared/teams/keycache.py).
    auth_key_cache_seconds: float = 5.0

    # Open `GET /api/jobs/{id}/events` streams: per team (all API processes) and per process.
    events_max_streams_per_team: int = 10
    events_max_streams_per_process: int = 50

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
    # A running call's lease: its worker renews it every third of this while the call is in
    # flight, so a dead worker's calls are handed back this long after it stopped, whatever the
    # call's own timeout.
    worker_lease_seconds: float = 30.0
    # A queued call not started this long after it was due is enqueued again.
    worker_requeue_grace_seconds: float = 10.0
    # How often the retention cron deletes bodies past each team's `retention_days`.
    worker_retention_seconds: int = 600
    # Health port (worker/health.py): off unless set; Dockerfile.worker sets 8080.
    worker_health_port: int | None = None
    worker_health_host: str = "0.0.0.0"
    # Unhealthy once the event loop has not run for this long.
    worker_health_max_lag_seconds: float = 10.0
    # Development/tests only: how long SIGUSR1 blocks the event loop.
    worker_health_block_seconds: float = 5.0

    # Jobs and request limits.
    jobs_max_requests: int = 1000
    jobs_max_body_bytes: int = 5 * 1024 * 1024
    jobs_max_messages: int = 500
    # JSONL submissions (`Content-Type: application/x-ndjson`), as OpenAI's Batch API allows.
    jobs_max_jsonl_requests: int = 50_000
    jobs_max_jsonl_bytes: int = 200 * 1024 * 1024
    jobs_open_ttl_seconds: int = 24 * 3600
    jobs_call_wait_max_seconds: float = 120.0
    idempotency_ttl_seconds: int = 24 * 3600
    # Event streams re-read their job this often besides being woken by its notifications.
    jobs_events_poll_seconds: float = 2.0

    # Money (shared/billing): how long a submission waits for a budget or credit row lock before
    # it answers 503 (never 202 unchecked); a LiteLLM model cost map file (JSON) to price models
    # with, if not the one in the installed litellm package.
    billing_lock_timeout_ms: int = 3000
    billing_model_cost_map: str | None = None
    # Tests only (a production start refuses it): a file holding an offset in seconds that the
    # API and the workers add to the time for budget periods, so that they agree on "now".
    billing_clock_file: str | None = None

    # Webhooks (delivery lives in shared/webhooks).
    webhook_timeout_seconds: float = 15.0
    # Deliveries in flight per worker process, on the webhook queue's own consumer.
    webhook_max_concurrency: int = 50
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_allow_private_networks: bool = False
    webhook_secret_grace_seconds: int = 24 * 3600
    # Fernet keys (comma-separated, newest first) that encrypt signing secrets at rest.
    webhook_secrets_key: str | None = None
    # Name lookups of webhook hosts: deadline (within the attempt's timeout) and, for tests or
    # a private resolver, the nameservers to ask ("host" or "host:port", comma-separated).
    webhook_dns_timeout_seconds: float = 5.0
    webhook_dns_nameservers: str = ""
    webhook_disable_after_seconds: int = 5 * 24 * 3600
    # Due deliveries are also swept this often (new ones are picked up at once via NOTIFY).
    webhook_sweep_seconds: float = 5.0
    # Endpoints a team may register, and deliveries it may send again (redeliver + replay) a minute.
    webhook_max_endpoints_per_team: int = 20
    webhook_redeliveries_per_minute: int = 100

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        # An empty variable (compose's `${X:-}`) means unset.
        for name in ("admin_api_key", "metrics_token", "webhook_secrets_key", "billing_clock_file"):
            if not (getattr(self, name) or "").strip():
                setattr(self, name, None)
        self._admin_key_set = bool(self.admin_api_key)
        if not self.admin_api_key:
            self.admin_api_key = self.litellm_master_key
        if not self.webhook_secrets_key and self.is_development:
            self.webhook_secrets_key = DEV_WEBHOOK_SECRETS_KEY
        for origin in self.frame_ancestors:
            # Each becomes a CSP source: only scheme://host[:port] (a `*.` subdomain wildcard at
            # most), never `*`, a quoted keyword or a `;` that would add a directive.
            if not FRAME_ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"PORTAL_FRAME_ANCESTORS: {origin!r} is not an origin such as "
                    "https://app.example.com"
                )
        return self

    @property
    def session_secret(self) -> str:
        """The key that signs dashboard and portal cookies."""
        if self.admin_session_secret:
            return self.admin_session_secret
        base = (self.admin_api_key or self.litellm_master_key).encode()
        return hmac.new(base, b"saas-llm admin session", hashlib.sha256).hexdigest()

    @property
    def cookie_secure(self) -> bool:
        if self.admin_cookie_secure is not None:
            return self.admin_cookie_secure
        return not self.is_development

    @property
    def frame_ancestors(self) -> list[str]:
        return [o for o in self.portal_frame_ancestors.replace(",", " ").split() if o]

    @property
    def is_development(self) -> bool:
        return self.environment.strip().lower() in DEVELOPMENT_ENVIRONMENTS

    @property
    def docs_on(self) -> bool:
        return self.is_development if self.docs_enabled is None else self.docs_enabled

    @property
    def webhook_secret_keys(self) -> list[str]:
        """The Fernet keys, newest (the one that encrypts) first."""
        return [k.strip() for k in (self.webhook_secrets_key or "").split(",") if k.strip()]

    @property
    def dns_nameservers(self) -> list[str]:
        return [n.strip() for n in self.webhook_dns_nameservers.split(",") if n.strip()]

    def secret_values(self) -> list[str]:
        """Every configured secret (for log redaction), the database and Redis passwords too."""
        values = [
            self.litellm_master_key,
            self.admin_api_key or "",
            self.metrics_token or "",
            self.redis_password or "",
            *self.webhook_secret_keys,
        ]
        for url in (self.database_url, self.redis_url or ""):
            password = urlsplit(url).password if url else None
            if password:
                values.extend({password, unquote(password)})
        return [v for v in values if v]

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

    def production_problems(self) -> list[str]:
        """What makes this configuration unsafe for production, each naming its setting."""
        problems: list[str] = []
        checks: list[tuple[str, str | None]] = [("LITELLM_MASTER_KEY", self.litellm_master_key)]
        if self._admin_key_set:
            checks.append(("ADMIN_API_KEY", self.admin_api_key))
        if self.metrics_token is not None:
            checks.append(("METRICS_TOKEN", self.metrics_token))
        keys = self.webhook_secret_keys
        for index, key in enumerate(keys or [None]):
            name = "WEBHOOK_SECRETS_KEY" + (f" (key {index + 1})" if len(keys) > 1 else "")
            checks.append((name, key))
        for name, value in checks:
            problem = secret_problem(value)
            if problem is not None:
                problems.append(f"{name} {problem}")
        if keys and not any(p.startswith("WEBHOOK_SECRETS_KEY") for p in problems):
            from shared.crypto import invalid_keys

            problems.extend(f"WEBHOOK_SECRETS_KEY {p}" for p in invalid_keys(keys))
        if self.debug:
            problems.append("DEBUG is on")
        if self.webhook_allow_private_networks:
            problems.append("WEBHOOK_ALLOW_PRIVATE_NETWORKS is on")
        if self.billing_clock_file:
            problems.append("BILLING_CLOCK_FILE is set (a test-only clock)")
        return problems

    def check_production(self) -> None:
        """Refuse to start in production with an unfit secret or a development-only switch."""
        if self.is_development:
            return
        problems = self.production_problems()
        if problems:
            raise RuntimeError(
                f"refusing to start in {self.environment!r} (set ENVIRONMENT=development for "
                "local use): " + "; ".join(problems)
            )


FRAME_ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?")


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
