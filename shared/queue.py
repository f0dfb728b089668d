"""The arq queue: connection, JSON serialization, and enqueueing tasks by name.

Apart from `worker/main.py`, this is the only module that imports arq. Messages are JSON, not
pickle, so that tasks queued by one release can be read by the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from typing import Any, NoReturn

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from arq.worker import Retry as RetryTask
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.retry import backoff

log = logging.getLogger("saas_llm.queue")
Queue = ArqRedis  # the queue client type, for modules that must not import arq themselves
RUN_CALL = "run_call"
DELIVER_EVENT = "deliver_event"
CANCEL_CHANNEL_SUFFIX = ":cancel"
WAKE_CHANNEL_SUFFIX = ":wake"


def serialize(data: dict[str, Any]) -> bytes:
    # default=str: arq also stores failure results, which may hold exception objects.
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def deserialize(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


def redis_settings(settings: Settings, *, retry_attempts: int | None = None) -> RedisSettings:
    """Connection settings; commands retry on connection errors so a Redis restart is survived."""
    rs = RedisSettings.from_dsn(settings.effective_redis_url)
    rs.conn_timeout = 5
    rs.conn_retries = 2
    attempts = settings.redis_retry_attempts if retry_attempts is None else retry_attempts
    rs.retry_on_error = [RedisConnectionError, RedisTimeoutError, ConnectionError, OSError]
    rs.retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), attempts)
    return rs


class PoolExhausted(RedisConnectionError):
    """Every connection of the bounded pool stayed in use for the pool timeout."""


class BoundedPool(BlockingConnectionPool):
    """At most `max_connections`; a caller waits up to `timeout` for one, then PoolExhausted."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections of this process are in use "
                    "(REDIS_MAX_CONNECTIONS)"
                ) from exc
            raise


async def create_queue(settings: Settings, *, retry_attempts: int | None = None) -> ArqRedis:
    """A connection pool to the queue's Redis."""
    return await create_pool(
        redis_settings(settings, retry_attempts=retry_attempts),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.worker_queue_name,
    )


class LongPollQueue(ArqRedis):
    """The worker's queue client: its queue reads wait for new entries instead of arq's poll.

    arq's worker reads its queue (ZRANGEBYSCORE) once per poll and sleeps between reads, so a
    new entry waited half of `WORKER_POLL_DELAY_SECONDS` on average before it started. For the
    queues that `listen` registered, a read here returns at once only the entries it has not
    returned before (an entry queued again, by a retry, has a new score and counts as new).
    When there are none it waits for `wake`, which the worker calls for each message on the
    wake channel (whoever enqueues publishes there: `wake_workers`), and reads again. At least
    every `wait_seconds` a read returns everything that is due, as arq's own poll did: entries
    whose worker died, and any that a worker could not start. The worker's arq poll delay is
    therefore short (`LOOP_SECONDS`): it is only the pause between a read and the next.

    So an entry starts a moment after it is enqueued; an idle worker still reads once per
    `wait_seconds`; the entries already running are checked (three Redis round trips each, by
    arq) no more often than before. A lost wake-up (Redis restarting, the listener
    reconnecting) costs no more than the poll it replaces."""

    # arq's poll delay for a worker on this client.
    LOOP_SECONDS = 0.005

    def __init__(self, *args: Any, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_seconds = wait_seconds
        self._wakes: dict[str, asyncio.Event] = {}
        self._returned: dict[str, set[tuple[bytes, float]]] = {}
        self._everything_at: dict[str, float] = {}

    def listen(self, queue_name: str) -> None:
        """Make the reads of `queue_name` wait for new entries."""
        self._wakes.setdefault(queue_name, asyncio.Event())

    def wake(self, queue_name: str) -> None:
        """`queue_name` has new entries: end the wait of its read, if one is waiting."""
        event = self._wakes.get(queue_name)
        if event is not None:
            event.set()

    async def zrangebyscore(  # type: ignore[override]
        self,
        name: str,
        min: float | str,
        max: float | str,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: Any = float,
    ) -> Any:
        event = self._wakes.get(name) if isinstance(name, str) and not withscores else None
        if event is None:
            return await super().zrangebyscore(
                name, min, max, start, num, withscores, score_cast_func
            )
        loop = asyncio.get_running_loop()
        due = self._everything_at.get(name, 0.0) + self.wait_seconds
        while True:
            if not event.is_set() and name in self._returned:
                # Nothing was enqueued since the last read: wait for that, or for the next
                # read of everything.
                left = due - loop.time()  # (`max` is arq's argument here)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left if left > 0 else 0.0)
            event.clear()  # before the read: a wake-up that comes during it is not missed
            # `max` was "now" when arq asked; an entry queued since is scored after that.
            found = await self._startable(name, min, timestamp_ms(), start, num)
            if loop.time() >= due:
                self._returned[name] = set(found)
                self._everything_at[name] = loop.time()
                return [entry for entry, _ in found]
            returned = self._returned.setdefault(name, set())
            new = [item for item in found if item not in returned]
            if new:
                returned.update(new)
                return [entry for entry, _ in new]

    async def _startable(
        self, name: str, min: float | str, max: float | str, start: int | None, num: int | None
    ) -> list[tuple[bytes, float]]:
        """The due entries of `name` whose task is not running (in any worker), with scores.

        arq keeps a running task's entry in the queue until it ends, and checks each entry it
        reads in three round trips (WATCH, EXISTS of its in-progress key, ZSCORE) before it
        can tell that one is running: with every slot busy, each read of everything paid that
        for every running entry, more than the tasks' own round trips. The script leaves those
        out in the read itself. arq's check still decides (an entry started elsewhere since is
        refused by it, as before); an entry whose worker died reappears when its in-progress
        key expires, as it did for arq's check."""
        limit = [start, num] if start is not None and num is not None and num >= 0 else []
        flat = await self._startable_script(
            keys=[name], args=[min, max, in_progress_key_prefix, *limit]
        )
        return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]

    @functools.cached_property
    def _startable_script(self) -> Any:
        return self.register_script(_STARTABLE_SCRIPT)


