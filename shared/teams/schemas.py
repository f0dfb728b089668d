"""Shapes of teams and keys over the admin API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.money import Money

SLUG = r"^[a-z0-9][a-z0-9_-]{1,62}$"
# Postgres `integer` columns: a larger number is a clear 422, not a driver error.
INT32 = 2**31 - 1
# Restricted keys, as Stripe's: a key may be limited to some of these; by default it has all.
SCOPES = ("jobs:read", "jobs:write", "webhooks", "usage:read")
Scope = Literal["jobs:read", "jobs:write", "webhooks", "usage:read"]
# A provider-side tool type the admin may allow a team to pass through (`function` always is).
ToolType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
CACHE_TTL_MAX = 30 * 24 * 3600
BillingMode = Literal["job", "usd", "tokens"]
BudgetPeriod = Literal["day", "week", "month"]
OnLimit = Literal["reject", "pause"]


class ModelPrice(BaseModel):
    """A team's billed price for one model, USD per token (instead of LiteLLM's + markup)."""

    model_config = ConfigDict(extra="forbid")

    input_cost_per_token: Money = Field(ge=0)
    output_cost_per_token: Money = Field(ge=0)


class MoneySettings(BaseModel):
    """Billing, budget and limit settings of a team (ARCHITECTURE section 6); all optional."""

    model_config = ConfigDict(extra="forbid")

    billing_mode: BillingMode | None = None
    enforce_credits: bool | None = Field(
        default=None, description="Refuse (or pause) work the available credits cannot cover."
    )
    credits_per_usd: Decimal | None = Field(default=None, gt=0, max_digits=20, decimal_places=10)
    tokens_per_credit: int | None = Field(default=None, ge=1)
    price_markup_pct: Decimal | None = Field(
        default=None, ge=0, le=10000, max_digits=20, decimal_places=10
    )
    model_prices: dict[str, ModelPrice] | None = None
    budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=10)
    budget_period: BudgetPeriod | None = None
    budget_thresholds: list[int] | None = Field(default=None, max_length=20)
    default_max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_n: int | None = Field(default=None, ge=1, le=128)
    max_tokens_cap: int | None = Field(default=None, ge=1, le=10_000_000)
    on_limit: OnLimit | None = None
    low_credits_threshold: Decimal | None = Field(
        default=None, ge=0, max_digits=20, decimal_places=10
    )
    monthly_allowance: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=10)

    def money_fields(self) -> dict[str, Any]:
        """The money settings that were given, as column values."""
        out = self.model_dump(exclude_unset=True, include=set(MoneySettings.model_fields))
        if "model_prices" in out:
            out["model_prices"] = {
                k: v.model_dump(mode="json") for k, v in (self.model_prices or {}).items()
            }
        if out.get("budget_thresholds") is not None:
            if any(not 0 < t <= 1000 for t in out["budget_thresholds"]):
                raise ValueError("budget_thresholds are percentages above 0, at most 1000")
            out["budget_thresholds"] = sorted(set(out["budget_thresholds"]))
        for key in (
            "billing_mode",
            "enforce_credits",
            "credits_per_usd",
            "tokens_per_credit",
            "price_markup_pct",
            "model_prices",
            "budget_period",
            "budget_thresholds",
            "default_max_tokens",
            "on_limit",
        ):
            if key in out and out[key] is None:
                del out[key]  # not nullable: null means "leave as is"
        return out


class TeamCreate(MoneySettings):
    model_config = ConfigDict(extra="forbid")

    team_id: str = Field(pattern=SLUG, description="Slug chosen by the admin.")
    name: str = Field(min_length=1, max_length=200)
    allowed_models: list[str] = Field(default_factory=list, max_length=500)
    max_requests_per_job: int | None = Field(default=None, ge=1, le=INT32)
    max_calls_in_flight: int | None = Field(default=None, ge=1, le=INT32)
    requests_per_minute: int | None = Field(default=None, ge=1, le=INT32)
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Delete request and response bodies of jobs ended longer ago (null: keep).",
    )
    allowed_tool_types: list[ToolType] = Field(
        default_factory=list,
        max_length=50,
        description="Provider-side tool types (e.g. web_search, mcp) this team may send.",
    )
    allow_file_ids: bool = Field(default=False, description="May send provider file ids.")
    cache_enabled: bool = Field(default=False, description="Serve repeated requests from cache.")
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=CACHE_TTL_MAX)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamUpdate(MoneySettings):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    allowed_models: list[str] | None = Field(default=None, max_length=500)
    max_requests_per_job: int | None = Field(default=None, ge=1, le=INT32)
    max_calls_in_flight: int | None = Field(default=None, ge=1, le=INT32)
    requests_per_minute: int | None = Field(default=None, ge=1, le=INT32)
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    allowed_tool_types: list[ToolType] | None = Field(default=None, max_length=50)
    allow_file_ids: bool | None = None
    cache_enabled: bool | None = None
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=CACHE_TTL_MAX)
    metadata: dict[str, Any] | None = None

    @field_validator(
        "name",
        "allowed_models",
        "allowed_tool_types",
        "allow_file_ids",
        "cache_enabled",
        "metadata",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Omit a field to keep it; these have no "unset" value (the limits above do: null).
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class TeamOut(BaseModel):
    object: Literal["team"] = "team"
    team_id: str
    name: str
    status: str
    allowed_models: list[str]
    max_requests_per_job: int | None
    max_calls_in_flight: int | None
    requests_per_minute: int | None
    retention_days: int | None
    allowed_tool_types: list[str]
    allow_file_ids: bool
    cache_enabled: bool
    cache_ttl_seconds: int | None = Field(description="None: the platform's default TTL.")
    credits_balance: Money
    credits_reserved: Money
    billing_mode: str
    enforce_credits: bool
    credits_per_usd: Money
    tokens_per_credit: int
    price_markup_pct: Money
    model_prices: dict[str, Any]
    budget_usd: Money | None
    budget_period: str
    budget_thresholds: list[int]
    default_max_tokens: int
    max_n: int | None
    max_tokens_cap: int | None
    on_limit: str
    low_credits_threshold: Money | None
    monthly_allowance: Money | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    expires_at: datetime | None = None
    scopes: list[Scope] | None = Field(
        default=None, min_length=1, description="Restrict the key to these scopes (default: all)."
    )


class KeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    team_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    scopes: list[str]


class KeyCreated(KeyOut):
    key: str = Field(description="The secret: shown once, never again.")


class TeamDataDeleted(BaseModel):
    object: Literal["team_data_deletion"] = "team_data_deletion"
    team_id: str
    jobs: int
    calls: int
    webhook_events: int
