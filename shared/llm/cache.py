"""Response caching, a team setting: requests of a team with `cache_enabled` ask the proxy's
Redis response cache (LiteLLM's per-request cache controls), namespaced by team so an answer is
never served to another team, with the team's TTL (or `CACHE_DEFAULT_TTL_SECONDS`).

The proxy's cache runs in `default_off` mode: a request without these controls is never served
from nor written to the cache, so teams without the setting and the clients' own `cache`
parameter (refused by the API) change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.models import Team


@dataclass(frozen=True)
class CachePolicy:
    team_id: str
    ttl_seconds: int

    @property
    def namespace(self) -> str:
        return f"saas-llm:team:{self.team_id}"


def cache_policy(team: Team, default_ttl: int) -> CachePolicy | None:
    """The team's cache policy, or None when its caching is off."""
    if not team.cache_enabled:
        return None
    return CachePolicy(team.id, team.cache_ttl_seconds or default_ttl)


def with_cache(body: dict[str, Any], policy: CachePolicy | None) -> dict[str, Any]:
    """The request to send: `body` plus the proxy's cache controls when the policy says so."""
    if policy is None:
        return body
    controls = {"use-cache": True, "ttl": policy.ttl_seconds, "namespace": policy.namespace}
    return {**body, "cache": controls}
