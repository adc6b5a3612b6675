"""oraculum's resources as UWS 1.1 jobs: the phase mapping, parameters, times and results.

Pure functions of what the routers gathered (the resource, the facade's record, which objects
the store holds): no I/O here, so every row of the mapping tables is a unit test, and the same
mapping serves both backends. See docs/uws.md for the tables in prose.

Two job lists:

* ``preprocessing``: a PreprocessingJob is a job; its jobId is the resource's name.
* ``iterations``: iteration ``k`` of an ActiveLearningExperiment is a job ``<experiment>/<k>``:
  its work is the iteration's *iterate* step (train, score the pool, choose the oracle batch),
  so it is COMPLETED once ``run.json`` and the batch are in the store; labelling and evaluation
  follow in the experiment (shown in ``jobInfo``, and ``metrics`` joins the results once
  evaluated). Iterations are made by the experiment's loop, never created through UWS; RUN and
  ABORT resume and suspend the experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import ValidationError

from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec

from .backend import Resource
from .uws_records import UwsRecord
from .uws_xml import ErrorSummary, JobView, Result

PPJ_KIND = "PreprocessingJob"


class UwsParameterError(ValueError):
    """A UWS parameter is invalid; ``parameter`` names it (the message says how to fix it)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"parameter {parameter.upper()}: {message}")
        self.parameter = parameter


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 / ISO 8601 time as an aware UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------

#: Child-Job states (status.jobs[].state) that mean the pods are not running yet.
_WAITING = ("Created", "Pending")


def preprocessing_phase(status_phase: str | None, suspend: bool, last_request: str | None,
                        job_state: str | None) -> str:
    """The UWS phase of a PreprocessingJob.

    ``status_phase``: status.phase (None before the controller first looked); ``suspend``:
    spec.suspend; ``last_request``: the facade's last phase request (CREATE, RUN, ABORT or None);
    ``job_state``: state of its Indexed Job in status.jobs. Results in the store beat everything,
    then a failure; a suspended job is PENDING (created through UWS, never run), ABORTED (by
    PHASE=ABORT) or HELD (suspended outside UWS: kubectl or the JSON API); spec.suspend beats a
    status the controller has not caught up with yet.
    """
    if status_phase == "Succeeded":
        return "COMPLETED"
    if status_phase == "Failed":
        return "ERROR"
    if status_phase not in (None, "", "Pending", "Running", "Suspended"):
        return "UNKNOWN"
    if suspend:
        return {"ABORT": "ABORTED", "CREATE": "PENDING"}.get(last_request or "", "HELD")
    if status_phase == "Running":
        return "QUEUED" if job_state in _WAITING else "EXECUTING"
    return "QUEUED"  # not looked at yet, waiting for its Job, or resuming


def iteration_phase(k: int, current: int, experiment_phase: str | None, suspend: bool, finished: bool,
                    last_request: str | None, job_state: str | None) -> str:
    """The UWS phase of iteration ``k`` of an experiment at iteration ``current``.

    ``finished``: the iteration's run.json is in the store (its batch was chosen); ``job_state``:
    state of its iterate Job in status.jobs; the rest as for :func:`preprocessing_phase`.
    """
    if k > current:
        raise ValueError(f"iteration {k} has not started (the experiment is at iteration {current})")
    if k < current:
        return "COMPLETED"
    if experiment_phase == "Failed":
        return "ERROR"
    if finished or experiment_phase == "Succeeded":
        return "COMPLETED"
    if experiment_phase not in (None, "", "Pending", "Training", "Suspended", "AwaitingLabels"):
        return "UNKNOWN"
    if suspend:
        return "ABORTED" if last_request == "ABORT" else "HELD"
    if experiment_phase == "Training":
        return "QUEUED" if job_state in (None, "Suspended", *_WAITING) else "EXECUTING"
    if experiment_phase == "AwaitingLabels":
        return "UNKNOWN"  # awaiting labels without a batch: the store and the status disagree
    return "QUEUED"


