"""Live state: current labels of a batch (a cache), item locks, Job progress, event pub/sub.

Two implementations behind one interface: :class:`RedisLive` (``ORACULUM_REDIS_URL``; shared by all
API replicas) and :class:`MemoryLive` (in-process; the embedded default, one replica only).

Nothing here is the truth: label events are written to the object store first, and the current
labels of an iteration are a cache that is rebuilt from the store whenever it is missing (Redis
flushed, restarted, or killed). Cache entries carry the version of the event that set them (the
event's key, which sorts in time order) and are merged with "newer version wins", so a rebuild
racing with new writes, or two replicas writing, can never put an older label over a newer one.
A cleared label stays as a tombstone (label None) for the same reason.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger("oraculum.api")

#: A cached label: {"v": version, "label": str | None, "who", "when", "comment", "set", "bulk"}.
Entry = dict[str, Any]
#: How long a built cache is trusted before it is merged with the store again (seconds).
CACHE_TTL = 600


class LiveUnavailable(Exception):
    """Redis cannot be reached; the message says what was tried."""


def _newer(old: Entry | None, new: Entry) -> bool:
    return old is None or str(old.get("v", "")) < str(new.get("v", ""))


class Live(abc.ABC):
    """The interface of live state (see the module docstring)."""

    kind = "abstract"

    # -- current labels (a cache of the store's label events) ------------------------------------
    @abc.abstractmethod
    async def labels(self, experiment: str, iteration: int) -> dict[int, Entry] | None:
        """The cached labels of an iteration (tombstones included), or None when not built."""

    @abc.abstractmethod
    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False) -> None:
        """Merge entries (newer version wins); ``built`` marks the cache complete (a rebuild)."""

    @abc.abstractmethod
    async def invalidate(self, experiment: str, iteration: int) -> None:
        """Forget that the cache is complete (it is merged with the store on next read)."""

    # -- item locks ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def claim(self, key: str, who: str, ttl: float) -> tuple[str, bool]:
        """Claim ``key`` for ``who`` (or renew their claim): (holder, newly claimed)."""

    @abc.abstractmethod
    async def release(self, key: str, who: str) -> bool:
        """Release ``who``'s claim; False when someone else (or nobody) holds it."""

    async def claim_many(self, keys: list[str], who: str, ttl: float) -> list[tuple[str, bool]]:
        return [await self.claim(key, who, ttl) for key in keys]

    async def release_many(self, keys: list[str], who: str) -> None:
        for key in keys:
            await self.release(key, who)

    @abc.abstractmethod
    async def holders(self, prefix: str) -> dict[str, tuple[str, float]]:
        """Claims whose key starts with ``prefix``: key -> (holder, seconds left)."""

    # -- progress of running Jobs ----------------------------------------------------------------
    @abc.abstractmethod
    async def set_progress(self, resource: str, job: str, report: dict[str, Any], ttl: float = 3600) -> None:
        """Store the latest report of one Job of a resource."""

    @abc.abstractmethod
    async def progress(self, resource: str) -> dict[str, dict[str, Any]]:
        """Latest report per Job of a resource."""

    # -- events ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        """Send an event to every subscriber of ``channel`` (best effort)."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Events of ``channel`` from now on; the first is ``{"type": "_subscribed"}``, once
        nothing published afterwards can be missed."""

    async def ping(self) -> None:
        """Raise :class:`LiveUnavailable` when the live state cannot be reached."""

    async def close(self) -> None:
        """Release connections."""


class MemoryLive(Live):
    """In-process live state: the embedded default (no Redis), for one API process."""

    kind = "memory"

    def __init__(self) -> None:
        self._labels: dict[tuple[str, int], dict[int, Entry]] = {}
        self._built: dict[tuple[str, int], float] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._progress: dict[str, dict[str, tuple[dict[str, Any], float]]] = defaultdict(dict)
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def labels(self, experiment: str, iteration: int) -> dict[int, Entry] | None:
        key = (experiment, iteration)
        if self._built.get(key, 0) < time.monotonic():
            return None
        return dict(self._labels.get(key, {}))

    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False) -> None:
        key = (experiment, iteration)
        cache = self._labels.setdefault(key, {})
        for index, entry in entries.items():
            if _newer(cache.get(index), entry):
                cache[index] = entry
        if built:
            self._built[key] = time.monotonic() + CACHE_TTL

    async def invalidate(self, experiment: str, iteration: int) -> None:
        self._built.pop((experiment, iteration), None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, until) in self._locks.items() if until <= now]:
            del self._locks[key]

    async def claim(self, key: str, who: str, ttl: float) -> tuple[str, bool]:
        self._expire()
        holder = self._locks.get(key)
        if holder is not None and holder[0] != who:
            return holder[0], False
        self._locks[key] = (who, time.monotonic() + ttl)
        return who, holder is None

    async def release(self, key: str, who: str) -> bool:
        self._expire()
        holder = self._locks.get(key)
        if holder is None or holder[0] != who:
            return False
        del self._locks[key]
        return True

    async def holders(self, prefix: str) -> dict[str, tuple[str, float]]:
        self._expire()
        now = time.monotonic()
        return {k: (who, until - now) for k, (who, until) in self._locks.items() if k.startswith(prefix)}

    async def set_progress(self, resource: str, job: str, report: dict[str, Any], ttl: float = 3600) -> None:
        self._progress[resource][job] = (report, time.monotonic() + ttl)

    async def progress(self, resource: str) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {job: report for job, (report, until) in self._progress.get(resource, {}).items() if until > now}

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(channel, ())):
            if queue.qsize() < 1000:  # a stuck subscriber loses events, never blocks the API
                queue.put_nowait(event)

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[channel].add(queue)
        try:
            yield {"type": "_subscribed"}
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)


# Lua: merge entries into a hash, newer version wins. ARGV: index, version, json, index, version, json...
_MERGE = """
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local take = true
  if cur then
    local tab = string.find(cur, '\\t', 1, true)
    if tab and string.sub(cur, 1, tab - 1) >= ARGV[i + 1] then take = false end
  end
  if take then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '\\t' .. ARGV[i + 2]) end
