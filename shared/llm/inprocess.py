"""The in-process gateway: LiteLLM's Router inside the worker (`LLM_GATEWAY=inprocess`).

Built from the same config file the proxy reads (`LITELLM_CONFIG_PATH`, default
`proxy/config.yaml`): the same model names, deployments, fallbacks and prices. Values written
`os.environ/NAME` are read from the environment as the proxy does, so the provider keys must be
in the worker's environment. The proxy's own features that have no meaning inside a worker are
not built: its master key and virtual keys (`general_settings`), and its response cache
(`litellm_settings.cache*`; off by default in our config).

Answers carry what the proxy's headers carry: the cost LiteLLM priced the call at
(`response_cost`), its call id and the deployment's model name. Errors are mapped to the same
`TransientLLMError` / `PermanentLLMError` classes as the proxy's HTTP statuses, with the
provider's Retry-After.

litellm is imported on first use only: the API builds this backend for its model catalog (read
from the config file) and never imports litellm.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from shared.llm.client import LLMResult, PermanentLLMError, TransientLLMError
from shared.retry import is_transient_status, parse_retry_after

ENV_PREFIX = "os.environ/"
# litellm_settings the proxy applies that mean nothing (or something else) in a worker.
_SKIPPED_LITELLM_SETTINGS = frozenset({"cache", "cache_params", "callbacks", "success_callback"})
# LiteLLM's loggers: it gives each a handler of its own that prints plain text to stdout.
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
# Router arguments taken from router_settings/litellm_settings (the rest are proxy-only).
_ROUTER_KEYS = frozenset(
    {
        "num_retries",
        "timeout",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "routing_strategy",
        "allowed_fails",
        "cooldown_time",
        "retry_after",
        "redis_host",
        "redis_port",
        "redis_password",
        "model_group_alias",
        "enable_pre_call_checks",
    }
)


def resolve_env(value: Any) -> Any:
    """Replace every `os.environ/NAME` string in `value` with the variable (None if unset),
    as the proxy does when it loads its config."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX) :])
    if isinstance(value, list):
        return [resolve_env(v) for v in value]
    if isinstance(value, dict):
        return {k: resolve_env(v) for k, v in value.items()}
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("model_list"), list):
        raise ValueError(f"{path}: not a LiteLLM proxy config (no model_list)")
    return raw


def router_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The Router's arguments from a proxy config, `os.environ/` values resolved."""
    litellm_settings = config.get("litellm_settings") or {}
    router_settings = config.get("router_settings") or {}
    kwargs: dict[str, Any] = {"model_list": resolve_env(config["model_list"])}
    for source in (litellm_settings, router_settings):  # router_settings win, as in the proxy
        for key, value in source.items():
            if key in _ROUTER_KEYS and value is not None:
                kwargs[key] = resolve_env(value)
    if "request_timeout" in litellm_settings and "timeout" not in kwargs:
        kwargs["timeout"] = litellm_settings["request_timeout"]
    # Router state in Redis only when the config names a reachable host.
    if not kwargs.get("redis_host"):
        for key in ("redis_host", "redis_port", "redis_password"):
            kwargs.pop(key, None)
    return kwargs


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _retry_after(exc: BaseException) -> float | None:
    headers: dict[str, Any] = {}
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if source:
            headers.update({str(k).lower(): v for k, v in dict(source).items()})
    for name in ("retry-after", "llm_provider-retry-after", "x-ratelimit-reset-requests"):
        seconds = parse_retry_after(headers.get(name))
        if seconds is not None:
            return seconds
    return None


def map_error(exc: Exception, timeout: float) -> TransientLLMError | PermanentLLMError:
    """A LiteLLM exception as the error the proxy's HTTP answer would have become."""
    from litellm.exceptions import APIConnectionError, Timeout

    if isinstance(exc, Timeout | asyncio.TimeoutError):
        error = TransientLLMError(f"no answer from the model within {timeout:g}s")
        error.type = "timeout"
        return error
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", None) or exc)[:2000]
    if isinstance(exc, APIConnectionError) and status in (None, 500):
        return TransientLLMError(f"could not reach the model provider: {message}", status=status)
    if not isinstance(status, int):
        return TransientLLMError(message)
    if is_transient_status(status):
        return TransientLLMError(message, status=status, retry_after=_retry_after(exc))
    return PermanentLLMError(message, status=status)


def quiet_litellm_logs() -> None:
    """Send LiteLLM's records through the worker's own (JSON) handler only, from WARNING up
    (DEBUG when the worker logs at DEBUG).

    LiteLLM prints each of them to stdout in its own format and passes it on to the root
    handler as well: two lines per call ("litellm.acompletion(...) 200 OK", which the runner's
    "call succeeded" already says), one of them not JSON."""
    level = logging.DEBUG if logging.getLogger().level == logging.DEBUG else logging.WARNING
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = True