# --------------------------------------------------------------------------------------------
# PreprocessingJob parameters <-> spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterDef:
    """A UWS parameter of a preprocessing job and where it goes in the spec (camelCase path)."""

    id: str
    path: tuple[str, ...]
    kind: Callable[[str], Any]
    doc: str


def _text(value: str) -> str:
    return value


def _patterns(value: str) -> list[str]:
    patterns = [p.strip() for p in value.split(",") if p.strip()]
    if not patterns:
        raise ValueError("give at least one file name pattern, e.g. *.fits,*.fits.gz")
    return patterns


PREPROCESSING_PARAMETERS: tuple[ParameterDef, ...] = (
    ParameterDef("source", ("source",), _text,
                 "the archive: a folder or s3://bucket/prefix, or synthetic:COUNT?seed=S (required)"),
    ParameterDef("patterns", ("source", "patterns"), _patterns, "comma-separated file name globs"),
    ParameterDef("dataset", ("dataset",), _text, "name of the dataset to write (required)"),
    ParameterDef("shards", ("shards",), int, "shards: pods of the Indexed Job and HDF5 parts"),
    ParameterDef("parallelism", ("parallelism",), int, "pods running at once"),
    ParameterDef("grid_start", ("grid", "start"), float, "first grid wavelength, Å"),
    ParameterDef("grid_end", ("grid", "end"), float, "last grid wavelength, Å"),
    ParameterDef("grid_points", ("grid", "points"), int, "number of grid points"),
    ParameterDef("grid_spacing", ("grid", "spacing"), _text, "linear or log"),
    ParameterDef("grid_medium", ("grid", "medium"), _text, "grid wavelengths in vacuum or air"),
    ParameterDef("blur_sigma_px", ("blurSigmaPx",), float, "Gaussian blur sigma in native pixels"),
    ParameterDef("normalisation", ("normalisation",), _text, "minmax, continuum or none"),
    ParameterDef("continuum_degree", ("continuumDegree",), int, "continuum polynomial degree"),
    ParameterDef("cpu", ("resources", "cpu"), _text, "CPU request per pod, e.g. 2 or 500m"),
    ParameterDef("memory", ("resources", "memory"), _text, "memory per pod, e.g. 4Gi"),
    ParameterDef("gpu", ("resources", "gpu"), int, "GPUs per pod"),
)
_BY_ID = {p.id: p for p in PREPROCESSING_PARAMETERS}


def _source(value: str) -> dict[str, Any]:
    from oraculum.ingest.sources import SYNTHETIC_SCHEME, parse_synthetic

    if value.startswith(SYNTHETIC_SCHEME):
        count, seed = parse_synthetic(value)
        return {"synthetic": {"count": count, "seed": seed}}
    return {"url": value}


#: Model-level validation errors (no field of their own) and the parameter to name for them.
_MODEL_ERRORS = {("grid",): "grid_end", ("source",): "source"}


def _parameter_of(location: Sequence[Any]) -> str:
    """The parameter a validation error's location belongs to (the longest matching path)."""
    path = tuple(str(part) for part in location)
    if path in _MODEL_ERRORS:
        return _MODEL_ERRORS[path]
    matches = [d for d in PREPROCESSING_PARAMETERS if path[:len(d.path)] == d.path]
    return max(matches, key=lambda d: len(d.path)).id if matches else (path[0] if path else "source")


