"""Live state: current labels of a batch (a cache), item locks, Job progress, event pub/sub.

Two implementations behind one interface: :class:`RedisLive` (``ORACULUM_REDIS_URL``; shared by all
API replicas) and :class:`MemoryLive` (in-process; the embedded default, one replica only).

Nothing here is the truth: label events are written to the object store first, and the current
labels of an iteration are a cache that is rebuilt from the store whenever it is missing (Redis
flushed, restarted, or killed). Cache entries carry the version of the event that set them (the
event's key, which sorts in time order) and are merged with "newer version wins", so a rebuild
racing with new writes, or two replicas writing, can never put an older label over a newer one.
A cleared label stays as a tombstone (label None) for the same reason.

Cache entries also name the sample of their spectrum in the batch (``set``: oracle or
estimation), and the live state counts labelled spectra per sample as it merges, so a label
write learns the batch's progress without reading every label back. In Redis a label write is
two round trips (claim; then merge + release + count + publish, :data:`redis_scripts.COMMIT`) and
a batch read one (:data:`redis_scripts.VIEW`).
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from . import redis_scripts as scripts

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
    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False, *,
                           release: Sequence[str] = (), who: str = "", count: Sequence[str] = (),
                           event: dict[str, Any] | None = None) -> dict[str, int] | None:
        """Merge entries (newer version wins); ``built`` marks the cache complete (a rebuild).

        In the same step (one round trip: a label write needs no other), release ``who``'s claims
        on the lock keys ``release``, count the labelled spectra (not tombstones) of each sample
        named in ``count`` by the entries' ``set``, and publish ``event`` on the experiment's
        channel with those counts as ``_labelled`` (see :meth:`oraculum.api.state.AppState.finish_event`). Returns the
        counts, or None when the cache is not complete (then only a rebuild from the store knows
        them, and nothing is published)."""

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
        """Claims whose key starts with ``prefix`` (a lock key up to its last ``:``, e.g. the
        :meth:`oraculum.api.state.AppState.lock_prefix`, ``experiment:iteration:``): key -> (holder,
        seconds left)."""

    async def labels_and_holders(self, experiment: str, iteration: int, prefix: str,
                                 ) -> tuple[dict[int, Entry] | None, dict[str, tuple[str, float]]]:
        """:meth:`labels` and :meth:`holders` together (one round trip to Redis: a batch read needs both)."""
        return await self.labels(experiment, iteration), await self.holders(prefix)

    # -- progress of running Jobs ----------------------------------------------------------------
    @abc.abstractmethod
    async def set_progress(self, resource: str, job: str, report: dict[str, Any], ttl: float = 3600) -> None:
        """Store the latest report of one Job of a resource."""

    @abc.abstractmethod
    async def progress(self, resource: str) -> dict[str, dict[str, Any]]:
        """Latest report per Job of a resource."""

    # -- rate limits -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> float:
        """Take one request from the token bucket ``key`` (``burst`` at most, refilled at ``rate``
        a second): 0 when there was one, else the seconds until there is (nothing is taken)."""

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
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (requests left, when)

    async def labels(self, experiment: str, iteration: int) -> dict[int, Entry] | None:
        key = (experiment, iteration)
        if self._built.get(key, 0) < time.monotonic():
            return None
        return dict(self._labels.get(key, {}))

    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False, *,
                           release: Sequence[str] = (), who: str = "", count: Sequence[str] = (),
                           event: dict[str, Any] | None = None) -> dict[str, int] | None:
        for lock in release:
            await self.release(lock, who)
        key = (experiment, iteration)
        cache = self._labels.setdefault(key, {})
        for index, entry in entries.items():
            if _newer(cache.get(index), entry):
                cache[index] = entry
        if built:
            self._built[key] = time.monotonic() + CACHE_TTL
        if self._built.get(key, 0) < time.monotonic():
            return None
        counts = dict.fromkeys(count, 0)
        for entry in cache.values():
            if entry.get("label") is not None and entry.get("set") in counts:
                counts[entry["set"]] += 1
        if event is not None:
            await self.publish(experiment, {**event, "_labelled": counts})
        return counts

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

    async def take(self, key: str, rate: float, burst: int) -> float:
        now = time.monotonic()
        if len(self._buckets) > 10_000:  # forget the full ones (as Redis lets them expire)
            self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items() if t + (now - at) * rate < burst}
        tokens, at = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / rate
        self._buckets[key] = (tokens - 1, now)
        return 0.0

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
        self._commit = self._redis.register_script(scripts.COMMIT)
        self._snapshot = self._redis.register_script(scripts.SNAPSHOT)
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._release = self._redis.register_script(scripts.RELEASE)
        self._holders = self._redis.register_script(scripts.HOLDERS)
        self._view = self._redis.register_script(scripts.VIEW)
        self._take = self._redis.register_script(scripts.TAKE)
        self._dirty: set[tuple[str, int]] = set()

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts)])

    def _lock(self, key: str) -> list[str]:
        """The Redis keys of a claim: the lock itself and the index of its iteration's claims."""
        group = key.rsplit(":", 1)[0] if ":" in key else ""
        return [self._k("lock", key), self._k("locks", group)]

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
        keys = [self._k("labels", experiment, iteration), self._k("labels-built", experiment, iteration)]
        return self._labels(await self._call(self._snapshot(keys=keys)))

    @staticmethod
    def _labels(document: str | None) -> dict[int, Entry] | None:
        return None if document is None else {int(index): entry for index, entry in json.loads(document).items()}

    async def labels_and_holders(self, experiment: str, iteration: int, prefix: str,
                                 ) -> tuple[dict[int, Entry] | None, dict[str, tuple[str, float]]]:
        await self._flush_dirty()
        keys = [self._k("labels", experiment, iteration), self._k("labels-built", experiment, iteration),
                self._locks_index(prefix)]
        document, found = await self._call(self._view(keys=keys))
        return self._labels(document), self._holders_of(prefix, found)

    async def merge_labels(self, experiment: str, iteration: int, entries: dict[int, Entry], built: bool = False, *,
                           release: Sequence[str] = (), who: str = "", count: Sequence[str] = (),
                           event: dict[str, Any] | None = None) -> dict[str, int] | None:
        channel, message = ("", "") if event is None else (self._k("events", experiment), json.dumps(event))
        args: list[Any] = [CACHE_TTL, self._k("labelled", experiment, iteration, ""), who, int(built), channel, message,
                           len(count), *count]
        for index, entry in entries.items():
            body = {k: v for k, v in entry.items() if k != "v"}
            args += [str(index), str(entry["v"]), json.dumps(body), str(entry.get("set") or "oracle"),
                     int(entry.get("label") is not None)]
        keys = [self._k("labels", experiment, iteration), self._k("labels-built", experiment, iteration)]
        for lock in release:
            keys += self._lock(lock)
        try:
            complete, *counts = await self._call(self._commit(keys=keys, args=args))
        except LiveUnavailable:
            if not built:
                self._dirty.add((experiment, iteration))
            raise
        return dict(zip(count, (int(c) for c in counts), strict=True)) if complete else None

    async def invalidate(self, experiment: str, iteration: int) -> None:
        try:
            await self._call(self._redis.delete(self._k("labels-built", experiment, iteration)))
        except LiveUnavailable:
            self._dirty.add((experiment, iteration))
            raise

    async def claim(self, key: str, who: str, ttl: float) -> tuple[str, bool]:
        holder, newly = await self._call(self._claim(keys=self._lock(key), args=[who, int(ttl * 1000)]))
        return str(holder), bool(newly)

    async def release(self, key: str, who: str) -> bool:
        return bool(await self._call(self._release(keys=self._lock(key), args=[who])))

    async def claim_many(self, keys: list[str], who: str, ttl: float) -> list[tuple[str, bool]]:
        if len(keys) == 1:
            return [await self.claim(keys[0], who, ttl)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            await self._claim(keys=self._lock(key), args=[who, int(ttl * 1000)], client=pipe)
        results = await self._call(pipe.execute())
        return [(str(holder), bool(newly)) for holder, newly in results]

    async def release_many(self, keys: list[str], who: str) -> None:
        if len(keys) == 1:
            await self.release(keys[0], who)
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            await self._release(keys=self._lock(key), args=[who], client=pipe)
        await self._call(pipe.execute())

    def _locks_index(self, prefix: str) -> str:
        if not prefix.endswith(":"):
            raise ValueError(f"lock prefix {prefix!r} must end with ':' (e.g. 'experiment:iteration:')")
        return self._k("locks", prefix[:-1])

    def _holders_of(self, prefix: str, found: list[Any]) -> dict[str, tuple[str, float]]:
        """The flat {key, who, ms left, ...} answer of the holders script as a dict."""
        base = self._k("lock", "")
        return {found[i][len(base):]: (str(found[i + 1]), int(found[i + 2]) / 1000)
                for i in range(0, len(found), 3) if str(found[i]).startswith(base + prefix)}

    async def holders(self, prefix: str) -> dict[str, tuple[str, float]]:
        return self._holders_of(prefix, await self._call(self._holders(keys=[self._locks_index(prefix)])))

    async def set_progress(self, resource: str, job: str, report: dict[str, Any], ttl: float = 3600) -> None:
        key = self._k("progress", resource)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, job, json.dumps(report))
        pipe.expire(key, int(ttl))
        await self._call(pipe.execute())

    async def progress(self, resource: str) -> dict[str, dict[str, Any]]:
        raw = await self._call(self._redis.hgetall(self._k("progress", resource)))
        return {job: json.loads(value) for job, value in raw.items()}

    async def take(self, key: str, rate: float, burst: int) -> float:
        return float(await self._call(self._take(keys=[self._k("rate", key)], args=[rate, burst])))

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


def open_live(redis_url: str | None) -> Live:
    """Redis when a URL is configured, else in-process state."""
    return RedisLive(redis_url) if redis_url else MemoryLive()
