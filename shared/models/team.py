from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, Timestamps
from shared.models.status import TeamStatus


class Team(Timestamps, Base):
    """A customer of the platform."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[TeamStatus] = mapped_column(String(16), server_default="active")
    # Empty list: every model the proxy serves.
    allowed_models: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    max_requests_per_job: Mapped[int | None]
    max_calls_in_flight: Mapped[int | None]
    requests_per_minute: Mapped[int | None]
    # Request and response bodies of calls of jobs ended longer ago than this are deleted
    # (tokens, cost and billing are kept); None keeps them.
    retention_days: Mapped[int | None]
    # Passthrough beyond plain `function` tools, granted by the admin: provider-side tool types
    # (web_search, code_interpreter, mcp, ...) and file ids, which act with the operator's account.
    allowed_tool_types: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    allow_file_ids: Mapped[bool] = mapped_column(server_default=text("false"))
    # Response cache (shared/llm/cache.py): off unless the admin turns it on for the team.
    cache_enabled: Mapped[bool] = mapped_column(server_default=text("false"))
    cache_ttl_seconds: Mapped[int | None]
    # The ledger's last balance_after; reserved: held by admitted, unsettled jobs.
    credits_balance: Mapped[Decimal] = mapped_column(server_default="0")
    credits_reserved: Mapped[Decimal] = mapped_column(server_default="0")
    # Money settings (ARCHITECTURE section 6).
    billing_mode: Mapped[str] = mapped_column(String(8), server_default="job")
    enforce_credits: Mapped[bool] = mapped_column(server_default=text("false"))
    credits_per_usd: Mapped[Decimal] = mapped_column(server_default="100")
    tokens_per_credit: Mapped[int] = mapped_column(server_default="1000")
    price_markup_pct: Mapped[Decimal] = mapped_column(server_default="0")
    # {"model": {"input_cost_per_token": "..", "output_cost_per_token": ".."}}: billed prices.
    model_prices: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    budget_usd: Mapped[Decimal | None]
    budget_period: Mapped[str] = mapped_column(String(8), server_default="month")
    budget_thresholds: Mapped[list[Any]] = mapped_column(
        server_default=text("'[50, 80, 100]'::jsonb")
    )
    default_max_tokens: Mapped[int] = mapped_column(server_default="4096")
    max_n: Mapped[int | None]
    max_tokens_cap: Mapped[int | None]
    on_limit: Mapped[str] = mapped_column(String(8), server_default="reject")
    low_credits_threshold: Mapped[Decimal | None]
    low_credits_notified: Mapped[bool] = mapped_column(server_default=text("false"))
    monthly_allowance: Mapped[Decimal | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb")
    )


class ApiKey(Base):
    """A team key: only its SHA-256 and a short display prefix are stored."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_team_id_id", "team_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), server_default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # Restricted keys: NULL is every scope; otherwise the list of scopes this key may use.
    scopes: Mapped[list[Any] | None]
