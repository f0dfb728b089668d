"""`Client` (sync) and `AsyncClient`: the same methods, one shared request/answer mapping."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from saas_llm_client._errors import (
    APIConnectionError,
    SaaSLLMError,
    WaitTimeout,
    raise_for_response,
)
from saas_llm_client._types import Call, Job, JobPage, Result

DEFAULT_URL = "http://127.0.0.1:8000"
Messages = list[dict[str, Any]]
Progress = Callable[[Job], None]


def _request(
    model: str | None = None,
    messages: Messages | None = None,
    prompt: str | None = None,
    custom_id: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    if messages is None:
        if prompt is None:
            raise ValueError("give messages or prompt")
        messages = [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": model, "messages": messages, **params}
    if custom_id is not None:
        body["custom_id"] = custom_id
    return body


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        self.base_url = (base_url or os.environ.get("SAAS_LLM_API_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("SAAS_LLM_API_KEY")
        if not key:
            raise SaaSLLMError("no API key: pass api_key= or set SAAS_LLM_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}", "User-Agent": "saas-llm-client/0.1"}

    @staticmethod
    def _submit_body(
        requests: Iterable[Mapping[str, Any]],
        job_type: str | None,
        metadata: dict[str, Any] | None,
        webhook_url: str | None,
        timeout_seconds: float | None = None,
        deadline_seconds: float | None = None,
        priority: str | None = None,
    ) -> dict[str, Any]:
        return _drop_none(
            requests=[dict(r) for r in requests],
            job_type=job_type,
            metadata=metadata,
            webhook_url=webhook_url,
            timeout_seconds=timeout_seconds,
            deadline_seconds=deadline_seconds,
            priority=priority,
        )


class Client(_Base):
    """Synchronous client for one team's key.

    >>> with Client(api_key="sk-...") as c:
    ...     job = c.wait(c.submit([{"model": "demo", "messages": [...]}]).id)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = http or httpx.Client(timeout=timeout, follow_redirects=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self._headers, **kw.pop("headers", {})}
        try:
            response = self._http.request(method, self.base_url + path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{method} {self.base_url}{path}: {exc}") from exc
        raise_for_response(response)
        return response

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/api/models").json()["data"]]

    def submit(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        job_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        deadline_seconds: float | None = None,
        priority: str | None = None,
    ) -> Job:
        """Batch style: one job with all its calls; returns at once (the job is queued).

        `timeout_seconds` bounds each attempt; `deadline_seconds` fails what is unfinished;
        `priority` ("high", "normal", "low") orders the job among the team's own queued calls."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = self._submit_body(
            requests, job_type, metadata, webhook_url, timeout_seconds, deadline_seconds, priority
        )
        return Job.from_json(self._call("POST", "/api/jobs", json=body, headers=headers).json())

    def create_job(
        self,
        *,
        job_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        ttl_seconds: int | None = None,
        priority: str | None = None,
    ) -> Job:
        """Step style: an open job to add calls to, then `complete()`."""
        body = _drop_none(
            job_type=job_type,
            metadata=metadata,
            webhook_url=webhook_url,
            ttl_seconds=ttl_seconds,
            priority=priority,
        )
        return Job.from_json(self._call("POST", "/api/jobs/create", json=body).json())

    def add_call(
        self,
        job_id: str,
        model: str,
        messages: Messages | None = None,
        *,
        prompt: str | None = None,
        custom_id: str | None = None,
        wait: float = 0,
        **params: Any,
    ) -> Call:
        """Queue one call on an open job; with `wait` > 0 the answer comes when it ends."""
        body = _request(model, messages, prompt, custom_id, **params)
        if wait:
            body["wait"] = wait
        timeout = httpx.Timeout(max(60.0, wait + 30.0))
        response = self._call("POST", f"/api/jobs/{job_id}/calls", json=body, timeout=timeout)
        return Call.from_json(response.json())

    def complete(self, job_id: str) -> Job:
        return Job.from_json(self._call("POST", f"/api/jobs/{job_id}/complete").json())

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._call("POST", f"/api/jobs/{job_id}/cancel").json())

    def get(self, job_id: str, *, include_calls: bool = False) -> Job:
        params = {"include_calls": "true"} if include_calls else None
        return Job.from_json(self._call("GET", f"/api/jobs/{job_id}", params=params).json())

    def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobPage:
        params = _drop_none(status=status, job_type=job_type, limit=limit, after=after)
        data = self._call("GET", "/api/jobs", params=params).json()
        jobs = [Job.from_json(j) for j in data["data"]]
        return JobPage(jobs, data["has_more"], data["next_cursor"])

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
        on_progress: Progress | None = None,
    ) -> Job:
        """Poll until the job ends; `on_progress` sees every poll. Raises WaitTimeout."""
        deadline = time.monotonic() + timeout
        delay = min(0.05, poll_interval)
        while True:
            job = self.get(job_id)
            if on_progress:
                on_progress(job)
            if job.done:
                return job
            if time.monotonic() >= deadline:
                raise WaitTimeout(job_id, job.status, timeout)
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, poll_interval)

    def results(self, job_id: str) -> list[Result]:
        data = self._call("GET", f"/api/jobs/{job_id}/results").json()
        return [Result.from_json(r) for r in data["data"]]

    def results_jsonl(self, job_id: str) -> str:
        """The results as JSONL text, one line per call, like OpenAI's Batch output file."""
        headers = {"Accept": "application/x-ndjson"}
        return self._call("GET", f"/api/jobs/{job_id}/results", headers=headers).text

    def credits(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Balance, reserved credits, grants with expiry, budget, recent ledger entries."""
        params = _drop_none(after=after, limit=limit)
        return dict(self._call("GET", "/api/credits", params=params).json())

    def usage(
        self, *, start: str | None = None, end: str | None = None, group_by: str = "day"
    ) -> dict[str, Any]:
        """Usage rows (jobs, calls, tokens, cost_usd, billed_usd, credits) per group."""
        params = _drop_none(**{"from": start, "to": end, "group_by": group_by})
        return dict(self._call("GET", "/api/usage", params=params).json())

    def usage_csv(
        self, *, start: str | None = None, end: str | None = None, group_by: str = "day"
    ) -> str:
        params = _drop_none(**{"from": start, "to": end, "group_by": group_by})
        headers = {"Accept": "text/csv"}
        return self._call("GET", "/api/usage", params=params, headers=headers).text


class AsyncClient(_Base):
    """Asynchronous client; the same methods as `Client`, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = http or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self._headers, **kw.pop("headers", {})}
        try:
            response = await self._http.request(method, self.base_url + path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"{method} {self.base_url}{path}: {exc}") from exc
        raise_for_response(response)
        return response

    async def models(self) -> list[str]:
        return [m["id"] for m in (await self._call("GET", "/api/models")).json()["data"]]

    async def submit(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        job_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        timeout_seconds: float | None = None,
        deadline_seconds: float | None = None,
        priority: str | None = None,
    ) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = self._submit_body(
            requests, job_type, metadata, webhook_url, timeout_seconds, deadline_seconds, priority
        )
        response = await self._call("POST", "/api/jobs", json=body, headers=headers)
        return Job.from_json(response.json())

    async def create_job(
        self,
        *,
        job_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        ttl_seconds: int | None = None,
        priority: str | None = None,
    ) -> Job:
        body = _drop_none(
            job_type=job_type,
            metadata=metadata,
            webhook_url=webhook_url,
            ttl_seconds=ttl_seconds,
            priority=priority,
        )
        return Job.from_json((await self._call("POST", "/api/jobs/create", json=body)).json())

    async def add_call(
        self,
        job_id: str,
        model: str,
        messages: Messages | None = None,
        *,
        prompt: str | None = None,
        custom_id: str | None = None,
        wait: float = 0,
        **params: Any,
    ) -> Call:
        body = _request(model, messages, prompt, custom_id, **params)
        if wait:
            body["wait"] = wait
        timeout = httpx.Timeout(max(60.0, wait + 30.0))
        response = await self._call("POST", f"/api/jobs/{job_id}/calls", json=body, timeout=timeout)
        return Call.from_json(response.json())

    async def complete(self, job_id: str) -> Job:
        return Job.from_json((await self._call("POST", f"/api/jobs/{job_id}/complete")).json())

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json((await self._call("POST", f"/api/jobs/{job_id}/cancel")).json())

    async def get(self, job_id: str, *, include_calls: bool = False) -> Job:
        params = {"include_calls": "true"} if include_calls else None
        response = await self._call("GET", f"/api/jobs/{job_id}", params=params)
        return Job.from_json(response.json())

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobPage:
        params = _drop_none(status=status, job_type=job_type, limit=limit, after=after)
        data = (await self._call("GET", "/api/jobs", params=params)).json()
        jobs = [Job.from_json(j) for j in data["data"]]
        return JobPage(jobs, data["has_more"], data["next_cursor"])

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = 0.5,
        on_progress: Progress | None = None,
    ) -> Job:
        deadline = time.monotonic() + timeout
        delay = min(0.05, poll_interval)
        while True:
            job = await self.get(job_id)
            if on_progress:
                on_progress(job)
            if job.done:
                return job
            if time.monotonic() >= deadline:
                raise WaitTimeout(job_id, job.status, timeout)
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, poll_interval)

    async def results(self, job_id: str) -> list[Result]:
        data = (await self._call("GET", f"/api/jobs/{job_id}/results")).json()
        return [Result.from_json(r) for r in data["data"]]

    async def results_jsonl(self, job_id: str) -> str:
        headers = {"Accept": "application/x-ndjson"}
        return (await self._call("GET", f"/api/jobs/{job_id}/results", headers=headers)).text

    async def credits(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        params = _drop_none(after=after, limit=limit)
        return dict((await self._call("GET", "/api/credits", params=params)).json())

    async def usage(
        self, *, start: str | None = None, end: str | None = None, group_by: str = "day"
    ) -> dict[str, Any]:
        params = _drop_none(**{"from": start, "to": end, "group_by": group_by})
        return dict((await self._call("GET", "/api/usage", params=params)).json())

    async def usage_csv(
        self, *, start: str | None = None, end: str | None = None, group_by: str = "day"
    ) -> str:
        params = _drop_none(**{"from": start, "to": end, "group_by": group_by})
        headers = {"Accept": "text/csv"}
        return (await self._call("GET", "/api/usage", params=params, headers=headers)).text


def request(
    model: str,
    prompt: str | None = None,
    *,
    messages: Messages | None = None,
    custom_id: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One entry of `submit()`'s list: `request("demo", "Say hello", custom_id="a")`."""
    return _request(model, messages, prompt, custom_id, **params)