# ZRANGEBYSCORE WITHSCORES [LIMIT offset count], less the entries whose in-progress key exists,
# with the limit applied to what is left: the running entries are the oldest, and as a plain
# LIMIT a worker that asked for `count` entries got none while `count` ran in other workers
# (arq's own read has that flaw). It reads on in steps of `count` until it has `count` startable
# entries or the due entries run out, so it reads at most the running entries plus `count`.
# The in-progress keys are named in the script (arq's own transactions already need every key
# on one Redis node).
_STARTABLE_SCRIPT = """
local out = {}
local count = tonumber(ARGV[5])
local function keep(found)
  for i = 1, #found, 2 do
    if (not count or #out < 2 * count) and redis.call('exists', ARGV[3] .. found[i]) == 0 then
      out[#out + 1] = found[i]
      out[#out + 1] = found[i + 1]
    end
  end
end
if not count then
  keep(redis.call('zrangebyscore', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES'))
  return out
end
local offset = tonumber(ARGV[4])
while count > 0 and #out < 2 * count do
  local found = redis.call('zrangebyscore', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES',
                           'LIMIT', offset, count)
  keep(found)
  if #found < 2 * count then
    break
  end
  offset = offset + count
end
return out
"""


def open_queue(
    settings: Settings,
    *,
    retry_attempts: int | None = None,
    bounded: bool = False,
    long_poll: bool = False,
) -> ArqRedis:
    """A queue client that connects on first use instead of at once, so that a process (the API)
    starts while Redis is down; its commands then fail until Redis is back.

    `bounded` (the API): at most REDIS_MAX_CONNECTIONS connections; a command waits up to
    REDIS_POOL_TIMEOUT_SECONDS for a free one, then raises PoolExhausted (a 503).
    `long_poll` (the worker): a `LongPollQueue`, whose empty queue reads wait for a wake-up."""
    rs = redis_settings(settings, retry_attempts=retry_attempts)
    options: dict[str, Any] = {
        "host": rs.host,
        "port": rs.port,
        "db": rs.database,
        "username": rs.username,
        "password": rs.password,
        "socket_connect_timeout": rs.conn_timeout,
        "retry": rs.retry,
        "retry_on_error": rs.retry_on_error,
        "encoding": "utf8",
    }
    if bounded:
        if rs.ssl:
            options["connection_class"] = SSLConnection
            options.update(
                ssl_cert_reqs=rs.ssl_cert_reqs,
                ssl_ca_certs=rs.ssl_ca_certs,
                ssl_check_hostname=rs.ssl_check_hostname,
            )
        pool = ArqRedis(
            BoundedPool(
                max_connections=settings.redis_max_connections,
                timeout=settings.redis_pool_timeout_seconds,  # type: ignore[arg-type]
                **options,
            )
        )
    else:
        options.update(
            ssl=rs.ssl,
            ssl_cert_reqs=rs.ssl_cert_reqs,
            ssl_ca_certs=rs.ssl_ca_certs,
            ssl_check_hostname=rs.ssl_check_hostname,
            max_connections=rs.max_connections,
        )
        if long_poll:
            pool = LongPollQueue(**options, wait_seconds=settings.worker_poll_delay_seconds)
        else:
            pool = ArqRedis(**options)
    pool.job_serializer = serialize
    pool.job_deserializer = deserialize
    pool.default_queue_name = settings.worker_queue_name
    return pool


