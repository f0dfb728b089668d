"""Prices and worst cases: LiteLLM's cost map read without importing LiteLLM, the markup and
per-model overrides, and a prompt bound that LiteLLM's own token counter never exceeds."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from shared.billing.prices import (
    billed_price,
    credits_for,
    prompt_bound,
    provider_price,
    worst_case,
)
from shared.models import Team
from tests.litellm_prices import per_token

PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "ünïcödé 漢字 emoji 🎉🎉🎉 " * 40}],
    [{"role": "user", "content": "a" * 5000}],
    [{"role": "user", "content": " ".join(str(i) for i in range(2000))}],
    [
        {"role": "user", "content": "call the tool"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
    ],
]


def _team(**fields: object) -> Team:
    base: dict[str, object] = {
        "id": "t",
        "name": "t",
        "price_markup_pct": Decimal(0),
        "model_prices": {},
    }
    base.update(fields)
    return Team(**base)


def test_prices_come_from_litellms_cost_map() -> None:
    assert provider_price("gpt-4o-mini") == per_token("gpt-4o-mini")
    assert provider_price("openai/gpt-4o") == per_token("gpt-4o")
    assert provider_price("no-such-model") is None


def test_billed_price_markup_and_override() -> None:
    assert billed_price(
        _team(price_markup_pct=Decimal(20)), "gpt-4o", 10, 5, Decimal("0.001")
    ) == Decimal("0.0012")
    own = _team(
        model_prices={"gpt-4o": {"input_cost_per_token": "0.01", "output_cost_per_token": "0.02"}}
    )
    assert billed_price(own, "gpt-4o", 10, 5, Decimal("0.001")) == Decimal("0.2")
    assert credits_for(
        _team(billing_mode="usd", credits_per_usd=Decimal(100)), Decimal("0.0012"), 0
    ) == Decimal("0.12")
    assert credits_for(
        _team(billing_mode="tokens", tokens_per_credit=3), Decimal(0), 10
    ) == Decimal("3.3333333333")
    assert credits_for(_team(billing_mode="job"), Decimal(1), 10) == 0


def test_worst_case_is_at_least_any_real_price() -> None:
    team = _team(price_markup_pct=Decimal(10))
    body = {"model": "gpt-4o-mini", "messages": PROMPTS[1], "max_tokens": 100, "n": 2}
    tokens, usd = worst_case(team, body)
    assert usd is not None and tokens == prompt_bound(body) + 200
    inp, out = per_token("gpt-4o-mini")
    assert usd >= (inp * prompt_bound(body) + out * 200) * Decimal("1.1")
    assert worst_case(team, {**body, "model": "unknown"})[1] is None


@pytest.mark.parametrize("messages", PROMPTS)
def test_prompt_bound_is_above_litellms_token_counter(messages: list[dict[str, object]]) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm import token_counter

    for model in ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022"):
        counted = token_counter(model=model, messages=messages)
        assert counted <= prompt_bound({"model": model, "messages": messages}), model
