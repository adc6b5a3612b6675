"""An IVOA UWS 1.1 facade over preprocessing jobs and experiment iterations.

Two job lists, ``/uws/preprocessing`` (PreprocessingJobs) and ``/uws/iterations`` (iteration
``k`` of experiment ``e`` is the job ``e/k``), each with the standard's resources: the list (GET
with PHASE, AFTER, LAST; POST creates), the job (GET with WAIT and PHASE blocking; POST
ACTION=DELETE; DELETE), and ``phase``, ``executionduration``, ``destruction``, ``error``,
``quote``, ``parameters``, ``results`` (each result redirects to the API resource that serves
it), ``owner``. Changes answer ``303 See Other`` to the job (or to the list after a deletion), as
the standard says. Authentication and roles are the API's own: viewers read, admins create, run,
abort, delete and set limits. Parameter names are case-insensitive (DALI); bad values are 400
naming the parameter; what the job's state does not allow is 409 with the reason.
"""

# no `from __future__ import annotations`: the job routes are built in a function, and FastAPI
# must see their parameter types (a dependency per list) as objects, not as names to resolve later

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse

from oraculum.manifests import API_VERSION, ManifestError, parse_manifest
from oraculum.safe_parse import DocumentError

from ..bodies import YAML_TYPES, SafeRoute
from ..bodies import manifest_text as parse_manifest_text
from ..deps import Admin, ExperimentName, Iteration, ResourceName, State, Viewer
from ..models import NAME_PATTERN
from ..state import AppState
from ..uws_jobs import Links, UwsParameterError, error_detail, filter_jobs, parse_time, preprocessing_spec
from ..uws_records import UwsRecord, UwsRequest
from ..uws_service import (
    ITERATIONS,
    PREPROCESSING,
    SWEEP_SECONDS,
    JobKey,
    JobList,
    sweep,
    utc_now,
)
from ..uws_xml import (
    ACTIVE_PHASES,
    MEDIA_TYPE,
    PHASES,
    JobView,
    format_time,
    job_document,
    jobs_document,
    parameters_document,
    results_document,
)

log = logging.getLogger("oraculum.api")

#: Longest a blocking GET (WAIT=n, WAIT=-1) holds the request, and how often it looks meanwhile.
MAX_WAIT_SECONDS = 60.0
WAIT_POLL_SECONDS = 0.5
_NAME = re.compile(NAME_PATTERN)
_CREATE_CONTROL = ("phase", "runid", "name", "manifest")
_FORM = "application/x-www-form-urlencoded"
ResultId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="A result's id, e.g. index or batch.")]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Check execution-duration limits and destruction times in the background."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            state = getattr(app.state, "oraculum", None)
            if state is None:
                continue
            try:
                await sweep(state)
            except Exception as error:  # noqa: BLE001 - a background pass must survive a store or backend outage
                log.warning("UWS sweep failed (retrying in %.0f s): %s", SWEEP_SECONDS, error)

    task = asyncio.create_task(loop(), name="oraculum-uws-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/uws", tags=["UWS (IVOA)"], lifespan=_lifespan, route_class=SafeRoute)


# --- request parameters --------------------------------------------------------------------------


def _xml(data: bytes, status: int = 200) -> Response:
    return Response(data, status_code=status, media_type=MEDIA_TYPE)


def _links(request: Request) -> Links:
    listed = str(request.url_for("uws_preprocessing_list"))
    return Links(api=listed[: -len("/uws/preprocessing")])


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _parameters(request: Request, manifest_body: bool = False) -> tuple[dict[str, list[str]], bytes | None]:
    """UWS parameters from the query string and a form body, names lower-cased (DALI: names are
    case-insensitive). With ``manifest_body``, a JSON or YAML body is returned as the manifest."""
    found: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name.lower(), []).append(value)
    if request.method != "POST":
        return found, None
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body.strip():
        return found, None
    if content_type == _FORM or not content_type:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the form body is not UTF-8") from None
        for name, value in parse_qsl(text, keep_blank_values=True):
            found.setdefault(name.lower(), []).append(value)
        return found, None
    if manifest_body and (content_type in YAML_TYPES or content_type == "application/json"):
        return found, body
    raise HTTPException(415, f"unsupported Content-Type {content_type!r}: send UWS parameters form-encoded ({_FORM})"
                             + (", or a PreprocessingJob manifest as application/yaml or application/json"
                                if manifest_body else ""))