def preprocessing_spec(parameters: Mapping[str, str], suspend: bool) -> dict[str, Any]:
    """A PreprocessingJob spec (camelCase, validated) from UWS parameters (lower-case ids).

    :class:`UwsParameterError` names the first unknown, missing or invalid parameter.
    """
    for name in parameters:
        if name not in _BY_ID:
            raise UwsParameterError(name, f"unknown parameter; a preprocessing job takes {', '.join(_BY_ID)} "
                                          "(or a MANIFEST)")
    for required in ("source", "dataset"):
        if not str(parameters.get(required) or "").strip():
            raise UwsParameterError(required, f"required: {_BY_ID[required].doc}")
    spec: dict[str, Any] = {"suspend": suspend}
    for name, raw in parameters.items():
        definition = _BY_ID[name]
        text = str(raw).strip()
        try:
            value = _source(text) if name == "source" else definition.kind(text)
        except ValueError as error:
            raise UwsParameterError(name, f"{text!r} is not valid: {error}; {definition.doc}") from None
        target = spec
        for part in definition.path[:-1]:
            target = target.setdefault(part, {})
        if name == "source":
            target.setdefault("source", {}).update(value)
        else:
            target[definition.path[-1]] = value
    try:
        PreprocessingJobSpec.model_validate(spec)
    except ValidationError as error:
        issue = error.errors()[0]
        parameter = _parameter_of(issue["loc"])
        detail = str(issue["msg"]).removeprefix("Value error, ")
        if not isinstance(issue.get("input"), dict):
            detail += f" (got {issue['input']!r})"
        raise UwsParameterError(parameter, detail) from None
    return spec


