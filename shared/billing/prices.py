"""Prices: LiteLLM's model cost map, a team's markup and per-model overrides, worst cases.

The map is the JSON file LiteLLM ships and loads itself with LITELLM_LOCAL_MODEL_COST_MAP=True
(`litellm.model_cost`); litellm is a dependency of the images, and the file is read from the
installed package directly, without importing litellm, whose import costs seconds of CPU.
`BILLING_MODEL_COST_MAP` points at another copy (optional).

Two worst cases of a call:
- at admission, in the API (`worst_case`): a bound no BPE tokenizer can exceed, one token per
  UTF-8 byte of the JSON of the prompt plus per-message overhead plus a fixed allowance per
  image. It costs microseconds and no litellm import; it is what credits are held against and
  what the submit-time budget check and resuming compare with, so they err on the safe side.
- before each provider request, in the worker (`counted_worst_case`): the prompt tokens by
  LiteLLM's token counter for the call's model and messages (and tools) x input price +
  `max_tokens` x `n` x output price. This is what the guarded budget UPDATE reserves.
"""

from __future__ import annotations

import json
import os
import threading
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from shared.models import Team

QUANTUM = Decimal("0.0000000001")  # the 10 decimal places money columns store
MESSAGE_OVERHEAD = 8  # role, separators and reply priming, generously
IMAGE_TOKENS = 2000  # more than any provider bills for one image at full detail
PROMPT_KEYS = ("messages", "tools", "functions", "response_format", "tool_choice", "prediction")


def q(value: Decimal) -> Decimal:
    """Rounded to the stored precision (half up)."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def q_up(value: Decimal) -> Decimal:
    """Rounded up to the stored precision: for worst cases."""
    return value.quantize(QUANTUM, rounding=ROUND_CEILING)


@lru_cache(maxsize=4)
def _load(path: str | None) -> dict[str, Any]:
    if path is None:
        spec = find_spec("litellm")
        if spec is None or spec.origin is None:
            return {}
        path = str(Path(spec.origin).parent / "model_prices_and_context_window_backup.json")
    try:
        return dict(json.loads(Path(path).read_text()))
    except OSError:
        return {}


def cost_map(path: str | None = None) -> dict[str, Any]:
    """LiteLLM's model cost map (empty if none is installed)."""
    return _load(path or os.environ.get("BILLING_MODEL_COST_MAP") or None)


def provider_price(model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per token for `model` as LiteLLM prices it, exact as written."""
    entry = cost_map().get(model) or cost_map().get(model.split("/", 1)[-1])
    if not entry:
        return None
    try:
        return (
            Decimal(str(entry["input_cost_per_token"])),
            Decimal(str(entry["output_cost_per_token"])),
        )
    except KeyError:
        return None


def override(team: Team, model: str) -> tuple[Decimal, Decimal] | None:
    """The team's own billed price per token for `model`, if set."""
    entry = (team.model_prices or {}).get(model)
    if not entry:
        return None
    return Decimal(str(entry["input_cost_per_token"])), Decimal(str(entry["output_cost_per_token"]))


def markup(team: Team) -> Decimal:
    return 1 + Decimal(team.price_markup_pct or 0) / 100


def billed_price(
    team: Team, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal | None
) -> Decimal:
    """What the team pays for a call: its per-model override, else LiteLLM's price + markup."""
    own = override(team, model)
    if own is not None:
        return q(own[0] * prompt_tokens + own[1] * completion_tokens)
    return q(Decimal(cost_usd or 0) * markup(team))


def prompt_bound(body: dict[str, Any]) -> int:
    """An upper bound of the prompt tokens of `body` under any tokenizer."""
    parts = {k: body[k] for k in PROMPT_KEYS if k in body}
    size = len(json.dumps(parts, ensure_ascii=False).encode())
    messages = body.get("messages") or []
    images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") in ("image_url", "input_image", "image")
    )
    return size + MESSAGE_OVERHEAD * (len(messages) + 1) + IMAGE_TOKENS * images


def output_bound(body: dict[str, Any]) -> int:
    """max_tokens (or max_completion_tokens) times n."""
    per_choice = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return int(per_choice) * int(body.get("n") or 1)


_counter_ready = threading.Event()


def warm_counter() -> None:
    """Import litellm and load the common encodings (seconds of CPU, once per process): the
    worker runs this in a thread at start, and counts in threads until it has finished."""
    for model in ("gpt-4o-mini", "gpt-4"):  # o200k_base and cl100k_base
        counted_prompt_tokens({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    _counter_ready.set()


def counter_ready() -> bool:
    return _counter_ready.is_set()


def counted_prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens of `body` by LiteLLM's token counter for its model (tiktoken or the
    model's bundled tokenizer; images count LiteLLM's default, never fetched)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm import token_counter

    return int(
        token_counter(
            model=str(body["model"]),
            messages=list(body.get("messages") or []),
            tools=body.get("tools"),
            tool_choice=body.get("tool_choice"),
            use_default_image_token_count=True,
        )
    )


def worst_case(team: Team, body: dict[str, Any]) -> tuple[int, Decimal | None]:
    """(tokens, billed USD) the call can cost at most, by the byte bound of its prompt; USD
    None when no price is known."""
    return _worst(team, body, prompt_bound(body))


def counted_worst_case(team: Team, body: dict[str, Any]) -> tuple[int, Decimal | None]:
    """(tokens, billed USD) of the call's worst case by LiteLLM's token counter."""
    return _worst(team, body, counted_prompt_tokens(body))


def _worst(team: Team, body: dict[str, Any], prompt: int) -> tuple[int, Decimal | None]:
    output = output_bound(body)
    model = str(body["model"])
    own = override(team, model)
    if own is not None:
        return prompt + output, q_up(own[0] * prompt + own[1] * output)
    price = provider_price(model)
    if price is None:
        return prompt + output, None
    return prompt + output, q_up((price[0] * prompt + price[1] * output) * markup(team))


def credits_for(team: Team, billed_usd: Decimal, tokens: int) -> Decimal:
    """Credits a succeeded call costs in `usd` or `tokens` mode (0 in `job` mode)."""
    if team.billing_mode == "usd":
        return q(billed_usd * Decimal(team.credits_per_usd))
    if team.billing_mode == "tokens":
        return q(Decimal(tokens) / Decimal(team.tokens_per_credit))
    return Decimal(0)
