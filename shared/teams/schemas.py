"""Shapes of teams and keys over the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import Money

SLUG = r"^[a-z0-9][a-z0-9_-]{1,62}$"
CACHE_TTL_MAX = 30 * 24 * 3600


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team_id: str = Field(pattern=SLUG, description="Slug chosen by the admin.")
    name: str = Field(min_length=1, max_length=200)
    allowed_models: list[str] = Field(default_factory=list, max_length=500)
    max_requests_per_job: int | None = Field(default=None, ge=1)
    max_calls_in_flight: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Delete request and response bodies of jobs ended longer ago (null: keep).",
    )
    cache_enabled: bool = Field(default=False, description="Serve repeated requests from cache.")
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=CACHE_TTL_MAX)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    allowed_models: list[str] | None = Field(default=None, max_length=500)
    max_requests_per_job: int | None = Field(default=None, ge=1)
    max_calls_in_flight: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    cache_enabled: bool | None = None
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=CACHE_TTL_MAX)
    metadata: dict[str, Any] | None = None


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


class KeyCreated(KeyOut):
    key: str = Field(description="The secret: shown once, never again.")


class TeamDataDeleted(BaseModel):
    object: Literal["team_data_deletion"] = "team_data_deletion"
    team_id: str
    jobs: int
    calls: int
    webhook_events: int
