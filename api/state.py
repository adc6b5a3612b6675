"""The gateway's state and the operations the routers share.

One :class:`AppState` per application: the object store (the durable truth), the backend
(custom resources or the local registry), the live state (Redis or in-process), the tokens, and
small time-bounded caches of immutable-by-convention store objects (batch.json, dataset indices).

The label write path is the heart of it (:meth:`AppState.write_labels`): validate against the
batch (cached), claim the items (one Redis round trip; 409 naming who holds one), write one event
per sample to the store (durable before any answer), then in one more round trip release the
claims, merge the labels into the live cache, count what is labelled (the progress in the answer)
and publish the event. A live-state failure after the store write still answers 2xx, because the
label is stored; the cache is marked stale and rebuilt from the store. Nothing on this path lists
or reads label events from the store, except that rebuild.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException

from oraculum.spectra.datasets import Dataset, DatasetError
from oraculum.learning.experiments import iteration_key
from oraculum.learning.labels import LabelEvent, LabelItem, append_event, labels_prefix
from oraculum.control.observe import labels_submitted_key
from oraculum.control.reconcile import labels_submitted_from_annotations
from oraculum.settings import Settings
from oraculum.store import KeyNotFound, ObjectStore

from .auth import Principal, TokenTable
from .backend import Backend, Resource
from .cache import TtlCache
from .live import Entry, Live, LiveUnavailable
from .metrics import Metrics
from .spectra_cache import ShardCache

log = logging.getLogger("oraculum.api")

#: Threads per kind of blocking work, each kind its own pool: one kind cannot take the threads of
#: the rest (before, ~11 upload aborts filled the one pool of 16 and every read waited behind
#: them; a flood of label-event log reads slowed everyone's label writes).
POOLS = {"store": 16, "labels": 8, "logs": 4, "archive": 4, "uploads": 4, "cleanup": 2}

EXPERIMENT = "ActiveLearningExperiment"
PPJ = "PreprocessingJob"
UNSURE = "unsure"
#: The ``set`` of a cached label whose spectrum is not in the iteration's batch (never counted).
OUTSIDE_BATCH = "outside-batch"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
        # store calls block: bounded pools, one per kind of work (see POOLS)
        self.pools = {kind: ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"oraculum-api-{kind}")
                      for kind, size in POOLS.items()}
        self._cache = TtlCache()
        self._rebuilding: dict[tuple[str, int], asyncio.Lock] = {}
        self._archives: dict[str, ObjectStore] = {}
        self.shards = ShardCache()

    # -- plumbing ----------------------------------------------------------------------------------

    async def io(self, fn: Callable[..., Any], *args: Any, pool: str = "store") -> Any:
        """Run a blocking call on the thread pool of its kind of work (see :data:`POOLS`)."""
        return await asyncio.get_running_loop().run_in_executor(self.pools[pool], fn, *args)

    async def cached(self, key: str, ttl: float, load: Callable[[], Any]) -> Any:
        """``load()``'s value, at most ``ttl`` seconds old (see :class:`oraculum.api.cache.TtlCache`)."""
        return await self._cache.get(key, ttl, load)

    def forget(self, prefix: str) -> None:
        self._cache.forget(prefix)

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

    async def find(self, kind: str, name: str, ttl: float = 0.0) -> Resource | None:
        """The resource, or None; with ``ttl``, one backend read shared by every caller (a
        Kubernetes GET otherwise, for each request and each event stream's status poll)."""
        async def load() -> Resource | None:
            return await self.backend.get(kind, name)

        return await (self.cached(f"resource:{kind}:{name}", ttl, load) if ttl else load())

    async def resource(self, kind: str, name: str, ttl: float = 0.0) -> Resource:
        found = await self.find(kind, name, ttl)
        if found is None:
            raise HTTPException(404, f"no {kind} named {name!r}")
        return found

    async def experiment(self, name: str, ttl: float = 1.0) -> Resource:
        """The experiment (404 when there is none), at most about ``ttl`` seconds old."""
        return await self.resource(EXPERIMENT, name, ttl)

    # -- batches -----------------------------------------------------------------------------------

    async def batch(self, experiment: str, iteration: int) -> dict[str, Any]:
        """batch.json of an iteration (404 when the iteration has not chosen one)."""
        async def load() -> dict[str, Any] | None:
            document = await self.read_json(iteration_key(experiment, iteration, "batch"))
            if document is not None:
                document["_by_index"] = {int(item["index"]): item for item in document.get("items", [])}
                document["_totals"] = {"oracle": 0, "estimation": 0, **Counter(
                    item.get("set", "oracle") for item in document["_by_index"].values())}
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

        return await self.cached(f"submitted:{resource.name}:{iteration}", 5.0, load)

    # -- current labels: cache in live state, truth in the store ------------------------------------

    def events_prefix(self, experiment: str, iteration: int) -> str:
        return f"{labels_prefix(experiment)}{iteration:05d}/"

    async def event_keys(self, experiment: str, iteration: int, pool: str = "store") -> list[str]:
        """Keys of the iteration's stored label events, oldest first (keys sort in time order)."""
        prefix = self.events_prefix(experiment, iteration)
        return sorted(await self.io(lambda: [info.key for info in self.store.list(prefix)], pool=pool))

    async def read_events(self, keys: list[str], pool: str = "store") -> list[tuple[str, LabelEvent]]:
        """The events under ``keys``, read in parallel on the thread pool ``pool``, in the order
        given; one deleted between listing and reading is left out."""
        def read(key: str) -> tuple[str, LabelEvent] | None:
            try:
                return key, LabelEvent.model_validate_json(self.store.get_bytes(key))
            except KeyNotFound:
                return None

        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self.pools[pool], read, key) for key in keys))
        return [found for found in results if found is not None]

    async def labels_from_store(self, experiment: str, iteration: int) -> dict[int, Entry]:
        """Fold every stored label event of an iteration (newest event wins per spectrum)."""
        state: dict[int, Entry] = {}
        for key, event in await self.read_events(await self.event_keys(experiment, iteration)):
            state.update(event_entries(key, event))
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
                await self.in_batch_samples(experiment, iteration, rebuilt)
                await self.live.merge_labels(experiment, iteration, rebuilt, built=True)
                cached = await self.live.labels(experiment, iteration)
                return cached if cached is not None else rebuilt
            except LiveUnavailable as error:
                self.metrics.live_unavailable.inc()
                log.warning("live state unavailable, reading labels from the store: %s", error)
                return await self.labels_from_store(experiment, iteration)

    async def labels_and_claims(self, experiment: str, iteration: int) -> tuple[dict[int, Entry], dict[int, str]]:
        """Current labels (as :meth:`labels`) and who holds which item, in one round trip when the
        cache is complete; no claims are shown when the live state cannot be reached."""
        try:
            prefix = self.lock_prefix(experiment, iteration)
            cached, held = await self.live.labels_and_holders(experiment, iteration, prefix)
        except LiveUnavailable:
            return await self.labels(experiment, iteration), {}
        if cached is None:
            cached = await self.labels(experiment, iteration)
        return cached, {self.lock_index(key): who for key, (who, _) in held.items()}

    async def in_batch_samples(self, experiment: str, iteration: int, entries: dict[int, Entry]) -> None:
        """Make each cache entry name the sample its spectrum belongs to in the batch (``set``),
        whatever the event said (events from other tools may differ), and mark spectra outside
        the batch: the live state counts labelled spectra per sample by this field."""
        try:
            by_index = (await self.batch(experiment, iteration))["_by_index"]
        except HTTPException:  # no batch (yet): nothing to count against
            return
        for index, entry in entries.items():
            item = by_index.get(index)
            entry["set"] = item.get("set", "oracle") if item is not None else OUTSIDE_BATCH

    def progress(self, experiment: str, iteration: int, batch: dict[str, Any], labels: dict[int, Entry],
                 submitted: bool) -> dict[str, Any]:
        counts = {"oracle": [0, 0], "estimation": [0, 0]}
        for index, item in batch["_by_index"].items():
            bucket = counts.setdefault(item.get("set", "oracle"), [0, 0])
            bucket[1] += 1
            entry = labels.get(index)
            if entry is not None and entry.get("label") is not None:
                bucket[0] += 1
        return self.progress_document(experiment, iteration, counts, submitted)

    @classmethod
    def finish_event(cls, experiment: str, event: dict[str, Any]) -> dict[str, Any]:
        """A published event as dashboards get it, without its private ``_`` fields: a label event
        that the live state published with its counts (``_labelled``, :meth:`Live.merge_labels`, in
        the same round trip as the write) gets its progress here. A copy: the in-process live state
        hands the same dict to every subscriber."""
        shown = public_fields(event)
        labelled, totals = event.get("_labelled"), event.get("_totals")
        if isinstance(labelled, dict) and isinstance(totals, dict):
            shown["progress"] = cls.progress_document(
                experiment, int(event.get("iteration") or 0),
                {name: [int(labelled.get(name, 0)), int(total)] for name, total in totals.items()},
                bool(event.get("_submitted")))
        return shown

    @staticmethod
    def progress_document(experiment: str, iteration: int, counts: dict[str, list[int]], submitted: bool) -> dict[str, Any]:
        """Progress from [labelled, total] per sample (``oracle``, ``estimation``)."""
        counts = {"oracle": [0, 0], "estimation": [0, 0], **counts}
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
    def lock_prefix(experiment: str, iteration: int) -> str:
        """What the lock keys of an iteration's items start with (:meth:`Live.holders` lists them)."""
        return f"{experiment}:{iteration}:"

    @classmethod
    def lock_key(cls, experiment: str, iteration: int, index: int) -> str:
        return f"{cls.lock_prefix(experiment, iteration)}{index}"

    @staticmethod
    def lock_index(key: str) -> int:
        """The batch index a :meth:`lock_key` names."""
        return int(key.rsplit(":", 1)[1])

    async def open_iteration(self, experiment: str, iteration: int) -> tuple[Resource, dict[str, Any]]:
        """The experiment and batch of an iteration that may be labelled (409 when not current)."""
        # the current iteration changes only after a submit (which clears this cache here), so a
        # few seconds of caching spare every label write a store or API-server round trip; other
        # replicas see the change within 2 x 2.5 s (the cache refreshes behind a stale answer)
        resource, current = await self.current_iteration(experiment, ttl=2.5)
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
        try:  # events are grouped by sample, so each entry's set is its sample in the batch
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
            keys = list(await asyncio.gather(*(loop.run_in_executor(self.pools["labels"], append_event, self.store,
                                                                    experiment, event) for event in events)))
            for key, event in zip(keys, events, strict=True):
                entries.update(event_entries(key, event))
        except BaseException:
            await self.release(principal, experiment, iteration, newly)
            raise
        # the events are durable: from here on the answer is 2xx whatever the live state does
        self.metrics.label_events.labels(action=action, bulk=str(bulk).lower()).inc(len(keys))
        self.metrics.labels_written.inc(len(indices))
        totals: dict[str, int] = batch["_totals"]
        submitted = await self.submitted(resource, iteration)
        published = {"when": now_iso(), "type": "label", "iteration": iteration, "indices": indices[:1000], "label": label,
                     "action": action, "bulk": bulk, "who": principal.name, "_totals": totals, "_submitted": submitted}
        progress = None
        try:  # one round trip: merge into the cache, release the claims, count what is labelled, publish
            counts = await self.live.merge_labels(
                experiment, iteration, entries, release=[self.lock_key(experiment, iteration, i) for i in newly],
                who=principal.name, count=list(totals), event=published)
        except LiveUnavailable as error:
            self.metrics.live_unavailable.inc()
            log.warning("label stored, live cache not updated (rebuilt later from the store): %s", error)
            await self.release(principal, experiment, iteration, newly)  # else they expire on their own
            counts = None
        else:
            if counts is None:  # the cache is incomplete: rebuild it from the store, then count
                progress = self.progress(experiment, iteration, batch, await self.labels(experiment, iteration), submitted)
            else:
                progress = self.progress_document(
                    experiment, iteration, {name: [counts[name], total] for name, total in totals.items()}, submitted)
        if counts is None:  # not published with the merge
            await self.publish(experiment, public_fields(published) | {"progress": progress})
        ack = {
            "experiment": experiment, "iteration": iteration, "indices": indices, "label": label, "action": action,
            "bulk": bulk, "who": principal.name, "when": when.isoformat(), "events": keys, "progress": progress,
        }
        self.metrics.label_write_seconds.observe(time.perf_counter() - started)
        return ack

    async def submit(self, principal: Principal, experiment: str, iteration: int) -> dict[str, Any]:
        resource, batch = await self.open_iteration(experiment, iteration)
        truth = await self.labels_from_store(experiment, iteration)  # the store decides, not the cache
        await self.in_batch_samples(experiment, iteration, truth)
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
        from oraculum.ingest.sources import archive_store

        if source_url not in self._archives:
            self._archives[source_url] = archive_store(source_url, self.settings)
        return self._archives[source_url]

    async def close(self) -> None:
        await self.backend.close()
        await self.live.close()
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self.shards.close()


def public_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the fields only the gateway reads (named ``_...``)."""
    return {key: value for key, value in event.items() if not key.startswith("_")}


def event_entries(key: str, event: LabelEvent) -> dict[int, Entry]:
    """Cache entries of one stored event; the version is the event's key (sorts in time order)."""
    version = key.rsplit("/", 1)[-1].removesuffix(".json")
    out: dict[int, Entry] = {}
    for item in event.items:
        label = None if event.action == "clear" else item.label
        out[item.index] = {"v": version, "label": label, "who": event.who, "when": event.when.isoformat(),
                           "comment": event.comment, "set": event.set, "bulk": event.bulk}
    return out