def cancel_channel(settings: Settings) -> str:
    return settings.worker_queue_name + CANCEL_CHANNEL_SUFFIX


def wake_channel(queue: ArqRedis) -> str:
    """Where enqueuers tell the workers that a queue has new entries (the message is the
    queue's name); one channel per deployment, named after its calls' queue."""
    return queue.default_queue_name + WAKE_CHANNEL_SUFFIX


async def wake_workers(queue: ArqRedis, queue_name: str | None = None) -> None:
    """Wake the workers reading `queue_name` (default: the calls' queue); best effort, as
    they also poll."""
    try:
        await queue.publish(wake_channel(queue), queue_name or queue.default_queue_name)
    except (RedisConnectionError, RedisTimeoutError, OSError):
        pass


def retry_later(job_try: int) -> NoReturn:
    """Ask arq to run the current task again after a short, growing, jittered delay."""
    raise RetryTask(defer=backoff(job_try, base=0.1, cap=2.0))


def retry_now() -> NoReturn:
    """Put the current task back at the end of the queue (the fair claim ran another call)."""
    raise RetryTask(defer=0)


def call_task_id(call_id: str, attempts: int) -> str:
    """One queue entry per attempt: enqueueing the same attempt twice is a no-op in arq."""
    return f"call:{call_id}:{attempts}"


async def _enqueue_call(
    queue: ArqRedis, call_id: str, *, attempts: int = 0, defer_by: float | None = None
) -> None:
    await queue.enqueue_job(
        RUN_CALL, call_id, _job_id=call_task_id(call_id, attempts), _defer_by=defer_by
    )


async def enqueue_call(
    queue: ArqRedis, call_id: str, *, attempts: int = 0, defer_by: float | None = None
) -> None:
    """Queue one call (and wake the workers, unless it is deferred); the call row decides
    whether it still needs running."""
    await _enqueue_call(queue, call_id, attempts=attempts, defer_by=defer_by)
    if not defer_by:
        await wake_workers(queue)


async def enqueue_call_again(queue: ArqRedis, call_id: str) -> None:
    """Give a queued call a fresh queue entry now, under an id of its own (its own entry is in
    progress, running another call for the fair claim, and may stay so for that call's whole
    latency)."""
    await queue.enqueue_job(RUN_CALL, call_id, _job_id=f"call:{call_id}:again:{uuid.uuid4().hex}")
    await wake_workers(queue)


async def missing_call_tasks(
    queue: ArqRedis, calls: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """The (call id, attempts) pairs whose queue entry does not exist, in one round trip."""
    if not calls:
        return []
    async with queue.pipeline(transaction=False) as pipe:
        for call_id, attempts in calls:
            pipe.exists(job_key_prefix + call_task_id(call_id, attempts))
        present = await pipe.execute()
    return [item for item, exists in zip(calls, present, strict=True) if not exists]


async def enqueue_calls(queue: ArqRedis, call_ids: list[str]) -> None:
    """Queue many new calls, a hundred round trips at a time, waking the workers after each
    hundred."""
    for start in range(0, len(call_ids), 100):
        chunk = call_ids[start : start + 100]
        await asyncio.gather(*(_enqueue_call(queue, call_id) for call_id in chunk))
        await wake_workers(queue)


def delivery_task_id(delivery_id: str, attempts: int) -> str:
    """One queue entry per webhook attempt, like calls."""
    return f"deliver:{delivery_id}:{attempts}"


def webhook_queue_name(settings: Settings) -> str:
    """Webhook deliveries have their own queue (and consumer), so that a backlog of LLM calls
    never delays them."""
    return settings.worker_queue_name + ":webhooks"


async def enqueue_delivery(
    queue: ArqRedis,
    settings: Settings,
    delivery_id: str,
    *,
    attempts: int = 0,
    defer_by: float | None = None,
) -> None:
    """Queue one webhook delivery attempt; the delivery row decides whether it is still due."""
    await queue.enqueue_job(
        DELIVER_EVENT,
        delivery_id,
        _job_id=delivery_task_id(delivery_id, attempts),
        _defer_by=defer_by,
        _queue_name=webhook_queue_name(settings),
    )
    if not defer_by:
        await wake_workers(queue, webhook_queue_name(settings))


def job_channel(settings: Settings, job_id: str) -> str:
    return f"{settings.worker_queue_name}:job:{job_id}"


class Publisher:
    """A process's job wake-ups (for a job's live-status streams, which listen on
    `job_channel`), sent without holding the caller up: `publish` only notes the channel, and a
    task sends every channel noted meanwhile as one pipeline of PUBLISHes, one per channel, once
    the event loop turns. Under load one send carries several wake-ups (each would otherwise be
    a round trip of its own through the pool), and a job changed twice before the send is woken
    once. Best effort: the streams also poll, so a batch that Redis refuses, or does not answer
    within `timeout`, is dropped (and at most `max_pending` channels wait meanwhile)."""

    def __init__(self, queue: ArqRedis, *, max_pending: int = 10_000, timeout: float = 5.0) -> None:
        self.queue = queue
        self.max_pending = max_pending
        self.timeout = timeout  # of one send
        self._pending: dict[str, None] = {}
        self._task: asyncio.Task[None] | None = None
        self.sends = 0  # pipelines sent, for tests and benchmarks
        self.published = 0  # PUBLISHes in them

    def publish(self, channel: str) -> None:
        if len(self._pending) < self.max_pending:
            self._pending[channel] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = list(self._pending), {}
            try:
                async with self.queue.pipeline(transaction=False) as pipe:
                    for channel in batch:
                        pipe.publish(channel, "changed")
                    # A frozen Redis holds no wake-up for long (redis-py drops a connection
                    # whose command was cut short).
                    await asyncio.wait_for(pipe.execute(), timeout=self.timeout)
            except (RedisError, OSError, TimeoutError):
                continue
            self.sends += 1
            self.published += len(batch)

    async def aclose(self) -> None:
        """Send what is still noted (at shutdown), for at most one send's timeout."""
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=self.timeout)
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self.sends:
            log.info(
                "job wake-ups sent",
                extra={"published": self.published, "sends": self.sends},
            )


