"""One module per table, one `Base`."""

from shared.models.base import Base
from shared.models.job import CALL_TERMINAL, JOB_TERMINAL, Call, Job
from shared.models.team import ApiKey, Team
from shared.models.webhook import (
    DELIVERY_STATUSES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookTeamSecret,
)

__all__ = [
    "CALL_TERMINAL",
    "DELIVERY_STATUSES",
    "JOB_TERMINAL",
    "ApiKey",
    "Base",
    "Call",
    "Job",
    "Team",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookTeamSecret",
]
