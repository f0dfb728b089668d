"""One module per table, one `Base`; the vocabulary of states in `status`."""

from shared.models.base import Base
from shared.models.job import Call, Job
from shared.models.status import (
    CALL_ACTIVE,
    CALL_TERMINAL,
    JOB_CLOSED_ACTIVE,
    JOB_LIVE,
    JOB_TERMINAL,
    CallStatus,
    DeliveryStatus,
    JobStatus,
    JobStyle,
    TeamStatus,
)
from shared.models.team import ApiKey, Team
from shared.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)

__all__ = [
    "CALL_ACTIVE",
    "CALL_TERMINAL",
    "JOB_CLOSED_ACTIVE",
    "JOB_LIVE",
    "JOB_TERMINAL",
    "ApiKey",
    "Base",
    "Call",
    "CallStatus",
    "DeliveryStatus",
    "Job",
    "JobStatus",
    "JobStyle",
    "Team",
    "TeamStatus",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookTeamSecret",
]
