"""Shapes of webhook endpoints, events, deliveries and attempts over the team API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

EventType = Literal[
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.expired",
    "job.paused",
    "job.resumed",
    "budget.threshold_crossed",
    "credits.low",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    description: str = Field(default="", max_length=500)
    event_types: list[EventType] = Field(
        default_factory=list, description="Events to send; empty: every event."
    )
    enabled: bool = True


class EndpointUpdate(BaseModel):
    """Fields to change; enabling a disabled endpoint clears its failure state."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl | None = None
    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] | None = None
    enabled: bool | None = None


class EndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    """An endpoint as created, with its signing secret."""

    secret: str


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EndpointOut]
    has_more: bool
    next_cursor: str | None


class SecretOut(BaseModel):
    """A signing secret; after a rotation the previous one also signs until the given time."""

    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str
    previous_secret_expires_at: datetime | None = None


class EventOut(BaseModel):
    object: Literal["webhook_event"] = "webhook_event"
    id: str = Field(description="The `webhook-id` of every delivery of this event.")
    type: str
    job_id: str | None
    payload: dict[str, Any]
    created_at: datetime


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None


class DeliveryOut(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    event_id: str
    endpoint_id: str | None = Field(description="None for a job's own `webhook_url`.")
    target: Literal["endpoint", "job_url"]
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryOut]
    has_more: bool
    next_cursor: str | None


class AttemptOut(BaseModel):
    object: Literal["webhook_attempt"] = "webhook_attempt"
    id: str
    delivery_id: str
    event_id: str
    endpoint_id: str | None
    attempt: int
    url: str
    status_code: int | None
    latency_ms: int | None
    response_body: str | None = Field(description="The first 2 KB of the answer.")
    error: str | None
    created_at: datetime


class AttemptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AttemptOut]
    has_more: bool
    next_cursor: str | None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime


class Redelivered(BaseModel):
    """Deliveries put back in the queue."""

    object: Literal["list"] = "list"
    data: list[DeliveryOut]
    count: int