def _single(parameters: dict[str, list[str]], name: str) -> str | None:
    values = parameters.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise HTTPException(400, f"parameter {name.upper()} given {len(values)} times: give it once")
    return values[0]


def _to_int(name: str, value: str, low: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise HTTPException(400, f"parameter {name.upper()}: {value!r} is not an integer") from None
    if number < low:
        raise HTTPException(400, f"parameter {name.upper()}: {number} is below the smallest allowed value {low}")
    return number


def _integer(parameters: dict[str, list[str]], name: str, low: int) -> int | None:
    value = _single(parameters, name)
    return None if value is None else _to_int(name, value, low)


def _to_time(name: str, value: str) -> datetime:
    """An ISO 8601 time (UTC when no zone is given); 400 naming the parameter otherwise."""
    parsed = parse_time(value)
    if parsed is None:
        raise HTTPException(400, f"parameter {name.upper()}: {value!r} is not an ISO 8601 time such as 2030-01-31T12:00:00Z")
    return parsed


async def _required(request: Request, name: str, meaning: str) -> str:
    """The one parameter a POST to a job or a single-value resource takes: 400 naming it when it
    is missing, given twice, or comes with others."""
    parameters, _ = await _parameters(request)
    _unknown(parameters, (name,), "this resource")
    value = _single(parameters, name)
    if value is None or not value.strip():
        raise HTTPException(400, f"parameter {name.upper()}: required ({meaning})")
    return value.strip()


def _phase_value(value: str, name: str = "PHASE") -> str:
    phase = value.strip().upper()
    if phase not in PHASES:
        raise HTTPException(400, f"parameter {name}: {value!r} is not a UWS phase ({', '.join(PHASES)})")
    return phase


def _unknown(parameters: dict[str, list[str]], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(parameters) - set(allowed))
    if extra:
        raise HTTPException(400, f"unknown parameter(s) {', '.join(p.upper() for p in extra)} for {where}: it takes "
                                 f"{', '.join(p.upper() for p in allowed) or 'none'}")


def _form(properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a form-encoded UWS request body."""
    return {"requestBody": {"required": False, "content": {_FORM: {"schema": {
        "type": "object", "properties": properties, "additionalProperties": False}}}}}


def _query(*parameters: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"parameters": [{"name": name, "in": "query", "required": False, "description": doc, "schema": schema}
                           for name, doc, schema in parameters]}


_PHASE_SCHEMA = {"type": "string", "enum": list(PHASES)}


# --- the job list ----------------------------------------------------------------------------------


async def _job_list(state: AppState, jobs: JobList, request: Request) -> Response:
    parameters, _ = await _parameters(request)
    _unknown(parameters, ("phase", "after", "last"), "a job list")
    phases = [_phase_value(v) for v in parameters.get("phase", [])]
    after_text = _single(parameters, "after")
    after = None if after_text is None else _to_time("after", after_text)
    last = _integer(parameters, "last", 1)
    links = _links(request)
    views = filter_jobs(await jobs.views(state, links), phases, after, last)
    return _xml(jobs_document([(view, links.job(jobs.list_name, view.job_id)) for view in views]))


_LIST_QUERY = _query(
    ("PHASE", "Only jobs in this phase (repeat for several).", _PHASE_SCHEMA),
    ("AFTER", "Only jobs created after this ISO 8601 time.", {"type": "string", "format": "date-time"}),
    ("LAST", "Only the LAST most recently created jobs, newest first.", {"type": "integer", "minimum": 1}),
)


@router.get("/preprocessing", name="uws_preprocessing_list", response_class=Response, openapi_extra=_LIST_QUERY,
            summary="UWS job list: preprocessing jobs", responses={200: {"content": {MEDIA_TYPE: {}}}})
async def preprocessing_list(state: State, _: Viewer, request: Request) -> Response:
    return await _job_list(state, PREPROCESSING, request)


@router.get("/iterations", name="uws_iterations_list", response_class=Response, openapi_extra=_LIST_QUERY,
            summary="UWS job list: experiment iterations", responses={200: {"content": {MEDIA_TYPE: {}}}})
async def iterations_list(state: State, _: Viewer, request: Request) -> Response:
    return await _job_list(state, ITERATIONS, request)


def _generated_name(dataset: str) -> str:
    stem = re.sub(r"[^a-z0-9.-]", "-", dataset.lower())[:56].strip(".-") or "ppj"
    return f"{stem}-{secrets.token_hex(3)}"


async def _manifest_document(raw: bytes | str, origin: str) -> dict[str, Any]:
    """One manifest from YAML or JSON text, parsed safely on a worker thread (see
    :mod:`oraculum.api.bodies`); 400 naming the problem (413 for one too large)."""
    try:
        return await asyncio.to_thread(parse_manifest_text, raw, origin)
    except DocumentError as error:
        raise HTTPException(413 if error.status == 413 else 400, error.message) from None


@router.post(
    "/preprocessing", response_class=Response, status_code=303, summary="Create a preprocessing job (UWS)",
    description="Form parameters (names case-insensitive): SOURCE and DATASET (required), SHARDS, PARALLELISM, PATTERNS, "
                "GRID_START, GRID_END (Å), GRID_POINTS, GRID_SPACING, GRID_MEDIUM, BLUR_SIGMA_PX, NORMALISATION, "
                "CONTINUUM_DEGREE, CPU, MEMORY, GPU; or MANIFEST (a PreprocessingJob manifest as YAML/JSON text), or the "
                "manifest itself as an application/yaml or application/json body. NAME (optional) names the job, "
                "RUNID labels it. The job is created PENDING (suspended) unless PHASE=RUN. 303 to the new job.",
    responses={303: {"description": "created: see the job"}, 400: {"description": "a bad parameter (named)"},
               409: {"description": "a job of that name exists"}},
    openapi_extra=_form({"SOURCE": {"type": "string"}, "DATASET": {"type": "string"}, "SHARDS": {"type": "integer"},
                         "PHASE": {"type": "string", "enum": ["RUN"]}, "RUNID": {"type": "string"},
                         "NAME": {"type": "string"}, "MANIFEST": {"type": "string"}}),
)
async def create_preprocessing(state: State, principal: Admin, request: Request) -> Response:
    parameters, body = await _parameters(request, manifest_body=True)
    phase = _single(parameters, "phase")
    if phase is not None and phase.strip().upper() != "RUN":
        raise HTTPException(400, f"parameter PHASE: {phase!r} at creation: only PHASE=RUN (start at once) is allowed")
    run = phase is not None
    run_id = _single(parameters, "runid")
    name = _single(parameters, "name")
    manifest_text = _single(parameters, "manifest")
    job_parameters = {k: _single(parameters, k) or "" for k in parameters if k not in _CREATE_CONTROL}
    if body is not None or manifest_text is not None:
        if body is not None and manifest_text is not None:
            raise HTTPException(400, "parameter MANIFEST: give the manifest once (a body or the MANIFEST parameter)")
        if job_parameters:
            raise HTTPException(400, f"parameter(s) {', '.join(p.upper() for p in sorted(job_parameters))}: not with a "
                                     "manifest (the manifest's spec says everything)")
        document = await _manifest_document(body if body is not None else manifest_text or "", "parameter MANIFEST")
        if name is not None:
            document.setdefault("metadata", {})
            if not isinstance(document["metadata"], dict):
                raise HTTPException(400, "parameter MANIFEST: metadata must be a mapping")
            document["metadata"]["name"] = name
        elif not (document.get("metadata") or {}).get("name"):
            dataset = str((document.get("spec") or {}).get("dataset") or "ppj")
            document.setdefault("metadata", {})["name"] = _generated_name(dataset)
        if isinstance(document.get("spec"), dict):
            document["spec"]["suspend"] = not run
    else:
        try:
            spec = preprocessing_spec(job_parameters, suspend=not run)
        except UwsParameterError as error:
            raise HTTPException(400, str(error)) from None
        document = {"apiVersion": API_VERSION, "kind": "PreprocessingJob",
                    "metadata": {"name": name or _generated_name(spec["dataset"])}, "spec": spec}
    job_name = str((document.get("metadata") or {}).get("name") or "")
    if not _NAME.match(job_name):
        raise HTTPException(400, f"parameter NAME: {job_name!r} is not a valid job name: 1-63 lowercase letters, "
                                 "digits, '.' or '-', starting and ending with a letter or digit")
    try:
        manifest = parse_manifest(document, "parameter MANIFEST")
    except ManifestError as error:
        raise HTTPException(400, str(error)) from None
    if manifest.kind != "PreprocessingJob":
        raise HTTPException(400, f"parameter MANIFEST: this list holds PreprocessingJobs, not {manifest.kind}: "
                                 "experiments are created at /api/v1/experiments")
    if getattr(manifest.metadata, "namespace", None) and state.backend.name == "kubernetes" \
            and manifest.metadata.namespace != getattr(state.backend, "namespace", None):
        raise HTTPException(400, f"parameter MANIFEST: metadata.namespace must be "
                                 f"{getattr(state.backend, 'namespace', None)!r} (the API's namespace) or absent")
    created = await state.backend.create(manifest)  # a BackendError is answered by the app's handler
    record = UwsRecord(list="preprocessing", name=created.name, uid=created.uid, owner=principal.name, run_id=run_id,
                       requests=[UwsRequest(phase="RUN" if run else "CREATE", at=utc_now(), by=principal.name)])
    await PREPROCESSING.save(state, record)
    state.forget(f"resource:{PREPROCESSING.kind}:{created.name}")
    await state.publish(created.name, {"type": "created", "kind": PREPROCESSING.kind, "name": created.name, "via": "uws"})
    return _see_other(_links(request).job(PREPROCESSING.list_name, created.name))


@router.post("/iterations", response_class=Response, summary="Creating iteration jobs is not possible (405)",
             responses={405: {"description": "iterations are made by their experiment's loop"}})
async def create_iteration(_: Admin) -> Response:
    raise HTTPException(405, "iterations are made by their experiment's loop, not created one by one: create an "
                             "ActiveLearningExperiment (POST /api/v1/experiments) and its iterations appear in this list",
                        headers={"Allow": "GET"})


# --- one job: the same routes for both lists ------------------------------------------------------


# async: plain functions as dependencies would each cost a hop to a worker thread
async def _ppj_key(name: ResourceName) -> JobKey:
    return JobKey(name)


async def _iteration_key(experiment: ExperimentName, iteration: Iteration) -> JobKey:
    return JobKey(experiment, iteration)


def _job_routes(jobs: JobList, path: str, key_of: Any) -> None:
    """Register the job and its sub-resources under ``/uws/<list><path>``."""
    Key = Annotated[JobKey, Depends(key_of)]
    base = f"/{jobs.list_name}{path}"
    noun = "preprocessing job" if jobs is PREPROCESSING else "iteration"

    async def wait_for_change(state: AppState, key: JobKey, links: Links, request: Request) -> JobView:
        parameters, _ = await _parameters(request)
        _unknown(parameters, ("wait", "phase"), "a job")
        wait = _integer(parameters, "wait", -1)
        phase = _single(parameters, "phase")
        awaited = _phase_value(phase) if phase is not None else None
        view = await jobs.view(state, key, links)
        if wait is None:
            return view
        deadline = time.monotonic() + (MAX_WAIT_SECONDS if wait == -1 else min(float(wait), MAX_WAIT_SECONDS))
        started_in = view.phase
        while view.phase in ACTIVE_PHASES and view.phase == (awaited or started_in):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or await request.is_disconnected():
                break
            await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))
            view = await jobs.view(state, key, links)
        return view

    @router.get(base, response_class=Response, summary=f"UWS job: a {noun}",
                description="WAIT=n blocks up to n seconds (-1: the server's maximum, 60 s) while the job is PENDING, "
                            "QUEUED or EXECUTING, until its phase changes; with PHASE=p only while it is in phase p.",
                openapi_extra=_query(("WAIT", "Seconds to block for a phase change (-1: the maximum).",
                                      {"type": "integer", "minimum": -1}),
                                     ("PHASE", "Block only while the job is in this phase.", _PHASE_SCHEMA)),
                responses={200: {"content": {MEDIA_TYPE: {}}}})
    async def get_job(state: State, _: Viewer, key: Key, request: Request) -> Response:
        return _xml(job_document(await wait_for_change(state, key, _links(request), request)))

    async def delete(state: AppState, key: JobKey, request: Request) -> Response:
        await jobs.delete(state, key)
        return _see_other(_links(request).jobs(jobs.list_name))

    @router.post(base, response_class=Response, status_code=303, summary=f"ACTION=DELETE a {noun} (UWS)",
                 openapi_extra=_form({"ACTION": {"type": "string", "enum": ["DELETE"]}}))
    async def post_job(state: State, _: Admin, key: Key, request: Request) -> Response:
        action = await _required(request, "action", "ACTION=DELETE; change the phase at .../phase")
        if action.upper() != "DELETE":
            raise HTTPException(400, f"parameter ACTION: {action!r}: the only action on a job is ACTION=DELETE "
                                     "(change its phase at .../phase)")
        return await delete(state, key, request)

    @router.delete(base, response_class=Response, status_code=303, summary=f"Delete a {noun} (UWS)")
    async def delete_job(state: State, _: Admin, key: Key, request: Request) -> Response:
        if jobs is ITERATIONS:
            await jobs.resource(state, key)  # 404 for a job that does not exist
            raise HTTPException(405, f"iteration {key.iteration} is part of experiment {key.name!r}: delete the "
                                     f"experiment (DELETE /api/v1/experiments/{key.name}) to remove it",
                                headers={"Allow": "GET, POST"})
        return await delete(state, key, request)

    @router.get(f"{base}/phase", response_class=PlainTextResponse, summary="The job's phase")
    async def get_phase(state: State, _: Viewer, key: Key, request: Request) -> str:
        return (await jobs.view(state, key, _links(request))).phase

    @router.post(f"{base}/phase", response_class=Response, status_code=303, summary="PHASE=RUN or PHASE=ABORT",
                 openapi_extra=_form({"PHASE": {"type": "string", "enum": ["RUN", "ABORT"]}}))
    async def post_phase(state: State, principal: Admin, key: Key, request: Request) -> Response:
        phase = (await _required(request, "phase", "PHASE=RUN or PHASE=ABORT")).upper()
        links = _links(request)
        if phase == "RUN":
            await jobs.run(state, key, principal, links)
        elif phase == "ABORT":
            await jobs.abort(state, key, principal, links)
        else:
            raise HTTPException(400, f"parameter PHASE: {phase!r}: use PHASE=RUN or PHASE=ABORT")
        return _see_other(links.job(jobs.list_name, key.job_id))

    @router.get(f"{base}/executionduration", response_class=PlainTextResponse,
                summary="Seconds the job may execute (0: unlimited)")
    async def get_duration(state: State, _: Viewer, key: Key, request: Request) -> str:
        return str((await jobs.view(state, key, _links(request))).execution_duration)

    @router.post(f"{base}/executionduration", response_class=Response, status_code=303,
                 summary="Set EXECUTIONDURATION (seconds; 0: unlimited): a job executing longer is aborted",
                 openapi_extra=_form({"EXECUTIONDURATION": {"type": "integer", "minimum": 0}}))
    async def post_duration(state: State, _: Admin, key: Key, request: Request) -> Response:
        value = await _required(request, "executionduration", "seconds, 0 for unlimited")
        seconds = _to_int("executionduration", value, 0)
        links = _links(request)
        await jobs.set_limits(state, key, links, execution_duration=seconds)
        return _see_other(links.job(jobs.list_name, key.job_id))

    @router.get(f"{base}/destruction", response_class=PlainTextResponse,
                summary="When the job will be destroyed (empty: never)")
    async def get_destruction(state: State, _: Viewer, key: Key, request: Request) -> str:
        return format_time((await jobs.view(state, key, _links(request))).destruction)

    @router.post(f"{base}/destruction", response_class=Response, status_code=303,
                 summary="Set DESTRUCTION (ISO 8601): the job is deleted then",
                 openapi_extra=_form({"DESTRUCTION": {"type": "string", "format": "date-time"}}))
    async def post_destruction(state: State, _: Admin, key: Key, request: Request) -> Response:
        value = await _required(request, "destruction", "an ISO 8601 time such as 2030-01-31T12:00:00Z")
        when = _to_time("destruction", value)
        links = _links(request)
        await jobs.set_limits(state, key, links, destruction=when)
        return _see_other(links.job(jobs.list_name, key.job_id))

    @router.get(f"{base}/error", response_class=PlainTextResponse, summary="The job's error, in full (text)",
                responses={404: {"description": "the job has no error"}})
    async def get_error(state: State, _: Viewer, key: Key, request: Request) -> str:
        view = await jobs.view(state, key, _links(request))
        if view.phase == "ERROR":
            return error_detail(await jobs.resource(state, key))
        if view.error is not None:
            return view.error.message + "\n"
        raise HTTPException(404, f"job {key.job_id} is {view.phase}: it has no error")

    @router.get(f"{base}/quote", response_class=PlainTextResponse,
                summary="When the job is expected to end (empty: oraculum makes no prediction)")
    async def get_quote(state: State, _: Viewer, key: Key, request: Request) -> str:
        await jobs.view(state, key, _links(request))
        return ""

    @router.get(f"{base}/parameters", response_class=Response, summary="The job's parameters (UWS XML)",
                responses={200: {"content": {MEDIA_TYPE: {}}}})
    async def get_parameters(state: State, _: Viewer, key: Key, request: Request) -> Response:
        return _xml(parameters_document((await jobs.view(state, key, _links(request))).parameters))

    @router.get(f"{base}/results", response_class=Response, summary="The job's results: links (UWS XML)",
                responses={200: {"content": {MEDIA_TYPE: {}}}})
    async def get_results(state: State, _: Viewer, key: Key, request: Request) -> Response:
        return _xml(results_document((await jobs.view(state, key, _links(request))).results))

    @router.get(f"{base}/results/{{result_id}}", response_class=Response, status_code=303,
                summary="One result: 303 to where the API serves it")
    async def get_result(state: State, _: Viewer, key: Key, result_id: ResultId, request: Request) -> Response:
        view = await jobs.view(state, key, _links(request))
        result = view.result(result_id)
        if result is None:
            raise HTTPException(404, f"job {key.job_id} has no result {result_id!r} (it has: "
                                     f"{', '.join(r.id for r in view.results) or 'none yet'})")
        return _see_other(result.href)

    @router.get(f"{base}/owner", response_class=PlainTextResponse, summary="Who created the job (empty: not known)")
    async def get_owner(state: State, _: Viewer, key: Key, request: Request) -> str:
        return (await jobs.view(state, key, _links(request))).owner_id or ""


_job_routes(PREPROCESSING, "/{name}", _ppj_key)
_job_routes(ITERATIONS, "/{experiment}/{iteration}", _iteration_key)
