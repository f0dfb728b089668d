"""The models the proxy serves: one list per provider key, plus the offline `demo` model.

`proxy/config.yaml` (production) and the config `saas-llm up` writes are both built from this
list; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# provider key variable -> (model name served, LiteLLM model)
PROVIDER_MODELS: dict[str, list[tuple[str, str]]] = {
    "OPENAI_API_KEY": [
        ("gpt-4o-mini", "openai/gpt-4o-mini"),
        ("gpt-4o", "openai/gpt-4o"),
        ("gpt-4.1-mini", "openai/gpt-4.1-mini"),
    ],
    # claude-3-5-* are no longer in LiteLLM 1.108.7's price map (no cost would be reported).
    "ANTHROPIC_API_KEY": [
        ("claude-haiku-4-5", "anthropic/claude-haiku-4-5"),
        ("claude-sonnet-4-5", "anthropic/claude-sonnet-4-5"),
    ],
}

DEMO_MODEL = "demo"
DEMO_RESPONSE = (
    "Hello from the saas-llm demo model. This answer is canned and offline; set OPENAI_API_KEY "
    "or ANTHROPIC_API_KEY and run `saas-llm up` again to use real models."
)


def demo_model() -> dict[str, Any]:
    """Served by LiteLLM from `mock_response`, priced as gpt-4o-mini, with usage and cost."""
    return {
        "model_name": DEMO_MODEL,
        "litellm_params": {
            "model": "openai/gpt-4o-mini",
            "api_key": "demo-needs-no-key",
            "mock_response": DEMO_RESPONSE,
        },
    }


def provider_models(env: Mapping[str, str], *, all_providers: bool = False) -> list[dict[str, Any]]:
    """Entries for each provider whose key is set in `env` (or every provider)."""
    out: list[dict[str, Any]] = []
    for key_var, models in PROVIDER_MODELS.items():
        if not all_providers and not env.get(key_var):
            continue
        for name, litellm_model in models:
            out.append(
                {
                    "model_name": name,
                    "litellm_params": {"model": litellm_model, "api_key": f"os.environ/{key_var}"},
                }
            )
    return out


def model_list(env: Mapping[str, str]) -> list[dict[str, Any]]:
    return [*provider_models(env), demo_model()]
