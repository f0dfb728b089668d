"""Shapes of credits, the ledger, budgets and usage over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.money import Money


class CreditsChange(BaseModel):
    """An admin grant (positive, optionally expiring) or adjustment (either sign)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["grant", "adjustment"] = "grant"
    amount: Money = Field(max_digits=20, decimal_places=10)
    expires_at: datetime | None = None
    note: str = Field(default="", max_length=500)


class RefundIn(BaseModel):
    """An admin refund of a job's whole charge (once)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=500)


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["credit_entry"] = "credit_entry"
    id: int
    team_id: str
    kind: str
    amount: Money
    balance_after: Money
    job_id: str | None
    grant_id: str | None
    note: str
    created_at: datetime


class GrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object: Literal["credit_grant"] = "credit_grant"
    id: str
    amount: Money
    remaining: Money
    expires_at: datetime | None
    note: str
    created_at: datetime


class EntryPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[EntryOut]
    has_more: bool
    next_cursor: str | None


class CreditsOut(BaseModel):
    object: Literal["credits"] = "credits"
    team_id: str
    billing_mode: str
    balance: Money
    reserved: Money
    available: Money
    enforce_credits: bool
    on_limit: str
    grants: list[GrantOut]
    budget: dict[str, Any] | None
    entries: EntryPage


class UsageRow(BaseModel):
    group: str
    jobs: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Money
    billed_usd: Money
    credits: Money  # net of refunds


class UsageOut(BaseModel):
    object: Literal["usage"] = "usage"
    team_id: str | None
    group_by: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    data: list[UsageRow]
    total: UsageRow
