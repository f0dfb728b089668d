"""Shapes of jobs and calls over the team API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from shared.models.status import Priority
from shared.money import Money

PRIORITY_DOC = (
    "Order among the team's own queued calls: high before normal before low (then oldest "
    "first). It never takes slots from other teams: free worker slots go to the team with the "
    "fewest calls running."
)

# OpenAI chat-completion parameters passed through to the proxy; anything else is refused so
# that a customer cannot reach LiteLLM's client-side routing options (api_base, api_key, ...).
CHAT_PARAMS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "presence_penalty",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "reasoning_effort",
        "modalities",
        "prediction",
        "service_tier",
        "timeout",
    }
)
ROLES = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: ROLES
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)


class ChatRequest(BaseModel):
    """One call: a model, messages and OpenAI chat parameters."""

    model_config = ConfigDict(extra="allow")

    custom_id: str | None = Field(default=None, min_length=1, max_length=255)
    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1)

    def params(self) -> dict[str, Any]:
        """Extra chat parameters, validated against the allow-list."""
        extra = dict(self.model_extra or {})
        unknown = sorted(set(extra) - CHAT_PARAMS - {"stream"})
        if unknown:
            raise ValueError(f"unsupported parameter(s): {', '.join(unknown)}")
        timeout = extra.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 3600
        ):
            raise ValueError("timeout must be a number of seconds, more than 0 and at most 3600")
        if extra.pop("stream", False):
            raise ValueError(
                "stream is not supported for jobs; poll, stream events or use a webhook"
            )
        return extra

    def body(self) -> dict[str, Any]:
        """The request body sent to the proxy (custom_id excluded)."""
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        return {"model": self.model, "messages": messages, **self.params()}


class JobCreate(BaseModel):
    """Batch style: the job and all its calls at once."""

    model_config = ConfigDict(extra="forbid")

    requests: list[ChatRequest] = Field(min_length=1)
    job_type: str | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook_url: AnyHttpUrl | None = None
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Per-call timeout (one attempt), unless set."
    )
    deadline_seconds: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="The job fails what is unfinished then."
    )
    priority: Priority = Field(default=Priority.NORMAL, description=PRIORITY_DOC)


class StepJobCreate(BaseModel):
    """Step style (the seed's `POST /api/jobs/create`)."""

    model_config = ConfigDict(extra="forbid")

    team_id: str | None = Field(default=None, description="Must be the key's team if given.")
    job_type: str | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook_url: AnyHttpUrl | None = None
    ttl_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    priority: Priority = Field(default=Priority.NORMAL, description=PRIORITY_DOC)


class StepCallCreate(ChatRequest):
    """A call added to an open job; `wait` seconds to wait for it to end (0: do not wait)."""

    wait: float = Field(default=0, ge=0)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class RequestCounts(BaseModel):
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class CallOut(BaseModel):
    object: Literal["call"] = "call"
    id: str
    job_id: str
    custom_id: str
    status: str
    model: str
    model_used: str | None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None
    usage: Usage | None
    cost_usd: Money | None
    billed_usd: Money | None
    budget_reserved_usd: Money | None = Field(
        default=None, description="The budget this call holds while it runs (its worst case)."
    )
    credits_reserved: Money | None = Field(
        default=None, description="Credits are reserved per job: see the job's."
    )
    credits_charged: Money | None
    latency_ms: int | None
    attempts: int
    litellm_call_id: str | None
    cached: bool = Field(default=False, description="Served from the team's response cache.")
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobOut(BaseModel):
    object: Literal["job"] = "job"
    id: str
    job_id: str = Field(description="Same as id; kept for the seed's clients.")
    team_id: str
    style: str
    job_type: str | None
    status: str
    priority: str = Field(default="normal", description=PRIORITY_DOC)
    metadata: dict[str, Any]
    webhook_url: str | None
    request_counts: RequestCounts
    usage: Usage
    cost_usd: Money
    billed_usd: Money
    credits_reserved: Money
    credits_charged: Money
    credits_refunded: Money  # what an admin refunded of the charge (all of it, once)
    pause_reason: str | None = None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    calls: list[CallOut] | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]
    has_more: bool
    next_cursor: str | None
