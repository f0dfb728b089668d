"""Webhooks: a team's endpoints and secret, the events it is sent, and every delivery attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, Timestamps
from shared.models.status import DeliveryStatus


class WebhookEndpoint(Timestamps, Base):
    """A URL a team registered, with an event filter (empty: every event) and its own secret."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_team_id_id", "team_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), server_default="")
    event_types: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    secret: Mapped[str] = mapped_column(String(255))
    # After a rotation the old secret keeps signing alongside the new one until this time.
    previous_secret: Mapped[str | None] = mapped_column(String(255))
    previous_secret_expires_at: Mapped[datetime | None]
    # Start of the current run of failed attempts; None while the endpoint answers 2xx.
    failing_since: Mapped[datetime | None]


class WebhookTeamSecret(Timestamps, Base):
    """The team-level secret that signs deliveries to a job's own `webhook_url`."""

    __tablename__ = "webhook_team_secrets"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(255))
    previous_secret: Mapped[str | None] = mapped_column(String(255))
    previous_secret_expires_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """One event (the Standard Webhooks message); its id is the `webhook-id` of every delivery."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_team_id_id", "team_id", "id"),
        Index("ix_webhook_events_team_id_type_id", "team_id", "type", "id"),
        Index("ix_webhook_events_team_id_job_id_id", "team_id", "job_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class WebhookDelivery(Base):
    """One event to one target (an endpoint, or the job's own URL); the row drives the retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_team_id_id", "team_id", "id"),
        Index("ix_webhook_deliveries_team_id_status_id", "team_id", "status", "id"),
        Index("ix_webhook_deliveries_team_id_endpoint_id_id", "team_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_team_id_event_id_id", "team_id", "event_id", "id"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[DeliveryStatus] = mapped_column(String(16), server_default="pending")
    # All attempts ever made; `round_attempts` counts those since the last (re)delivery request
    # and indexes the retry schedule.
    attempts: Mapped[int] = mapped_column(server_default="0")
    round_attempts: Mapped[int] = mapped_column(server_default="0")
    # While pending: when the next attempt is due (during an attempt: the end of its lease).
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class WebhookAttempt(Base):
    """The log of one HTTP attempt (or of a refusal to send)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_team_id_id", "team_id", "id"),
        Index("ix_webhook_attempts_team_id_delivery_id_id", "team_id", "delivery_id", "id"),
        Index("ix_webhook_attempts_delivery_id", "delivery_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str | None] = mapped_column(String(40))
    attempt: Mapped[int]
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None]
    latency_ms: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
