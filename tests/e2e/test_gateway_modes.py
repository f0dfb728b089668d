"""Proxy mode and in-process mode (`LLM_GATEWAY=inprocess`) record the same calls.

The same requests go to the LiteLLM proxy (HTTP) and to LiteLLM's Router in this process, both
built from the same config file and both talking to the fake provider: tokens, costs, model
names and error classes must be identical, call for call. A platform stack started with
`LLM_GATEWAY=inprocess` (no proxy at all) then runs the same job as the proxy-mode stack and
stores the same call records.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack, free_port, start_api, start_worker, write_proxy_config
from shared.llm.backend import ProxyBackend
from shared.llm.client import LLMResult, PermanentLLMError, TransientLLMError
from shared.llm.inprocess import InProcessBackend, resolve_env, router_kwargs
from tests import litellm_prices
from tests.conftest import TeamClient, base_env, nonce
from tests.harness import MASTER_KEY, fake_models, fake_proxy_config, wait_until


def _bodies(tag: str) -> list[dict[str, Any]]:
    return [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} one"}]},
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": f"{tag} two " + "word " * 30},
            ],
            "temperature": 0.2,
        },
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{tag} three [[tool]]"}],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "lookup", "parameters": {"type": "object"}},
                }
            ],
        },
    ]


def test_config_values_from_the_environment_are_resolved_like_the_proxy_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAAS_TEST_KEY", "sk-from-env")
    monkeypatch.delenv("SAAS_TEST_UNSET", raising=False)
    config = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/x", "api_key": "os.environ/SAAS_TEST_KEY"},
            },
            {
                "model_name": "n",
                "litellm_params": {"model": "openai/y", "api_key": "os.environ/SAAS_TEST_UNSET"},
            },
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 600, "cache": True},
        "router_settings": {
            "fallbacks": [{"m": ["n"]}],
            "redis_host": "os.environ/SAAS_TEST_UNSET",
        },
        "general_settings": {"master_key": "os.environ/SAAS_TEST_KEY"},
    }
    kwargs = router_kwargs(config)
    params = [m["litellm_params"]["api_key"] for m in kwargs["model_list"]]
    assert params == ["sk-from-env", None]
    assert kwargs["fallbacks"] == [{"m": ["n"]}]
    assert kwargs["num_retries"] == 0 and kwargs["timeout"] == 600
    assert "redis_host" not in kwargs and "master_key" not in kwargs and "cache" not in kwargs
    assert resolve_env(["os.environ/SAAS_TEST_KEY", 3]) == ["sk-from-env", 3]


async def test_same_requests_give_identical_tokens_costs_and_error_classes(
    proxy: str, fake_provider: str, log_dir: Path
) -> None:
    config = fake_proxy_config(log_dir, fake_provider)  # the file the proxy was started with
    inprocess = InProcessBackend(config)
    assert await inprocess.models() == ["gpt-4o", "gpt-4o-mini"]
    async with httpx.AsyncClient() as http:
        via_proxy = ProxyBackend(http, base_url=proxy, master_key=MASTER_KEY)
        assert set(await via_proxy.models()) == set(await inprocess.models())
        tag = nonce()
        for body in _bodies(tag):
            a: LLMResult = await via_proxy.complete(body, timeout=30)
            b: LLMResult = await inprocess.complete(body, timeout=30)
            for field in ("prompt_tokens", "completion_tokens", "total_tokens", "model_used"):
                assert getattr(a, field) == getattr(b, field), (field, body)
            assert a.cost_usd is not None and a.cost_usd > 0
            assert a.cost_usd == b.cost_usd
            price_in, price_out = litellm_prices.per_token(body["model"])
            expected = price_in * a.prompt_tokens + price_out * a.completion_tokens
            assert a.cost_usd.quantize(Decimal("1e-12")) == expected.quantize(Decimal("1e-12"))
            assert (
                a.litellm_call_id and b.litellm_call_id and a.litellm_call_id != b.litellm_call_id
            )
            assert a.model_used == f"openai/{body['model']}"
            ma, mb = a.body["choices"][0]["message"], b.body["choices"][0]["message"]
            if "tool_calls" in ma:  # the fake provider makes a new tool call id each time
                assert [t["function"] for t in ma["tool_calls"]] == [
                    t["function"] for t in mb["tool_calls"]
                ]
            else:
                assert ma == mb
            assert a.body["usage"] == b.body["usage"]
        cases: list[tuple[str, int, type[Exception]]] = [
            ("[[fail:400]]", 400, PermanentLLMError),
            ("[[fail:429]] [[retry-after:7]]", 429, TransientLLMError),
            ("[[fail:500]]", 500, TransientLLMError),
        ]
        for marker, status, cls in cases:
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{tag} {marker}"}],
            }
            errors = []
            for backend in (via_proxy, inprocess):
                with pytest.raises(cls) as caught:
                    await backend.complete(body, timeout=30)
                errors.append(caught.value)
            assert [type(e) for e in errors] == [cls, cls]
            assert [e.status for e in errors] == [status, status], marker  # type: ignore[attr-defined]
            if status == 429:
                assert [e.retry_after for e in errors] == [7.0, 7.0]  # type: ignore[attr-defined]
        # The proxy backend's own transport failures are transient too: no answer in time, and
        # no proxy listening.
        slow = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"{tag} [[delay:5000]]"}],
        }
        with pytest.raises(TransientLLMError) as caught:
            await via_proxy.complete(slow, timeout=0.5)
        assert caught.value.type == "timeout"
        nobody = ProxyBackend(http, base_url=f"http://127.0.0.1:{free_port()}", master_key="x")
        with pytest.raises(TransientLLMError) as caught:
            await nobody.complete(_bodies(tag)[0], timeout=5)
        assert caught.value.type == "provider_error" and caught.value.status is None
        await nobody.aclose()
        await via_proxy.aclose()
        await inprocess.aclose()


async def test_the_router_counts_usage_only_for_deployments_with_a_limit(
    fake_provider: str, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's Router reads a deployment's model info (a deep copy of its price-map entry) to
    count its usage after every answer, and counts nothing when no limit is set: ours decides
    that once per deployment and skips the read. A deployment with an rpm limit is counted."""
    models = fake_models(fake_provider)
    for model in models:
        if model["model_name"] == "gpt-4o":
            model["litellm_params"]["rpm"] = 100_000
    backend = InProcessBackend(write_proxy_config(log_dir / "limits.yaml", models))
    router = backend.router
    reads: Counter[str] = Counter()
    read = router.get_router_model_info

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads[kwargs.get("received_model_name", "?")] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(router, "get_router_model_info", counting)
    tag = nonce()
    for name in ("gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
        body = {"model": name, "messages": [{"role": "user", "content": f"{tag} {name}"}]}
        result = await backend.complete(body, timeout=30)
        assert result.cost_usd is not None and result.cost_usd > 0
    ids = {m["model_name"]: m["model_info"]["id"] for m in router.model_list}
    counted = [k for k in router.cache.in_memory_cache.cache_dict if ":rpm:" in k]
    # The answer's own count is made before `complete` returns (the success callback's later).
    assert reads["gpt-4o"] >= 1 and any(ids["gpt-4o"] in k for k in counted), counted
    assert reads["gpt-4o-mini"] == 0, reads
    assert not any(ids["gpt-4o-mini"] in k for k in counted), counted
    # Closed, the backend unhooks its Router from LiteLLM's process-wide callback lists, or
    # every later call in this process (another backend's) would run them too.
    import litellm

    assert router.deployment_callback_on_success in litellm._async_success_callback
    await backend.aclose()
    hooked = litellm._async_success_callback + litellm.success_callback
    assert router.deployment_callback_on_success not in hooked
    assert router.sync_deployment_callback_on_success not in hooked


@pytest.fixture(scope="module")
def inprocess_stack(database_url: str, fake_provider: str, log_dir: Path) -> Iterator[Stack]:
    """API and worker in in-process mode: no proxy URL at all, only the config file."""
    env = base_env(database_url, "saas-llm-inproc:" + uuid.uuid4().hex[:8], "http://127.0.0.1:9")
    env["LLM_GATEWAY"] = "inprocess"
    env["LITELLM_CONFIG_PATH"] = str(fake_proxy_config(log_dir, fake_provider))
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    port = free_port()
    s = Stack(env=env, api_url=f"http://127.0.0.1:{port}", proxy_url="", log_dir=log_dir)
    s.procs["api"] = start_api(env, port, log_dir, name="api-inproc")
    s.procs["worker"] = start_worker(env, log_dir, name="worker-inproc")
    yield s
    s.stop()


def test_a_job_in_inprocess_mode_stores_the_same_call_records_as_proxy_mode(
    inprocess_stack: Stack, make_team: Callable[..., TeamClient]
) -> None:
    team = make_team()
    tag = nonce()
    requests = [dict(body, custom_id=f"c{i}") for i, body in enumerate(_bodies(tag))]
    proxy_job = team.wait(team.submit(requests)["id"])
    with TeamClient(
        base_url=inprocess_stack.api_url,
        headers={"Authorization": f"Bearer {team.key}"},
        timeout=30,
    ) as local:
        local_job = local.wait(local.submit(requests)["id"])
        assert local.get("/ready").json()["checks"]["proxy"] == "ok"
    assert proxy_job["status"] == local_job["status"] == "succeeded"
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert proxy_job["usage"][field] == local_job["usage"][field] > 0
    assert Decimal(proxy_job["cost_usd"]) == Decimal(local_job["cost_usd"]) > 0
    a = {
        c["custom_id"]: c
        for c in team.get(f"/api/jobs/{proxy_job['id']}", params={"include_calls": True}).json()[
            "calls"
        ]
    }
    b = {
        c["custom_id"]: c
        for c in team.get(f"/api/jobs/{local_job['id']}", params={"include_calls": True}).json()[
            "calls"
        ]
    }
    assert a.keys() == b.keys() == {"c0", "c1", "c2"}
    for cid in a:
        assert a[cid]["usage"] == b[cid]["usage"]
        assert a[cid]["cost_usd"] == b[cid]["cost_usd"]
        assert a[cid]["model_used"] == b[cid]["model_used"]
        assert a[cid]["litellm_call_id"] and b[cid]["litellm_call_id"]
    # LiteLLM ran in the worker and wrote nothing per call (the runner's JSON "call succeeded"
    # says it): before, each call printed "litellm.acompletion(...) 200 OK" twice, once as
    # plain text on stdout.
    worker_log = inprocess_stack.procs["worker"].log_path.read_text()
    assert "call succeeded" in worker_log
    assert "LiteLLM" not in worker_log and "litellm.acompletion" not in worker_log
    # What LiteLLM imported for its first call leaves the collector's walks, once: after the
    # worker's warm-up (LiteLLM's token counter, seconds on a busy machine), so waited for.
    log_path = inprocess_stack.procs["worker"].log_path

    def frozen() -> list[str]:
        lines = log_path.read_text().splitlines()
        return [json.loads(x)["after"] for x in lines if '"start-up heap frozen"' in x]

    wait_until(
        lambda: "the first in-process call" in frozen(),
        timeout=300,
        what="the worker to freeze its heap after the first in-process call",
    )
    assert frozen().count("the first in-process call") == 1, frozen()
    assert frozen().index("worker warm-up") < frozen().index("the first in-process call")