end
redis.call('EXPIRE', KEYS[1], tonumber(KEYS[3]))
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], '1', 'EX', tonumber(KEYS[3])) end
return 1
"""
# Lua: claim or renew. KEYS[1] lock key; ARGV who, ttl ms. Returns {holder, newly}.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], 1}
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {cur, 0}
end
return {cur, 0}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLive(Live):
    """Live state in Redis, shared by every API replica."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "oraculum") -> None:
        import redis.asyncio as redis

        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=30, decode_responses=True,
            max_connections=256,
        )
        self._merge = self._redis.register_script(_MERGE)
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._dirty: set[tuple[str, int]] = set()

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    async def _call(self, coro: Any) -> Any:
        import redis.exceptions

        try:
            return await coro
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            raise LiveUnavailable(f"Redis at {self._redis.connection_pool.connection_kwargs.get('host')} "
                                  f"cannot be reached: {error}") from None
        except redis.exceptions.ResponseError as error:
            if "NOSCRIPT" in str(error) or "LOADING" in str(error):
                raise LiveUnavailable(f"Redis is not ready: {error}") from None
            raise

    async def _flush_dirty(self) -> None:
        """Caches that missed a write while Redis was away are marked incomplete again."""
        for experiment, iteration in list(self._dirty):
            await self._call(self._redis.delete(self._k("labels-built", experiment, iteration)))
            self._dirty.discard((experiment, iteration))

    async def labels(self, experiment: str, iteration: int) -> dict[int, Entry] | None:
        await self._flush_dirty()
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(self._k("labels-built", experiment, iteration))
        pipe.hgetall(self._k("labels", experiment, iteration))
        built, raw = await self._call(pipe.execute())
        if not built:
            return None
        out: dict[int, Entry] = {}
        for index, value in raw.items():
            version, _, body = value.partition("\t")
            entry = json.loads(body)
            entry["v"] = version
            out[int(index)] = entry
        return out

    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False) -> None:
        args: list[Any] = []
        for index, entry in entries.items():
            body = {k: v for k, v in entry.items() if k != "v"}
            args += [str(index), str(entry["v"]), json.dumps(body)]
        keys = [self._k("labels", experiment, iteration),
                self._k("labels-built", experiment, iteration) if built else "", str(CACHE_TTL)]
        try:
            await self._call(self._merge(keys=keys, args=args))
        except LiveUnavailable:
            if not built:
                self._dirty.add((experiment, iteration))
            raise

    async def invalidate(self, experiment: str, iteration: int) -> None:
        try:
            await self._call(self._redis.delete(self._k("labels-built", experiment, iteration)))
        except LiveUnavailable:
            self._dirty.add((experiment, iteration))
            raise

    async def claim(self, key: str, who: str, ttl: float) -> tuple[str, bool]:
        holder, newly = await self._call(self._claim(keys=[self._k("lock", key)], args=[who, int(ttl * 1000)]))
        return str(holder), bool(newly)

    async def release(self, key: str, who: str) -> bool:
        return bool(await self._call(self._release(keys=[self._k("lock", key)], args=[who])))

    async def claim_many(self, keys: list[str], who: str, ttl: float) -> list[tuple[str, bool]]:
        if len(keys) == 1:
            return [await self.claim(keys[0], who, ttl)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            await self._claim(keys=[self._k("lock", key)], args=[who, int(ttl * 1000)], client=pipe)
        results = await self._call(pipe.execute())
        return [(str(holder), bool(newly)) for holder, newly in results]

    async def release_many(self, keys: list[str], who: str) -> None:
        if len(keys) == 1:
            await self.release(keys[0], who)
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            await self._release(keys=[self._k("lock", key)], args=[who], client=pipe)
        await self._call(pipe.execute())

    async def holders(self, prefix: str) -> dict[str, tuple[str, float]]:
        base = self._k("lock", "")
        keys = [key async for key in self._redis.scan_iter(match=base + _glob_escape(prefix) + "*", count=500)]
        if not keys:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        values = await self._call(pipe.execute())
        out = {}
        for position, key in enumerate(keys):
            who, ttl = values[2 * position], values[2 * position + 1]
            if who is not None and ttl and ttl > 0:
                out[key[len(base):]] = (who, ttl / 1000)
        return out

    async def set_progress(self, resource: str, job: str, report: dict[str, Any], ttl: float = 3600) -> None:
        key = self._k("progress", resource)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, job, json.dumps(report))
        pipe.expire(key, int(ttl))
        await self._call(pipe.execute())

    async def progress(self, resource: str) -> dict[str, dict[str, Any]]:
        raw = await self._call(self._redis.hgetall(self._k("progress", resource)))
        return {job: json.loads(value) for job, value in raw.items()}

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        await self._call(self._redis.publish(self._k("events", channel), json.dumps(event)))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self._k("events", channel)))
            yield {"type": "_subscribed"}
            while True:
                message = await self._call(pubsub.get_message(timeout=1.0))
                if message is None:
                    continue
                try:
                    yield json.loads(message["data"])
                except (ValueError, TypeError):
                    continue
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def open_live(redis_url: str | None) -> Live:
    """Redis when a URL is configured, else in-process state."""
    return RedisLive(redis_url) if redis_url else MemoryLive()
