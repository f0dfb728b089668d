"""The seam between the platform and the gateway that talks to model providers.

`LLMBackend` is what the call runner and admission need: complete one chat request, list the
models. `ProxyBackend` (the default) speaks HTTP to the LiteLLM proxy; other backends (LiteLLM's
Router in the worker itself) implement the same protocol and raise the same `LLMError` classes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import httpx

from shared.llm.client import LLMResult, chat_completion


class LLMBackend(Protocol):
    """A gateway to model providers."""

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        """One chat completion; raises `TransientLLMError` or `PermanentLLMError`."""
        ...

    async def models(self) -> list[str]:
        """The model names served; raises on failure to ask."""
        ...


class ProxyBackend:
    """The LiteLLM proxy's OpenAI-compatible API, called with the master key."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, master_key: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.master_key = master_key

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        return await chat_completion(
            self.http,
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


class ModelCatalog:
    """A backend's model names, cached for a few seconds."""

    def __init__(self, backend: LLMBackend, *, ttl: float) -> None:
        self.backend = backend
        self.ttl = ttl
        self._models: list[str] = []
        self._fetched = 0.0

    async def names(self) -> list[str]:
        """Model names served; raises if the backend cannot be asked."""
        if self._models and time.monotonic() - self._fetched < self.ttl:
            return self._models
        self._models = await self.backend.models()
        self._fetched = time.monotonic()
        return self._models