def team_channel(settings: Settings, team_id: str) -> str:
    return f"{settings.worker_queue_name}:team:{team_id}"


async def notify_team(queue: ArqRedis, settings: Settings, team_id: str) -> None:
    """Tell the team's open streams that the team changed (suspended, say); best effort."""
    try:
        await queue.publish(team_channel(settings, team_id), "changed")
    except (RedisConnectionError, RedisTimeoutError, OSError):
        pass


async def publish_cancel(queue: ArqRedis, settings: Settings, call_ids: list[str]) -> None:
    """Tell every worker to abort these calls if it is running them."""
    if call_ids:
        await queue.publish(cancel_channel(settings), json.dumps(call_ids))


# arq's `enqueue_job` in one round trip: WATCH, EXISTS, then MULTI/EXEC is three (and holds a
# connection for all of them). The script does what those do, atomically, for a batch of
# entries: an entry whose job or result key exists is left alone, as arq leaves it.
_ENQUEUE_SCRIPT = """
local added = 0
for i = 1, #KEYS, 2 do
  if redis.call('exists', KEYS[i], KEYS[i + 1]) == 0 then
    local a = (i - 1) / 2 * 3
    redis.call('psetex', KEYS[i], ARGV[a + 1], ARGV[a + 2])
    redis.call('zadd', ARGV[#ARGV], ARGV[a + 3], string.sub(KEYS[i], #ARGV[#ARGV - 1] + 1))
    added = added + 1
  end
end
if added > 0 then
  redis.call('publish', ARGV[#ARGV - 2], ARGV[#ARGV])
end
return added
"""
# The script wakes the workers itself (`wake_workers`' message, on its channel) when it added an
# entry: a submission is one round trip to Redis, not two.
_ENQUEUE_CHUNK = 500


async def enqueue_new_calls(queue: ArqRedis, call_ids: list[str]) -> None:
    """`enqueue_calls` in one round trip per few hundred calls: the same queue entries (ids,
    messages, scores and expiry as arq writes them), added by one script instead of three round
    trips per call, which also wakes the workers when it added any."""
    script = queue.register_script(_ENQUEUE_SCRIPT)
    for start in range(0, len(call_ids), _ENQUEUE_CHUNK):
        keys: list[str] = []
        args: list[Any] = []
        now_ms = timestamp_ms()
        for call_id in call_ids[start : start + _ENQUEUE_CHUNK]:
            job_id = call_task_id(call_id, 0)
            keys += [job_key_prefix + job_id, result_key_prefix + job_id]
            message = serialize_job(
                RUN_CALL, (call_id,), {}, None, now_ms, serializer=queue.job_serializer
            )
            args += [queue.expires_extra_ms, message, now_ms]
        await script(
            keys=keys,
            args=[*args, wake_channel(queue), job_key_prefix, queue.default_queue_name],
        )
