"""The seam between the platform and the gateway that talks to model providers.

`LLMBackend` is what the call runner and admission need: complete one chat request, list the
models. `ProxyBackend` (the default) speaks HTTP to the LiteLLM proxy; other backends (LiteLLM's
Router in the worker itself) implement the same protocol and raise the same `LLMError` classes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import aiohttp
import httpx

from shared.llm.client import LLMResult, chat_completion, proxy_session

log = logging.getLogger("saas_llm.llm")


class LLMBackend(Protocol):
    """A gateway to model providers."""

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        """One chat completion; raises `TransientLLMError` or `PermanentLLMError`."""
        ...

    async def models(self) -> list[str]:
        """The model names served; raises on failure to ask."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds open (connections); it may be used again after."""
        ...


class ProxyBackend:
    """The LiteLLM proxy's OpenAI-compatible API, called with the master key.

    Completions go through an aiohttp session of the backend's own (`proxy_session`: the
    request of every call, ~10x less client CPU than httpx), made on first use in the running
    loop and closed by `aclose`; the model list through the process's shared httpx client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        master_key: str,
        max_connections: int = 100,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.master_key = master_key
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        if self._session is None or self._session.closed:
            self._session = proxy_session(max_connections=self.max_connections)
        return await chat_completion(
            self._session,
            base_url=self.base_url,
            master_key=self.master_key,
            body=body,
            timeout=timeout,
        )

    async def models(self) -> list[str]:
        response = await self.http.get(
            self.base_url + "/v1/models",
            headers={"Authorization": f"Bearer {self.master_key}"},
            timeout=10.0,
        )
        response.raise_for_status()
        return sorted({m["id"] for m in response.json().get("data", [])})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ModelCatalog:
    """A backend's model names, cached for `ttl` seconds; when a refresh fails, the last list
    is used for up to `stale_for` seconds more (a busy or restarting gateway does not refuse
    every submission), then the failure is raised."""

    def __init__(self, backend: LLMBackend, *, ttl: float, stale_for: float = 300.0) -> None:
        self.backend = backend
        self.ttl = ttl
        self.stale_for = stale_for
        self._models: list[str] = []
        self._fetched = 0.0

    async def names(self) -> list[str]:
        """Model names served; raises if the backend cannot be asked and nothing recent is known."""
        age = time.monotonic() - self._fetched
        if self._models and age < self.ttl:
            return self._models
        try:
            self._models = await self.backend.models()
        except Exception:
            if self._models and age < self.ttl + self.stale_for:
                log.warning("model list refresh failed; using the last one", exc_info=True)
                return self._models
            raise
        self._fetched = time.monotonic()
        return self._models
