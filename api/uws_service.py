"""The UWS facade's operations on the two job lists: gather what a job's representation needs
(resource, record, store objects) and carry out RUN, ABORT, DELETE and the limits.

:class:`PreprocessingJobs` and :class:`IterationJobs` have one interface, so the router
(:mod:`oraculum.api.routers.uws`) serves both lists with the same routes. The representation is
computed by the pure functions of :mod:`oraculum.api.uws_jobs`; this module only does I/O through
the application state (backend, store). Executing longer than ``executionDuration`` aborts a
preprocessing job, and its ``destruction`` time deletes it: checked whenever the job is looked at
and by :func:`sweep`, which the router runs in the background.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import HTTPException

from oraculum.spectra.datasets import DatasetError, index_key
from oraculum.learning.experiments import iteration_key, iteration_prefix

from .auth import Principal
from .backend import BackendError, Resource
from .state import EXPERIMENT, PPJ, AppState
from .uws_jobs import Links, iteration_view, preprocessing_view
from .uws_records import (
    UwsRecord,
    UwsRequest,
    delete_record,
    list_records,
    read_key,
    read_record,
    write_record,
)
from .uws_xml import JobView

log = logging.getLogger("oraculum.api")

#: Seconds between background checks of execution-duration limits and destruction times.
SWEEP_SECONDS = 30.0
#: A record whose resource is gone is removed once its newest request is this old (a job being
#: created has its resource before its record; this keeps the sweeper from racing a creation).
ORPHAN_GRACE = timedelta(minutes=2)
FINAL = ("COMPLETED", "ERROR", "ABORTED", "ARCHIVED")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class JobKey:
    """A job of one of the lists: a PreprocessingJob's name, or an experiment and iteration."""

    name: str
    iteration: int | None = None

    @property
    def job_id(self) -> str:
        return self.name if self.iteration is None else f"{self.name}/{self.iteration}"


class JobList(abc.ABC):
    """One UWS job list over one kind of resource."""

    list_name: str
    kind: str

    async def resource(self, state: AppState, key: JobKey) -> Resource:
        return await state.resource(self.kind, key.name)

    async def record(self, state: AppState, resource: Resource) -> UwsRecord:
        return await state.io(read_record, state.store, self.list_name, resource.name, resource.uid)

    async def save(self, state: AppState, record: UwsRecord) -> None:
        await state.io(write_record, state.store, record)

    @abc.abstractmethod
    async def view(self, state: AppState, key: JobKey, links: Links) -> JobView: ...

    @abc.abstractmethod
    async def views(self, state: AppState, links: Links) -> list[JobView]:
        """Every job, for the job list: without results (``<uws:jobref>`` shows none, so no
        store look-ups per job)."""

    async def _set_suspend(self, state: AppState, name: str, suspend: bool) -> None:
        try:
            await state.backend.set_suspend(self.kind, name, suspend)
        except BackendError as error:
            raise HTTPException(error.status, error.message) from None
        state.forget(f"resource:{self.kind}:{name}")
        await state.publish(name, {"type": "suspended" if suspend else "resumed", "kind": self.kind, "name": name,
                                   "via": "uws"})

    async def _request(self, state: AppState, key: JobKey, phase: str, principal: Principal, reason: str = "") -> None:
        resource = await self.resource(state, key)
        record = await self.record(state, resource)
        record.requests.append(UwsRequest(phase=phase, at=utc_now(), by=principal.name,  # type: ignore[arg-type]
                                          iteration=key.iteration, reason=reason))
        await self.save(state, record)

    async def run(self, state: AppState, key: JobKey, principal: Principal, links: Links) -> None:
        """PHASE=RUN: resume (clear spec.suspend) a job that waits; nothing for one that runs."""
        view = await self.view(state, key, links)
        if view.phase in ("COMPLETED", "ERROR"):
            raise HTTPException(409, f"job {key.job_id} is {view.phase}: it cannot run again"
                                + (" (a failed resource is retried only when its spec changes: create a new job)"
                                   if view.phase == "ERROR" else ""))
        if view.phase in ("PENDING", "HELD", "ABORTED", "SUSPENDED"):
            await self._set_suspend(state, key.name, False)
            await self._request(state, key, "RUN", principal)

    async def abort(self, state: AppState, key: JobKey, principal: Principal, links: Links, reason: str = "") -> None:
        """PHASE=ABORT: suspend (spec.suspend: true; finished work stays in the store)."""
        view = await self.view(state, key, links)
        if view.phase in ("COMPLETED", "ERROR"):
            raise HTTPException(409, f"job {key.job_id} is {view.phase}: there is nothing to abort")
        if view.phase != "ABORTED":
            await self._set_suspend(state, key.name, True)
            await self._request(state, key, "ABORT", principal, reason)

    @abc.abstractmethod
    async def delete(self, state: AppState, key: JobKey) -> None: ...

    @abc.abstractmethod
    async def set_limits(self, state: AppState, key: JobKey, links: Links, execution_duration: int | None = None,
                         destruction: datetime | None = None) -> None: ...


