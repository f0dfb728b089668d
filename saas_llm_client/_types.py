"""Typed views of the API's answers; each keeps the full JSON in `.raw`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            int(data.get("total_tokens") or 0),
        )


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True)
class Call:
    id: str
    job_id: str
    custom_id: str
    status: str
    model: str
    model_used: str | None
    response: dict[str, Any] | None
    usage: Usage | None
    cost_usd: Decimal | None
    latency_ms: int | None
    attempts: int
    error: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def content(self) -> str | None:
        """The first choice's message text, if the call succeeded."""
        return _content(self.response)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Call:
        return cls(
            id=d["id"],
            job_id=d["job_id"],
            custom_id=d.get("custom_id") or "",
            status=d["status"],
            model=d.get("model") or "",
            model_used=d.get("model_used"),
            response=d.get("response"),
            usage=Usage.from_json(d["usage"]) if d.get("usage") else None,
            cost_usd=_dec(d.get("cost_usd")),
            latency_ms=d.get("latency_ms"),
            attempts=int(d.get("attempts") or 0),
            error=d.get("error"),
            raw=d,
        )


@dataclass(frozen=True)
class Job:
    id: str
    team_id: str
    status: str
    style: str
    job_type: str | None
    metadata: dict[str, Any]
    request_counts: RequestCounts
    usage: Usage
    cost_usd: Decimal
    credits_charged: Decimal
    error: dict[str, Any] | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    calls: list[Call] | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    priority: str = "normal"

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        counts = d.get("request_counts") or {}
        return cls(
            id=d["id"],
            team_id=d.get("team_id", ""),
            status=d["status"],
            style=d.get("style", ""),
            job_type=d.get("job_type"),
            priority=d.get("priority", "normal"),
            metadata=d.get("metadata") or {},
            request_counts=RequestCounts(**{k: int(v) for k, v in counts.items()}),
            usage=Usage.from_json(d.get("usage")),
            cost_usd=_dec(d.get("cost_usd")) or Decimal(0),
            credits_charged=_dec(d.get("credits_charged")) or Decimal(0),
            error=d.get("error"),
            created_at=_time(d.get("created_at")),
            started_at=_time(d.get("started_at")),
            finished_at=_time(d.get("finished_at")),
            calls=[Call.from_json(c) for c in d["calls"]] if d.get("calls") is not None else None,
            raw=d,
        )


@dataclass(frozen=True)
class Result:
    """One line of a job's results, in the shape of OpenAI's Batch output."""

    id: str
    custom_id: str
    status: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    cost_usd: Decimal | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def body(self) -> dict[str, Any] | None:
        return (self.response or {}).get("body")

    @property
    def content(self) -> str | None:
        return _content(self.body)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(
            id=d["id"],
            custom_id=d.get("custom_id") or "",
            status=d["status"],
            response=d.get("response"),
            error=d.get("error"),
            cost_usd=_dec(d.get("cost_usd")),
            raw=d,
        )


@dataclass(frozen=True)
class JobPage:
    data: list[Job]
    has_more: bool
    next_cursor: str | None


def _content(completion: dict[str, Any] | None) -> str | None:
    try:
        content = (completion or {})["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None
