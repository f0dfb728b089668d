"""One module per table, one `Base`; the vocabulary of states in `status`."""

from shared.models.admin import ADMIN_ROLES, AdminUser, AuditEntry, PortalLink
from shared.models.base import Base
from shared.models.billing import BudgetPeriod, CreditEntry, CreditGrant, UsageRollup
from shared.models.job import Call, Job
from shared.models.status import (
    CALL_ACTIVE,
    CALL_TERMINAL,
    JOB_CLOSED_ACTIVE,
    JOB_LIVE,
    JOB_TERMINAL,
    PRIORITY_RANK,
    CallStatus,
    DeliveryStatus,
    JobStatus,
    JobStyle,
    Priority,
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
    "ADMIN_ROLES",
    "CALL_ACTIVE",
    "CALL_TERMINAL",
    "JOB_CLOSED_ACTIVE",
    "JOB_LIVE",
    "JOB_TERMINAL",
    "PRIORITY_RANK",
    "AdminUser",
    "ApiKey",
    "AuditEntry",
    "Base",
    "BudgetPeriod",
    "Call",
    "CallStatus",
    "CreditEntry",
    "CreditGrant",
    "DeliveryStatus",
    "Job",
    "JobStatus",
    "JobStyle",
    "PortalLink",
    "Priority",
    "Team",
    "TeamStatus",
    "UsageRollup",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookTeamSecret",
]
