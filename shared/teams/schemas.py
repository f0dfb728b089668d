"""Shapes of teams and keys over the admin API."""

from __future__ import annotations

from datetime import datetime
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


class TeamCreate(BaseModel):
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


class TeamUpdate(BaseModel):
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

    @field_validator("name", "allowed_models", "allowed_tool_types", "allow_file_ids", "metadata")
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