@functools.cache
def worker_router_class() -> type:
    """LiteLLM's Router with its usage tracking skipped for deployments that have no limit.

    After every answer the Router counts the deployment's tokens and requests for the minute
    (`_increment_deployment_usage`, twice per call: once on the answer, once from its success
    callback), for its rate limits and usage-based routing. It reads the deployment's model
    info first (a deep copy of the model's entry in LiteLLM's price map) and only then sees
    that no limit is set and counts nothing: 5-15 % of LiteLLM's CPU per call, 0.2-0.8 ms
    (`python -m bench.http_client`, "stock" against "inprocess"). Which deployments have a
    limit is fixed by the config, so it is decided once per deployment when the Router is
    built, by the same reads the Router makes; a deployment with a limit (tpm/rpm, in its
    params or model info, or input/output token limits), a wildcard one and one added later
    are counted as before."""
    from litellm.router import Router
    from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import (
        deployment_has_io_token_limits,
    )

    class WorkerRouter(Router):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # deployment id -> the model_list entry it was decided for
            self.saas_untracked: dict[str, Any] = {}
            for entry in self.model_list:
                deployment_id = str((entry.get("model_info") or {}).get("id"))
                if self._has_no_limit(deployment_id, str(entry.get("model_name"))):
                    self.saas_untracked[deployment_id] = entry

        def _has_no_limit(self, deployment_id: str, model_group: str) -> bool:
            deployment = self.get_deployment(model_id=deployment_id)
            if deployment is None or "*" in str(deployment.litellm_params.model):
                return False
            try:
                info = self.get_router_model_info(
                    deployment=deployment, received_model_name=model_group
                )
            except Exception:  # not in the price map: the Router's own path decides
                return False
            limits = (
                getattr(deployment, "tpm", None),  # as Deployment.get reads them
                getattr(deployment, "rpm", None),
                deployment.litellm_params.tpm,
                deployment.litellm_params.rpm,
                (info or {}).get("tpm", None),
                (info or {}).get("rpm", None),
            )
            return all(limit is None for limit in limits) and not deployment_has_io_token_limits(
                deployment.model_dump()
            )

        async def _increment_deployment_usage(self, *, deployment_id: str, **kwargs: Any) -> Any:
            entry = self.saas_untracked.get(deployment_id)
            if entry is not None and self.get_model_info(deployment_id) is entry:
                return None
            return await super()._increment_deployment_usage(deployment_id=deployment_id, **kwargs)

    return WorkerRouter


class InProcessBackend:
    """LiteLLM's Router in this process, built from a proxy config file."""

    def __init__(self, config_path: str | Path) -> None:
        self.config_path = Path(config_path)
        self.config = load_config(self.config_path)
        self._router: Any = None
        # Set by the first answer: LiteLLM has imported its provider's modules by then.
        self.answered = asyncio.Event()

    def router_class(self) -> type:
        """The Router class to build (`bench.http_client` measures LiteLLM's own against it)."""
        return worker_router_class()

    def _build(self) -> Any:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        settings = self.config.get("litellm_settings") or {}
        for key, value in settings.items():
            if key not in _SKIPPED_LITELLM_SETTINGS and not key.startswith("cache"):
                setattr(litellm, key, resolve_env(value))
        litellm.suppress_debug_info = True
        quiet_litellm_logs()
        return self.router_class()(**router_kwargs(self.config))

    @property
    def router(self) -> Any:
        if self._router is None:
            self._router = self._build()
        return self._router

    async def complete(self, body: dict[str, Any], *, timeout: float) -> LLMResult:
        router = self.router
        request = {k: v for k, v in body.items() if k not in ("timeout", "stream")}
        started = time.perf_counter()
        try:
            response = await router.acompletion(**request, timeout=timeout, num_retries=0)
        except Exception as exc:
            raise map_error(exc, timeout) from exc
        latency_ms = int((time.perf_counter() - started) * 1000)
        self.answered.set()
        hidden: dict[str, Any] = getattr(response, "_hidden_params", None) or {}
        # As the proxy serialises it (fields that are None left out).
        data: dict[str, Any] = response.model_dump(mode="json", exclude_none=True)
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cost = hidden.get("response_cost")
        if cost is None:
            import litellm

            try:
                cost = litellm.completion_cost(completion_response=response)
            except Exception:
                cost = None
        return LLMResult(
            body=data,
            cost_usd=_decimal(cost),
            litellm_call_id=hidden.get("litellm_call_id"),
            latency_ms=latency_ms,
            model_used=hidden.get("litellm_model_name") or data.get("model"),
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=int(usage.get("total_tokens") or prompt + completion),
        )

    async def models(self) -> list[str]:
        return sorted({str(m["model_name"]) for m in self.config["model_list"]})

    async def aclose(self) -> None:
        """Unhook the Router's callbacks from LiteLLM's process-wide lists (`Router.discard`):
        each Router adds its own, and every later call in the process would run them. LiteLLM
        keeps its provider clients per process."""
        if self._router is not None:
            self._router.discard()
            self._router = None
