"""A small in-process cache for store objects that change rarely (batch.json, dataset indices,
the experiment's status): each caller says how old a value it accepts (``ttl``).

Two things the gateway needs beyond a dict with expiry times:

* one load at a time per key (single flight): when a value expires under load, fifty requests
  must not read the same batch.json from the store at once; they all await the one load;
* stale while revalidating: a value older than ``ttl`` but younger than ``2 * ttl`` is answered
  at once while one background load refreshes it, so a request under steady traffic never waits
  for the store because a timer ran out (the price: a value may be up to ``ttl`` plus one load
  old, as before). Older values, and every miss, wait for the load.

:meth:`TtlCache.forget` drops keys and makes loads already in flight discard their result, so a
change the gateway made itself (a submit) is never hidden by a refresh that started before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("oraculum.api")

#: Entries kept before expired ones are swept.
MAX_ENTRIES = 4096


@dataclass
class _Entry:
    loaded: float
    value: Any


class TtlCache:
    """See the module docstring. Use from one event loop."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Task[Any]] = {}
        self._epoch = 0

    async def get(self, key: str, ttl: float, load: Callable[[], Awaitable[Any]]) -> Any:
        """The value under ``key`` if younger than ``ttl`` seconds, else what ``load()`` returns."""
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry.loaded
            if age < ttl:
                return entry.value
            if age < 2 * ttl:
                self._start(key, load, background=True)
                return entry.value
        return await asyncio.shield(self._start(key, load, background=False))

    def _start(self, key: str, load: Callable[[], Awaitable[Any]], background: bool) -> asyncio.Task[Any]:
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load, self._epoch))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._finished(key, done, background))
        return task

    async def _load(self, key: str, load: Callable[[], Awaitable[Any]], epoch: int) -> Any:
        started = time.monotonic()
        value = await load()
        if epoch == self._epoch:  # nothing was forgotten meanwhile
            self._entries[key] = _Entry(started, value)
            if len(self._entries) > self.max_entries:
                self._sweep()
        return value

    def _finished(self, key: str, task: asyncio.Task[Any], background: bool) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None and background:
            log.warning("refreshing %s failed (the cached value is used meanwhile): %s", key, task.exception())

    def _sweep(self) -> None:
        """Drop the oldest half: nothing here is needed for correctness, only for speed."""
        ordered = sorted(self._entries.items(), key=lambda item: item[1].loaded)
        for key, _ in ordered[: len(ordered) // 2]:
            self._entries.pop(key, None)

    def forget(self, prefix: str) -> None:
        """Drop every key starting with ``prefix``; loads in flight keep their result to themselves."""
        self._epoch += 1
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
        for key in [k for k in self._loading if k.startswith(prefix)]:
            del self._loading[key]  # the next request starts a fresh load
