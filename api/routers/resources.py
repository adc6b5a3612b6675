"""Experiments and preprocessing jobs: list, get, create from a manifest, suspend, resume, delete,
and the progress reports of their running Jobs. The same routes for both kinds, built by
:func:`resource_router`; on a cluster they are custom-resource operations, on one machine the
local runner's registry (see :mod:`oraculum.api.backend`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from oraculum.manifests import ManifestError, parse_manifest

from ..backend import Resource
from ..bodies import SafeRoute, read_manifest
from ..deps import Admin, ResourceName, State, Viewer, Worker
from ..live import LiveUnavailable
from ..models import JobProgress, ManifestIn, ProgressIn, ProgressList, ResourceDetail, ResourceSummary
from ..state import EXPERIMENT, PPJ, AppState, now_iso

def summary(resource: Resource) -> dict[str, Any]:
    status = resource.status or {}
    return {
        "kind": resource.kind, "name": resource.name, "namespace": resource.namespace,
        "phase": str(status.get("phase") or "Pending"),
        "iteration": _iteration(resource.kind, status),
        "message": str(status.get("message") or ""), "created": resource.created,
        "suspended": bool((resource.spec or {}).get("suspend")),
    }


def _iteration(kind: str, status: dict[str, Any]) -> int | None:
    """An experiment's iteration (0 until its status says otherwise); None for other kinds."""
    if kind != EXPERIMENT:
        return None
    iteration = status.get("iteration")
    return int(iteration) if isinstance(iteration, int) else 0


async def detail(state: AppState, resource: Resource) -> ResourceDetail:
    status = resource.status or {}
    reports = await _progress(state, resource.kind, resource.name)
    return ResourceDetail(
        **summary(resource), uid=resource.uid, generation=resource.generation, spec=resource.spec, status=status,
        conditions=list(status.get("conditions") or []), history=list(status.get("history") or []),
        progress=reports, backend=state.backend.name, managed_by=resource.managed_by,
    )


async def _progress(state: AppState, kind: str, name: str) -> list[JobProgress]:
    try:
        raw = await state.live.progress(f"{kind}:{name}")
    except LiveUnavailable:
        return []
    out = []
    for job, report in sorted(raw.items()):
        try:
            out.append(JobProgress(job=job, **{k: v for k, v in report.items() if k != "job"}))
        except ValueError:
            continue
    return out


def resource_router(kind: str, plural: str, tag: str) -> APIRouter:
    router = APIRouter(prefix=f"/{plural}", tags=[tag], route_class=SafeRoute)
    noun = "experiment" if kind == EXPERIMENT else "preprocessing job"

    @router.get("", response_model=list[ResourceSummary], summary=f"List {noun}s")
    async def list_resources(state: State, _: Viewer) -> list[dict[str, Any]]:
        return [summary(r) for r in await state.backend.list(kind)]

    @router.post(
        "", response_model=ResourceDetail, status_code=201, summary=f"Create a {noun} from a manifest",
        description="The body is the manifest as JSON, or as YAML with Content-Type application/yaml "
                    "(what `kubectl apply -f` would take).",
        responses={409: {"description": "exists already"}, 422: {"description": "invalid manifest"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": ManifestIn.model_json_schema()},
            "application/yaml": {"schema": {"type": "string"}}}}},
    )
    async def create(state: State, _: Admin, request: Request) -> ResourceDetail:
        document = await read_manifest(request, "the request body")
        try:
            manifest = parse_manifest(document, "the request body")
        except ManifestError as error:
            raise HTTPException(422, str(error)) from None
        if manifest.kind != kind:
            raise HTTPException(422, f"this is {plural}; a {manifest.kind} goes to its own collection")
        if getattr(manifest.metadata, "namespace", None) and state.backend.name == "kubernetes" \
                and manifest.metadata.namespace != getattr(state.backend, "namespace", None):
            raise HTTPException(422, f"metadata.namespace must be {getattr(state.backend, 'namespace', None)!r} "
                                     "(the API's namespace) or absent")
        created = await state.backend.create(manifest)  # a BackendError is answered by the app's handler
        state.forget(f"resource:{kind}:{created.name}")
        await state.publish(created.name, {"type": "created", "kind": kind, "name": created.name})
        return await detail(state, created)

    @router.get("/{name}", response_model=ResourceDetail, summary=f"Get a {noun}: phase, iteration, conditions, history")
    async def get(state: State, _: Viewer, name: ResourceName) -> ResourceDetail:
        return await detail(state, await state.resource(kind, name))

    async def _suspend(state: AppState, name: str, value: bool) -> ResourceDetail:
        resource = await state.backend.set_suspend(kind, name, value)
        state.forget(f"resource:{kind}:{name}")
        await state.publish(name, {"type": "suspended" if value else "resumed", "kind": kind, "name": name})
        return await detail(state, resource)

    @router.post("/{name}/suspend", response_model=ResourceDetail, summary=f"Suspend a {noun} (spec.suspend: true)")
    async def suspend(state: State, _: Admin, name: ResourceName) -> ResourceDetail:
        return await _suspend(state, name, True)

    @router.post("/{name}/resume", response_model=ResourceDetail, summary=f"Resume a {noun} (spec.suspend: false)")
    async def resume(state: State, _: Admin, name: ResourceName) -> ResourceDetail:
        return await _suspend(state, name, False)

    @router.delete("/{name}", status_code=204, response_class=Response,
                   summary=f"Delete a {noun} (its data in the store stays)")
    async def delete(state: State, _: Admin, name: ResourceName) -> Response:
        await state.backend.delete(kind, name)
        state.forget(f"resource:{kind}:{name}")
        await state.publish(name, {"type": "deleted", "kind": kind, "name": name})
        return Response(status_code=204)

    @router.post("/{name}/progress", response_model=JobProgress, status_code=202,
                 summary="Report the progress of a running Job (worker token)")
    async def report_progress(state: State, principal: Worker, name: ResourceName, body: ProgressIn) -> JobProgress:
        await state.resource(kind, name, ttl=5.0)
        fraction = None
        if body.done is not None and body.total:
            fraction = max(0.0, min(1.0, body.done / body.total))
        report = JobProgress(job=body.job, step=body.step, done=body.done, total=body.total, fraction=fraction,
                             message=body.message, reporter=principal.name, updated=now_iso())
        try:
            await state.live.set_progress(f"{kind}:{name}", body.job, report.model_dump(exclude={"job"}))
        except LiveUnavailable as error:
            raise HTTPException(503, f"live state unavailable: {error}", headers={"Retry-After": "5"}) from None
        state.metrics.progress_reports.inc()
        await state.publish(name, {"type": "progress", "kind": kind, "name": name, **report.model_dump()})
        return report

    @router.get("/{name}/progress", response_model=ProgressList, summary="Latest progress of the Jobs")
    async def get_progress(state: State, _: Viewer, name: ResourceName) -> ProgressList:
        await state.resource(kind, name)
        return ProgressList(kind=kind, name=name, jobs=await _progress(state, kind, name))

    return router


experiments = resource_router(EXPERIMENT, "experiments", "experiments")
preprocessing = resource_router(PPJ, "preprocessingjobs", "preprocessing jobs")