def _number(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def preprocessing_parameters(raw_spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The UWS parameters of a PreprocessingJob, read back from its spec (defaults filled in)."""
    try:
        spec = PreprocessingJobSpec.model_validate(dict(raw_spec))
    except ValidationError:  # an invalid spec (the job is in ERROR): show what is there
        return [(key, str(value)) for key, value in sorted(raw_spec.items()) if not isinstance(value, (dict, list))]
    out = [
        ("source", spec.source.location()), ("patterns", ",".join(spec.source.patterns)), ("dataset", spec.dataset),
        ("shards", str(spec.shards)), ("parallelism", str(spec.parallelism)),
        ("grid_start", _number(spec.grid.start)), ("grid_end", _number(spec.grid.end)),
        ("grid_points", str(spec.grid.points)), ("grid_spacing", spec.grid.spacing), ("grid_medium", spec.grid.medium),
    ]
    if spec.blur_sigma_px is not None:
        out.append(("blur_sigma_px", _number(spec.blur_sigma_px)))
    out += [("normalisation", spec.normalisation), ("continuum_degree", str(spec.continuum_degree)),
            ("cpu", spec.resources.cpu), ("memory", spec.resources.memory), ("gpu", str(spec.resources.gpu))]
    return out


def iteration_parameters(raw_spec: Mapping[str, Any], experiment: str, k: int) -> list[tuple[str, str]]:
    """What iteration ``k`` runs with (read-only: iterations take their experiment's spec)."""
    out = [("experiment", experiment), ("iteration", str(k))]
    try:
        spec = ExperimentSpec.model_validate(dict(raw_spec))
    except ValidationError:
        return out
    return out + [
        ("dataset", spec.dataset), ("model", spec.model.preset), ("strategy", spec.acquisition.strategy),
        ("batch_size", str(spec.acquisition.batch_size)), ("estimation_size", str(spec.estimation.size)),
        ("oracle", spec.oracle.type), ("max_iterations", str(spec.stopping.max_iterations)),
    ]


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Links:
    """Absolute URLs: ``api`` is the API's base (``http://host[/root]/api/v1``)."""

    api: str

    def job(self, list_name: str, job_id: str) -> str:
        return f"{self.api}/uws/{list_name}/{job_id}"

    def jobs(self, list_name: str) -> str:
        return f"{self.api}/uws/{list_name}"


def condition_time(status: Mapping[str, Any], type_: str) -> datetime | None:
    """When a condition last turned True."""
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == type_ and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime"))
    return None


def child_job_state(status: Mapping[str, Any], purpose: str, iteration: int | None = None) -> str | None:
    for job in status.get("jobs") or []:
        if isinstance(job, dict) and job.get("purpose") == purpose \
                and (iteration is None or job.get("iteration") == iteration):
            return str(job.get("state") or "") or None
    return None


def _info(pairs: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in pairs if value is not None and value != ""]


def _aborted(record: UwsRecord, iteration: int | None = None) -> tuple[datetime | None, ErrorSummary | None]:
    last = record.last(iteration)
    if last is None or last.phase != "ABORT":
        return None, None
    return last.at, (ErrorSummary(last.reason, fatal=False, has_detail=False) if last.reason else None)


def preprocessing_view(resource: Resource, record: UwsRecord, artifacts: Mapping[str, int], links: Links) -> JobView:
    """``<uws:job>`` of a PreprocessingJob. ``artifacts``: file name -> size of the objects in
    its dataset's folder (index.json, rejected.jsonl)."""
    status, spec = resource.status or {}, resource.spec or {}
    last = record.last()
    phase = preprocessing_phase(status.get("phase"), bool(spec.get("suspend")), last.phase if last else None,
                                child_job_state(status, "preprocess"))
    created = parse_time(resource.created)
    work_done = bool(status.get("shardsDone") or status.get("processed"))
    start = record.first_run()
    if start is None and phase not in ("PENDING",) and (phase != "HELD" or work_done):
        start = created  # created running (kubectl, the JSON API or PHASE=RUN with the creation)
    end: datetime | None = None
    error: ErrorSummary | None = None
    if phase == "COMPLETED":
        end = condition_time(status, "Succeeded")
    elif phase == "ERROR":
        end = condition_time(status, "Failed")
        error = ErrorSummary(str(status.get("message") or "the preprocessing job failed"), fatal=True)
    elif phase == "ABORTED":
        end, error = _aborted(record)
    dataset = str(spec.get("dataset") or status.get("dataset") or "")
    results = []
    if dataset and "index.json" in artifacts:
        results = [Result("index", f"{links.api}/datasets/{dataset}", "application/json"),
                   Result("rejected", f"{links.api}/datasets/{dataset}/rejected", "application/json")]
    info = _info([("kind", PPJ_KIND), ("name", resource.name), ("namespace", resource.namespace),
                  ("phase", status.get("phase") or "Pending"), ("message", status.get("message")),
                  ("suspended", str(bool(spec.get("suspend"))).lower()), ("dataset", dataset),
                  ("shards", status.get("shards")), ("shardsDone", status.get("shardsDone")),
                  ("processed", status.get("processed")), ("rejected", status.get("rejected"))])
    return JobView(
        job_id=resource.name, phase=phase, creation_time=created, run_id=record.run_id, owner_id=record.owner,
        start_time=start if phase != "PENDING" else None, end_time=end,
        execution_duration=record.execution_duration, destruction=record.destruction,
        parameters=preprocessing_parameters(spec), results=results, error=error, info=info,
    )


#: An iteration's artifacts shown as results: (file name, result id, API path after
#: .../iterations/<k>, media type, whether the link serves the object as stored: then its size is given).
ITERATION_RESULTS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("batch.json", "batch", "batch", "application/json", False),
    ("candidates.csv", "candidates-csv", "candidates.csv", "text/csv", True),
    ("candidates.vot", "candidates-votable", "candidates.vot", "application/x-votable+xml", True),
    ("map.json", "map", "map", "application/json", False),
    ("metrics.json", "metrics", "metrics", "application/json", False),
)


def iteration_view(resource: Resource, k: int, record: UwsRecord, artifacts: Mapping[str, int],
                   run: Mapping[str, Any] | None, previous_run: Mapping[str, Any] | None, links: Links) -> JobView:
    """``<uws:job>`` of iteration ``k``. ``artifacts``: file name -> size of the objects in the
    iteration's folder; ``run`` and ``previous_run``: run.json of iterations k and k-1 (or None)."""
    status, spec = resource.status or {}, resource.spec or {}
    current = int(status.get("iteration") or 0)
    last = record.last(k)
    finished = run is not None
    phase = iteration_phase(k, current, status.get("phase"), bool(spec.get("suspend")), finished,
                            last.phase if last else None, child_job_state(status, "iterate", k))
    created_resource = parse_time(resource.created)
    start = parse_time((run or {}).get("started"))
    # an iteration is created when the loop reaches it: its start, else the latest time known before
    created = start or (created_resource if k == 0 else parse_time((previous_run or {}).get("finished")) or created_resource)
    end: datetime | None = parse_time((run or {}).get("finished")) if finished else None
    error: ErrorSummary | None = None
    if phase == "ERROR":
        end = end or condition_time(status, "Failed")
        error = ErrorSummary(str(status.get("message") or "the experiment failed"), fatal=True)
    elif phase == "ABORTED":
        end, error = _aborted(record, k)
        start = start or record.first_run(k)
    job_id = f"{resource.name}/{k}"
    base = f"{links.api}/experiments/{resource.name}/iterations/{k}"
    results = [Result(result_id, f"{base}/{path}", media, artifacts[file] if exact else None)
               for file, result_id, path, media, exact in ITERATION_RESULTS if file in artifacts]
    history = next((h for h in status.get("history") or [] if isinstance(h, dict) and h.get("iteration") == k), {})
    batch = (status.get("batch") or {}) if k == current else {}
    info = _info([("kind", "ActiveLearningExperiment"), ("experiment", resource.name), ("namespace", resource.namespace),
                  ("iteration", k), ("experimentPhase", status.get("phase") or "Pending"),
                  ("experimentIteration", current), ("message", status.get("message") if k == current else None),
                  ("suspended", str(bool(spec.get("suspend"))).lower()),
                  ("batchSize", batch.get("size")), ("batchLabelled", batch.get("labelled")),
                  ("labels", history.get("labels")), ("estimate", history.get("estimate")),
                  ("estimateLow", history.get("low")), ("estimateHigh", history.get("high")),
                  ("predictedTargets", history.get("predictedTargets"))])
    return JobView(
        job_id=job_id, phase=phase, creation_time=created, run_id=None, owner_id=None,
        start_time=start, end_time=end, execution_duration=0, destruction=None,
        parameters=iteration_parameters(spec, resource.name, k), results=results, error=error, info=info,
    )


def error_detail(resource: Resource) -> str:
    """The text of ``/error``: the status message and every condition, for people."""
    status = resource.status or {}
    head = f"{resource.kind} {resource.name}: {status.get('phase') or 'Pending'}: {status.get('message') or ''}"
    lines = [head.rstrip(": ")]
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict):
            lines.append(f"  {condition.get('type')}={condition.get('status')} ({condition.get('reason')}, "
                         f"{condition.get('lastTransitionTime')}): {condition.get('message') or ''}".rstrip(": "))
    for job in status.get("jobs") or []:
        if isinstance(job, dict):
            lines.append(f"  Job {job.get('name')} ({job.get('purpose')}): {job.get('state')}, "
                         f"{job.get('failedPods') or 0} failed pod(s)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The job list's filters (UWS 1.1 section 2.2.3.1)
# --------------------------------------------------------------------------------------------


def filter_jobs(jobs: Sequence[JobView], phases: Sequence[str] = (), after: datetime | None = None,
                last: int | None = None) -> list[JobView]:
    """PHASE (any of), AFTER (created strictly after) and LAST (the ``last`` most recently
    created, newest first); ARCHIVED jobs only when asked for by PHASE. Without LAST the list is
    in creation order, oldest first (ties by jobId)."""
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    chosen = [job for job in jobs
              if (job.phase in phases if phases else job.phase != "ARCHIVED")
              and (after is None or (job.creation_time is not None and job.creation_time > after))]
    chosen.sort(key=lambda job: (job.creation_time or epoch, job.job_id))
    if last is not None:
        chosen = list(reversed(chosen))[:last]
    return chosen
