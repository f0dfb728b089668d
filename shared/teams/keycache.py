"""An in-process cache of authenticated API keys, so that a team request skips the key lookup.

An entry holds what authentication decides on: the key's id, team, scopes and expiry, and a
snapshot of its (active) team's row, for `AUTH_KEY_CACHE_SECONDS` (5 s; 0: no cache). It is
dropped at once, in every API process, when anything about the team changes: a key revoked,
the team suspended or resumed, its settings changed. Those changes wake the team's channel
(`shared.queue.team_channel`) after they commit, and every API process listens on it
(`listen`), so the next request anywhere looks the key up again.

Fail closed: the cache is used only while this process's subscription is up. When Redis goes
away (or the subscription fails) the cache is emptied and every request looks its key up in
Postgres until the subscription is back; the TTL bounds the time an invalidation can be missed
before the loss of the subscription is noticed. Only successful lookups are cached: an unknown,
revoked or expired key is looked up every time (and throttled as before).

Money never comes from the snapshot: the team's counters (balance, reserved credits) are expired
on every hit, so any read of the team row in the request loads them fresh, and every credit and
budget decision locks and re-reads the team row anyway (`shared.billing.ledger.lock_team`, or
reads it in SQL).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from shared.config import Settings
from shared.models import ApiKey, Team
from shared.queue import Queue, team_channel

log = logging.getLogger("saas_llm.api")
# Columns that change without a team change (credits granted, reserved, charged): never served
# from the snapshot.
COUNTERS = ["credits_balance", "credits_reserved", "low_credits_notified", "updated_at"]


@dataclass(frozen=True)
class CachedKey:
    key_id: str
    team_id: str
    scopes: tuple[str, ...] | None  # None: an unrestricted key
    expires_at: datetime | None
    last_used_at: datetime | None
    team: Team  # a detached snapshot; merged into each request's session, never used directly
    stored: float


def _snapshot(team: Team) -> Team:
    """A detached copy of `team`'s column values, as if loaded by another session."""
    values = {attr.key: getattr(team, attr.key) for attr in inspect(Team).column_attrs}
    copy = Team(**values)
    make_transient_to_detached(copy)
    return copy


class KeyCache:
    """Key hash -> CachedKey, per process; see the module's docstring."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.entries: dict[str, CachedKey] = {}
        self.connected = False  # the invalidation subscription is up: the cache may be used
        self.invalidations = 0  # team changes heard (for /metrics and the tests)
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.connected

    def get(self, digest: str) -> CachedKey | None:
        if not self.enabled:
            return None
        entry = self.entries.get(digest)
        if entry is None or self.clock() - entry.stored >= self.ttl:
            if entry is not None:
                del self.entries[digest]
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, digest: str, key: ApiKey, team: Team) -> None:
        if not self.enabled:
            return
        self.entries[digest] = CachedKey(
            key_id=key.id,
            team_id=team.id,
            scopes=tuple(key.scopes) if key.scopes is not None else None,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            team=_snapshot(team),
            stored=self.clock(),
        )

    def touched(self, digest: str, when: datetime) -> None:
        entry = self.entries.get(digest)
        if entry is not None:
            self.entries[digest] = replace(entry, last_used_at=when)

    def drop(self, digest: str) -> None:
        self.entries.pop(digest, None)

    def drop_team(self, team_id: str) -> None:
        for digest in [d for d, e in self.entries.items() if e.team_id == team_id]:
            del self.entries[digest]
        self.invalidations += 1

    def clear(self) -> None:
        self.entries.clear()

    async def team_of(self, session: AsyncSession, entry: CachedKey) -> Team:
        """The cached team attached to `session` without a query (`merge(load=False)`), its
        money counters expired: the next query of the team row in this session loads them (and
        reading them without one fails loudly instead of showing a stale balance)."""
        team = await session.merge(entry.team, load=False)
        session.expire(team, COUNTERS)
        return team

    async def listen(self, queue: Queue, settings: Settings) -> None:
        """Drop a team's entries whenever its channel is woken; run under `shared.retry.forever`.
        The cache is on only while this runs subscribed."""
        prefix = team_channel(settings, "")
        pubsub: Any = queue.pubsub()
        try:
            await pubsub.psubscribe(prefix + "*")
            async for message in pubsub.listen():
                kind = message.get("type")
                if kind == "psubscribe":
                    self.clear()  # whatever was missed while unsubscribed is gone
                    self.connected = True
                    log.info("key cache on")
                elif kind == "pmessage":
                    channel = message.get("channel") or ""
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    self.drop_team(channel[len(prefix) :])
        finally:
            self.connected = False
            self.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()
