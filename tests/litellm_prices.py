"""LiteLLM's own price list (the offline copy that ships in the package), read without importing
litellm, so that tests compare stored costs with what LiteLLM charges."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path


@lru_cache(maxsize=1)
def _prices() -> dict[str, dict]:
    spec = find_spec("litellm")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    return dict(json.loads(path.read_text()))


def per_token(model: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per token for `model`, exact as written in LiteLLM's list."""
    entry = _prices()[model]
    return Decimal(str(entry["input_cost_per_token"])), Decimal(str(entry["output_cost_per_token"]))
