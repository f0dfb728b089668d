"""The key cache on its own: TTL, fail closed without its subscription, drops per team."""

from __future__ import annotations

from shared.models import ApiKey, Team
from shared.teams.keycache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _key(team_id: str, scopes: list[str] | None = None) -> tuple[ApiKey, Team]:
    team = Team(id=team_id, name=team_id, status="active", allowed_models=["m"])
    key = ApiKey(id="key_" + team_id, team_id=team_id, scopes=scopes)
    return key, team


def test_an_entry_lives_for_the_ttl_only() -> None:
    clock = Clock()
    cache = KeyCache(5, clock)
    cache.connected = True
    cache.put("h", *_key("t1", ["jobs:read"]))
    clock.now += 4.9
    entry = cache.get("h")
    assert entry is not None and entry.scopes == ("jobs:read",) and entry.team_id == "t1"
    assert entry.team.allowed_models == ["m"]
    clock.now += 0.1
    assert cache.get("h") is None and "h" not in cache.entries


def test_without_its_subscription_the_cache_is_not_used() -> None:
    cache = KeyCache(5)
    cache.put("h", *_key("t1"))
    assert cache.get("h") is None and not cache.entries  # never connected: nothing stored
    cache.connected = True
    cache.put("h", *_key("t1"))
    cache.connected = False  # the subscription dropped: entries may have missed a revoke
    assert cache.get("h") is None
    assert KeyCache(0).enabled is False  # AUTH_KEY_CACHE_SECONDS=0: off


def test_a_team_change_drops_that_teams_keys_only() -> None:
    cache = KeyCache(5)
    cache.connected = True
    cache.put("a1", *_key("ta"))
    cache.put("a2", *_key("ta"))
    cache.put("b", *_key("tb"))
    cache.drop_team("ta")
    assert cache.get("a1") is None and cache.get("a2") is None
    assert cache.get("b") is not None and cache.invalidations == 1
