"""One module per table, one `Base`."""

from shared.models.base import Base
from shared.models.job import CALL_TERMINAL, JOB_TERMINAL, Call, Job
from shared.models.team import ApiKey, Team

__all__ = ["CALL_TERMINAL", "JOB_TERMINAL", "ApiKey", "Base", "Call", "Job", "Team"]
