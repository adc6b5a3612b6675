"""The gateway's state and the operations the routers share.

One :class:`AppState` per application: the object store (the durable truth), the backend
(custom resources or the local registry), the live state (Redis or in-process), the tokens, and
small time-bounded caches of immutable-by-convention store objects (batch.json, dataset indices).

The label write path is the heart of it (:meth:`AppState.write_labels`): validate against the
batch, claim the items (409 naming who holds one), write one event per sample to the store
(durable before any answer), release the claims, then update the live cache and publish the
event. A live-state failure after the store write still answers 2xx, because the label is stored;
the cache is marked stale and rebuilt from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException

from oraculum.datasets import Dataset, DatasetError
from oraculum.experiments import iteration_key
from oraculum.labels import LabelEvent, LabelItem, append_event, labels_prefix
from oraculum.manifests import ExperimentSpec
from oraculum.observe import labels_submitted_key
from oraculum.reconcile import labels_submitted_from_annotations
from oraculum.settings import Settings
from oraculum.store import KeyNotFound, ObjectStore

from .auth import Principal, TokenTable
from .backend import Backend, Resource
from .live import Entry, Live, LiveUnavailable
from .metrics import Metrics
from .spectra_cache import ShardCache

log = logging.getLogger("oraculum.api")

EXPERIMENT = "ActiveLearningExperiment"
PPJ = "PreprocessingJob"
UNSURE = "unsure"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class _Cached:
    until: float
    value: Any


class AppState:
    """Everything a request needs; see the module docstring."""

    def __init__(self, settings: Settings, store: ObjectStore, backend: Backend, live: Live, tokens: TokenTable,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.live = live
        self.tokens = tokens
        self.metrics = metrics
        self.started = time.time()
        # store calls block: a bounded pool (more threads than this only fight over the GIL)
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="oraculum-api-io")
        self._cache: dict[str, _Cached] = {}
        self._rebuilding: dict[tuple[str, int], asyncio.Lock] = {}
        self._archives: dict[str, ObjectStore] = {}
        self.shards = ShardCache()

    # -- plumbing ----------------------------------------------------------------------------------

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store call on the I/O thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def cached(self, key: str, ttl: float, load: Callable[[], Any]) -> Any:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit.until > now:
            return hit.value
        value = await load()
        self._cache[key] = _Cached(now + ttl, value)
        if len(self._cache) > 4096:  # bounded: drop expired entries
            for stale in [k for k, v in self._cache.items() if v.until <= now]:
                self._cache.pop(stale, None)
        return value

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._cache if k.startswith(prefix)]:
            self._cache.pop(key, None)

    async def read_json(self, key: str) -> Any | None:
        def read() -> Any | None:
            try:
                return json.loads(self.store.get_bytes(key))
            except KeyNotFound:
                return None

        return await self.io(read)

    async def publish(self, experiment: str, event: dict[str, Any]) -> None:
        try:
            await self.live.publish(experiment, {"when": now_iso(), **event})
        except LiveUnavailable as error:
            log.warning("event not published: %s", error)

    # -- resources -------------------------------------------------------------------------------

    async def resource(self, kind: str, name: str, ttl: float = 0.0) -> Resource:
        async def load() -> Resource | None:
            return await self.backend.get(kind, name)

        found = await (self.cached(f"resource:{kind}:{name}", ttl, load) if ttl else load())
        if found is None:
            raise HTTPException(404, f"no {kind} named {name!r}")
        return found

    async def experiment_spec(self, resource: Resource) -> ExperimentSpec | None:
        try:
            return ExperimentSpec.model_validate(resource.spec)
        except ValueError:
            return None

    # -- batches -----------------------------------------------------------------------------------

    async def batch(self, experiment: str, iteration: int) -> dict[str, Any]:
        """batch.json of an iteration (404 when the iteration has not chosen one)."""
        async def load() -> dict[str, Any] | None:
            document = await self.read_json(iteration_key(experiment, iteration, "batch"))
            if document is not None:
                document["_by_index"] = {int(item["index"]): item for item in document.get("items", [])}
            return document

        document = await self.cached(f"batch:{experiment}:{iteration}", 10.0, load)
        if document is None:
            self.forget(f"batch:{experiment}:{iteration}")
            raise HTTPException(404, f"experiment {experiment!r} has no batch for iteration {iteration} (yet)")
        return document

    async def hidden_predictions(self, experiment: str, iteration: int) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            document = await self.read_json(iteration_key(experiment, iteration, "batch_predictions"))
            return (document or {}).get("items", {}) if isinstance(document, dict) else {}

        return await self.cached(f"hidden:{experiment}:{iteration}", 10.0, load)

    @staticmethod
    def classes(resource: Resource, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The classes of a batch (as it was chosen), else those of the experiment's spec."""
        if batch.get("classes"):
            return list(batch["classes"])
        return [c for c in (resource.spec or {}).get("classes") or [] if isinstance(c, dict) and c.get("name")]

    async def current_iteration(self, experiment: str, ttl: float = 1.0) -> tuple[Resource, int]:
        resource = await self.resource(EXPERIMENT, experiment, ttl)
        return resource, int((resource.status or {}).get("iteration") or 0)

    async def submitted(self, resource: Resource, iteration: int) -> bool:
        annotated = labels_submitted_from_annotations(resource.annotations)
        if annotated is not None and annotated >= iteration:
            return True

        async def load() -> bool:
            return bool(await self.io(self.store.exists, labels_submitted_key(resource.name, iteration)))

        return await self.cached(f"submitted:{resource.name}:{iteration}", 10.0, load)

    # -- current labels: cache in live state, truth in the store ------------------------------------

    def _events_prefix(self, experiment: str, iteration: int) -> str:
        return f"{labels_prefix(experiment)}{iteration:05d}/"

    async def labels_from_store(self, experiment: str, iteration: int) -> dict[int, Entry]:
        """Fold every stored label event of an iteration (newest event wins per spectrum)."""
        prefix = self._events_prefix(experiment, iteration)
        infos = await self.io(lambda: list(self.store.list(prefix)))

        def read(key: str) -> tuple[str, LabelEvent] | None:
            try:
                return key, LabelEvent.model_validate_json(self.store.get_bytes(key))
            except KeyNotFound:
                return None

        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self.executor, read, info.key) for info in infos))
        state: dict[int, Entry] = {}
        for found in sorted((r for r in results if r is not None), key=lambda r: r[0]):
            key, event = found
            for index, entry in event_entries(key, event).items():
                state[index] = entry
        self.metrics.rebuilds.inc()
        return state

    async def labels(self, experiment: str, iteration: int) -> dict[int, Entry]:
        """Current labels (tombstones included) of an iteration: the live cache, rebuilt from the
        store when missing; straight from the store when the live state cannot be reached."""
        try:
            cached = await self.live.labels(experiment, iteration)
            if cached is not None:
                return cached
        except LiveUnavailable as error:
            self.metrics.live_unavailable.inc()
            log.warning("live state unavailable, reading labels from the store: %s", error)
            return await self.labels_from_store(experiment, iteration)
        lock = self._rebuilding.setdefault((experiment, iteration), asyncio.Lock())
        async with lock:
            try:
                cached = await self.live.labels(experiment, iteration)
                if cached is not None:
                    return cached
                rebuilt = await self.labels_from_store(experiment, iteration)
                await self.live.merge_labels(experiment, iteration, rebuilt, built=True)
                cached = await self.live.labels(experiment, iteration)
                return cached if cached is not None else rebuilt
            except LiveUnavailable as error:
                self.metrics.live_unavailable.inc()
                log.warning("live state unavailable, reading labels from the store: %s", error)
                return await self.labels_from_store(experiment, iteration)

    def progress(self, experiment: str, iteration: int, batch: dict[str, Any], labels: dict[int, Entry],
                 submitted: bool) -> dict[str, Any]:
        counts = {"oracle": [0, 0], "estimation": [0, 0]}
        for index, item in batch["_by_index"].items():
            bucket = counts.setdefault(item.get("set", "oracle"), [0, 0])
            bucket[1] += 1
            entry = labels.get(index)
            if entry is not None and entry.get("label") is not None:
                bucket[0] += 1
        labelled = sum(c[0] for c in counts.values())
        total = sum(c[1] for c in counts.values())
        oracle, estimation = counts["oracle"], counts["estimation"]
        return {
            "experiment": experiment, "iteration": iteration,
            "oracle": {"labelled": oracle[0], "total": oracle[1]},
            "estimation": {"labelled": estimation[0], "total": estimation[1]},
            "labelled": labelled, "total": total, "complete": total > 0 and labelled == total, "submitted": submitted,
            "text": f"{oracle[0]} / {oracle[1]} oracle, {estimation[0]} / {estimation[1]} estimation",
        }

    # -- writing labels ----------------------------------------------------------------------------

    @staticmethod
    def lock_key(experiment: str, iteration: int, index: int) -> str:
        return f"{experiment}:{iteration}:{index}"

    async def open_iteration(self, experiment: str, iteration: int) -> tuple[Resource, dict[str, Any]]:
        """The experiment and batch of an iteration that may be labelled (409 when not current)."""
        # the current iteration changes only after a submit (which clears this cache here), so a
        # few seconds of caching spare every label write a store or API-server round trip
        resource, current = await self.current_iteration(experiment, ttl=5.0)
        batch = await self.batch(experiment, iteration)
        if iteration != current:
            raise HTTPException(409, f"iteration {iteration} of experiment {experiment!r} is not the current one "
                                     f"({current}): only the current batch can be labelled")
        return resource, batch

    async def claim(self, principal: Principal, experiment: str, iteration: int, indices: list[int]) -> list[int]:
        """Claim the items for ``principal``; returns those newly claimed (to release afterwards).
        409 naming the holders when someone else labels one of them now; 503 without live state."""
        keys = [self.lock_key(experiment, iteration, index) for index in indices]
        try:
            results = await self.live.claim_many(keys, principal.name, self.settings.api_lock_seconds)
        except LiveUnavailable as error:
            self.metrics.live_unavailable.inc()
            raise HTTPException(503, f"item locks are unavailable, try again shortly: {error}",
                                headers={"Retry-After": "1"}) from None
        newly = [index for index, (holder, new) in zip(indices, results, strict=True) if new and holder == principal.name]
        held = {index: holder for index, (holder, _) in zip(indices, results, strict=True) if holder != principal.name}
        if held:
            await self.release(principal, experiment, iteration, newly)
            shown = dict(list(held.items())[:20])
            raise HTTPException(409, {"message": f"{len(held)} item(s) are being labelled by someone else right now",
                                      "holders": {str(k): v for k, v in shown.items()}})
        return newly

    async def release(self, principal: Principal, experiment: str, iteration: int, indices: list[int]) -> None:
        if not indices:
            return
        try:
            await self.live.release_many([self.lock_key(experiment, iteration, i) for i in indices], principal.name)
        except LiveUnavailable as error:  # the claims expire on their own
            log.warning("could not release item claims: %s", error)

    async def write_labels(self, principal: Principal, experiment: str, iteration: int, indices: list[int],
                           label: str | None, comment: str | None, bulk: bool) -> dict[str, Any]:
        started = time.perf_counter()
        resource, batch = await self.open_iteration(experiment, iteration)
        by_index = batch["_by_index"]
        indices = list(dict.fromkeys(indices))
        missing = [i for i in indices if i not in by_index]
        if missing:
            raise HTTPException(404, f"spectra {missing[:20]} are not in the batch of iteration {iteration} of "
                                     f"experiment {experiment!r}")
        allowed = [c.get("name") for c in self.classes(resource, batch)] + [UNSURE]
        if label is not None and label not in allowed:
            raise HTTPException(422, f"label {label!r} is not one of {allowed}")
        newly = await self.claim(principal, experiment, iteration, indices)
        action = "set" if label is not None else "clear"
        when = datetime.now(timezone.utc)
        keys: list[str] = []
        entries: dict[int, Entry] = {}
        try:
            by_set: dict[str, list[LabelItem]] = {}
            for index in indices:
                item = by_index[index]
                by_set.setdefault(item.get("set", "oracle"), []).append(LabelItem(
                    index=index, id=str(item["id"]), label=label,
                    shown_prediction=item.get("probabilities")))  # None for blind estimation items
            events = [LabelEvent(who=principal.name, when=when, iteration=iteration, action=action,  # type: ignore[arg-type]
                                 set=set_name, bulk=bulk, comment=comment, items=items)  # type: ignore[arg-type]
                      for set_name, items in by_set.items()]
            loop = asyncio.get_running_loop()
            keys = list(await asyncio.gather(*(loop.run_in_executor(self.executor, append_event, self.store,
                                                                    experiment, event) for event in events)))
            for key, event in zip(keys, events, strict=True):
                entries.update(event_entries(key, event))
        finally:
            await self.release(principal, experiment, iteration, newly)
        # the events are durable: from here on the answer is 2xx whatever the live state does
        self.metrics.label_events.labels(action=action, bulk=str(bulk).lower()).inc(len(keys))
        self.metrics.labels_written.inc(len(indices))
        progress = None
        try:
            await self.live.merge_labels(experiment, iteration, entries)
        except LiveUnavailable as error:
            self.metrics.live_unavailable.inc()
            log.warning("label stored, live cache not updated (rebuilt later from the store): %s", error)
        else:
            labels = await self.labels(experiment, iteration)  # the cache (built from the store if need be)
            progress = self.progress(experiment, iteration, batch, labels, await self.submitted(resource, iteration))
        ack = {
            "experiment": experiment, "iteration": iteration, "indices": indices, "label": label, "action": action,
            "bulk": bulk, "who": principal.name, "when": when.isoformat(), "events": keys, "progress": progress,
        }
        await self.publish(experiment, {"type": "label", "iteration": iteration, "indices": indices[:1000],
                                        "label": label, "action": action, "bulk": bulk, "who": principal.name,
                                        "progress": progress})
        self.metrics.label_write_seconds.observe(time.perf_counter() - started)
        return ack

    async def submit(self, principal: Principal, experiment: str, iteration: int) -> dict[str, Any]:
        resource, batch = await self.open_iteration(experiment, iteration)
        truth = await self.labels_from_store(experiment, iteration)  # the store decides, not the cache
        wanted = list(batch["_by_index"])
        done = [i for i in wanted if truth.get(i, {}).get("label") is not None]
        if len(done) < len(wanted):
            missing = [i for i in wanted if truth.get(i, {}).get("label") is None]
            raise HTTPException(409, {"message": f"the batch is incomplete: {len(done)} of {len(wanted)} labelled",
                                      "labelled": len(done), "size": len(wanted), "missing": missing[:50]})
        signal = await self.backend.submit_labels(experiment, iteration, principal.name)
        self.forget(f"submitted:{experiment}:")
        self.forget(f"resource:{EXPERIMENT}:{experiment}")
        try:
            await self.live.merge_labels(experiment, iteration, truth, built=True)
        except LiveUnavailable:
            pass
        await self.publish(experiment, {"type": "labels-submitted", "iteration": iteration, "who": principal.name})
        return {"experiment": experiment, "iteration": iteration, "labelled": len(done), "size": len(wanted),
                "signal": signal}

    # -- datasets ------------------------------------------------------------------------------------

    async def dataset(self, name: str) -> Dataset:
        async def load() -> Dataset:
            try:
                return await self.io(Dataset.open, self.store, name, self.settings.cache_dir)
            except DatasetError as error:
                raise HTTPException(404, str(error)) from None

        return await self.cached(f"dataset:{name}", 60.0, load)

    def archive(self, source_url: str) -> ObjectStore:
        from oraculum.ingest import archive_store

        if source_url not in self._archives:
            self._archives[source_url] = archive_store(source_url, self.settings)
        return self._archives[source_url]

    async def close(self) -> None:
        await self.backend.close()
        await self.live.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.shards.close()


def event_entries(key: str, event: LabelEvent) -> dict[int, Entry]:
    """Cache entries of one stored event; the version is the event's key (sorts in time order)."""
    version = key.rsplit("/", 1)[-1].removesuffix(".json")
    out: dict[int, Entry] = {}
    for item in event.items:
        label = None if event.action == "clear" else item.label
        out[item.index] = {"v": version, "label": label, "who": event.who, "when": event.when.isoformat(),
                           "comment": event.comment, "set": event.set, "bulk": event.bulk}
    return out