class PreprocessingJobs(JobList):
    """PreprocessingJobs as UWS jobs (jobId = the resource's name)."""

    list_name = "preprocessing"
    kind = PPJ

    async def _artifacts(self, state: AppState, resource: Resource) -> dict[str, int]:
        dataset = str((resource.spec or {}).get("dataset") or "")
        if not dataset:
            return {}
        try:
            key = index_key(dataset)
        except DatasetError:  # an invalid dataset name has no index
            return {}
        return {"index.json": 0} if await state.io(state.store.exists, key) else {}

    async def view(self, state: AppState, key: JobKey, links: Links) -> JobView:
        resource = await self.resource(state, key)
        record = await self.record(state, resource)
        view = preprocessing_view(resource, record, await self._artifacts(state, resource), links)
        if record.has_limits and await enforce_limits(state, self, resource, record, view):
            return await self.view(state, key, links)
        return view

    async def views(self, state: AppState, links: Links) -> list[JobView]:
        resources = await state.backend.list(self.kind)
        records = await asyncio.gather(*(self.record(state, r) for r in resources))
        out = []
        for resource, record in zip(resources, records, strict=True):
            view = preprocessing_view(resource, record, {}, links)
            if record.has_limits and await enforce_limits(state, self, resource, record, view):
                again = await state.backend.get(self.kind, resource.name)
                if again is None:
                    continue
                view = preprocessing_view(again, await self.record(state, again), {}, links)
            out.append(view)
        return out

    async def delete(self, state: AppState, key: JobKey) -> None:
        resource = await self.resource(state, key)
        try:
            await state.backend.delete(self.kind, key.name)
        except BackendError as error:
            raise HTTPException(error.status, error.message) from None
        await state.io(delete_record, state.store, self.list_name, resource.name, resource.uid)
        state.forget(f"resource:{self.kind}:{key.name}")
        await state.publish(key.name, {"type": "deleted", "kind": self.kind, "name": key.name, "via": "uws"})

    async def set_limits(self, state: AppState, key: JobKey, links: Links, execution_duration: int | None = None,
                         destruction: datetime | None = None) -> None:
        resource = await self.resource(state, key)
        record = await self.record(state, resource)
        if execution_duration is not None:
            view = preprocessing_view(resource, record, {}, links)  # for its phase: results do not matter
            if view.phase in FINAL:
                raise HTTPException(409, f"job {key.job_id} is {view.phase}: its execution duration no longer applies")
            record.execution_duration = execution_duration
        if destruction is not None:
            record.destruction = destruction
        await self.save(state, record)


class IterationJobs(JobList):
    """Iterations of ActiveLearningExperiments as UWS jobs (jobId ``<experiment>/<k>``)."""

    list_name = "iterations"
    kind = EXPERIMENT

    async def _run(self, state: AppState, experiment: str, k: int) -> dict[str, Any] | None:
        """run.json of an iteration (cached once it exists: it is written once, when the iterate step ends)."""
        if k < 0:
            return None
        cache = f"uws:run:{experiment}:{k}"
        document = await state.cached(cache, 60.0, lambda: state.read_json(iteration_key(experiment, k, "run")))
        if not isinstance(document, dict):
            state.forget(cache)
            return None
        return document

    async def _artifacts(self, state: AppState, experiment: str, k: int) -> dict[str, int]:
        prefix = f"{iteration_prefix(experiment, k)}/"
        infos = await state.io(lambda: list(state.store.list(prefix)))
        return {info.key[len(prefix):]: info.size for info in infos if "/" not in info.key[len(prefix):]}

    async def resource(self, state: AppState, key: JobKey) -> Resource:
        """The iteration's experiment; 404 also for an iteration the experiment has not reached."""
        assert key.iteration is not None
        resource = await super().resource(state, key)
        current = int((resource.status or {}).get("iteration") or 0)
        if key.iteration > current:
            raise HTTPException(404, f"experiment {key.name!r} has no iteration {key.iteration} (yet): it is at "
                                     f"iteration {current}")
        return resource

    async def view(self, state: AppState, key: JobKey, links: Links) -> JobView:
        assert key.iteration is not None
        resource = await self.resource(state, key)
        record = await self.record(state, resource)
        run, previous, artifacts = await asyncio.gather(
            self._run(state, key.name, key.iteration), self._run(state, key.name, key.iteration - 1),
            self._artifacts(state, key.name, key.iteration))
        return iteration_view(resource, key.iteration, record, artifacts, run, previous, links)

    async def views(self, state: AppState, links: Links) -> list[JobView]:
        out = []
        for resource in await state.backend.list(self.kind):
            current = int((resource.status or {}).get("iteration") or 0)
            record = await self.record(state, resource)
            runs = await asyncio.gather(*(self._run(state, resource.name, k) for k in range(current + 1)))
            for k in range(current + 1):
                previous = runs[k - 1] if k > 0 else None
                out.append(iteration_view(resource, k, record, {}, runs[k], previous, links))
        return out

    async def delete(self, state: AppState, key: JobKey) -> None:
        await self.resource(state, key)  # 404 for an iteration that does not exist
        raise HTTPException(409, f"iteration {key.iteration} is part of experiment {key.name!r}, not a job of its own: "
                                 f"delete the experiment (DELETE /api/v1/experiments/{key.name}) to remove it")

    async def set_limits(self, state: AppState, key: JobKey, links: Links, execution_duration: int | None = None,
                         destruction: datetime | None = None) -> None:
        await self.resource(state, key)  # 404 for an iteration that does not exist
        raise HTTPException(409, f"iteration {key.iteration} of experiment {key.name!r} runs and ends with its experiment: "
                                 "its execution duration and destruction time cannot be set (suspend or delete the "
                                 "experiment instead)")


PREPROCESSING = PreprocessingJobs()
ITERATIONS = IterationJobs()
LISTS: dict[str, JobList] = {PREPROCESSING.list_name: PREPROCESSING, ITERATIONS.list_name: ITERATIONS}


async def enforce_limits(state: AppState, jobs: JobList, resource: Resource, record: UwsRecord, view: JobView,
                         now: datetime | None = None) -> bool:
    """Destroy a job past its destruction time, abort one that executed longer than its
    executionDuration; True when something was done."""
    now = now or utc_now()
    key = JobKey(resource.name)
    if record.destruction is not None and now >= record.destruction:
        log.info("UWS: destroying %s %s (destruction time %s)", resource.kind, resource.name, record.destruction)
        try:
            await jobs.delete(state, key)
        except HTTPException as error:
            if error.status_code != 404:
                raise
        return True
    started = view.start_time
    if record.execution_duration > 0 and view.phase in ("QUEUED", "EXECUTING") and started is not None \
            and (now - started).total_seconds() > record.execution_duration:
        log.info("UWS: aborting %s %s: executed longer than %d s", resource.kind, resource.name, record.execution_duration)
        await jobs._set_suspend(state, resource.name, True)
        record.requests.append(UwsRequest(phase="ABORT", at=now, by="oraculum",
                                          reason=f"aborted: ran longer than its executionDuration of "
                                                 f"{record.execution_duration} s"))
        await jobs.save(state, record)
        return True
    return False


async def sweep(state: AppState, links: Links | None = None, now: datetime | None = None) -> int:
    """One background pass over the records: enforce limits, drop records of deleted resources.
    Returns how many records were acted on."""
    now = now or utc_now()
    links = links or Links(api="")
    found = await state.io(lambda: list(list_records(state.store)))
    if not found:
        return 0
    live: dict[str, dict[str, Resource]] = {}
    for list_name in {list_name for _, list_name, _ in found}:
        live[list_name] = {r.name: r for r in await state.backend.list(LISTS[list_name].kind)}
    acted = 0
    for key, list_name, name in found:
        record = await state.io(read_key, state.store, key)
        resource = live[list_name].get(name)
        if record is None or resource is None or resource.uid != record.uid:
            newest = max((r.at for r in record.requests), default=None) if record is not None else None
            if newest is None or now - newest > ORPHAN_GRACE:
                await state.io(state.store.delete, key)
                acted += 1
            continue
        if list_name == PREPROCESSING.list_name and record.has_limits:
            view = preprocessing_view(resource, record, {}, links)
            acted += bool(await enforce_limits(state, PREPROCESSING, resource, record, view, now))
    return acted
