"""The IVOA UWS 1.1 facade (api/routers/uws.py, docs/uws.md).

* The phase mapping, the job-list filters and the parameter <-> spec conversion are pure
  functions: table-driven tests.
* Every XML representation (job list, job, results, parameters, error summary) is read by two
  independent UWS implementations: vo-models' pydantic-xml model of the standard (subclassed with
  ``extra="forbid"`` so that anything it does not know fails, and elements are read in the
  schema's order) and pyvo's UWS parser in pedantic mode with warnings as errors. The standard's
  UWS.xsd is not in any installed package here, so it is not used (see docs/uws.md).
* A whole job lifecycle runs over real HTTP (uvicorn, the local runner preprocessing synthetic
  spectra) driven by pyvo's UWS client (``AsyncTAPJob`` over a job URL) and requests following
  the standard's 303 redirects; the Kubernetes backend is exercised against the emulated API
  server (tests/support/k8s_emulator.py).
"""

from __future__ import annotations

import io
import json
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic_xml import BaseXmlModel, element
from vo_models.uws.models import ErrorSummary, Job, Jobs, Parameter, Parameters, Results

from tests.support.api_fixtures import TOKEN_LIST, ApiProcess, auth, client_for, settings_for
from tests.support.api_world import EXPERIMENT, manifest
from oraculum.api.app import create_app
from oraculum.api.backend import Resource
from oraculum.api.uws_jobs import (
    Links,
    UwsParameterError,
    filter_jobs,
    iteration_phase,
    preprocessing_parameters,
    preprocessing_phase,
    preprocessing_spec,
    preprocessing_view,
)
from oraculum.api.uws_records import UwsRecord, UwsRequest, list_records, read_record, write_record
from oraculum.api.uws_xml import JobView, error_summary_document
from oraculum.manifests import PreprocessingJobSpec
from oraculum.control.registry import LocalRegistry, status_key
from oraculum.store import LocalStore

V1 = "/api/v1"
U = f"{V1}/uws"
NSMAP = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink",
         "xsi": "http://www.w3.org/2001/XMLSchema-instance", "o": "urn:oraculum:uws:jobinfo:v1"}
UTC = timezone.utc


# --------------------------------------------------------------------------------------------
# Independent readers: vo-models in strict mode, pyvo pedantic
# --------------------------------------------------------------------------------------------


def _p() -> Any:
    return element(tag="parameter", default=None)


class PreprocessingParameters(Parameters, extra="forbid"):
    """The documented parameters of a preprocessing job (docs/uws.md), one field each."""

    source: Optional[Parameter] = _p()
    patterns: Optional[Parameter] = _p()
    dataset: Optional[Parameter] = _p()
    shards: Optional[Parameter] = _p()
    parallelism: Optional[Parameter] = _p()
    grid_start: Optional[Parameter] = _p()
    grid_end: Optional[Parameter] = _p()
    grid_points: Optional[Parameter] = _p()
    grid_spacing: Optional[Parameter] = _p()
    grid_medium: Optional[Parameter] = _p()
    blur_sigma_px: Optional[Parameter] = _p()
    normalisation: Optional[Parameter] = _p()
    continuum_degree: Optional[Parameter] = _p()
    cpu: Optional[Parameter] = _p()
    memory: Optional[Parameter] = _p()
    gpu: Optional[Parameter] = _p()


class IterationParameters(Parameters, extra="forbid"):
    experiment: Optional[Parameter] = _p()
    iteration: Optional[Parameter] = _p()
    dataset: Optional[Parameter] = _p()
    model: Optional[Parameter] = _p()
    strategy: Optional[Parameter] = _p()
    batch_size: Optional[Parameter] = _p()
    estimation_size: Optional[Parameter] = _p()
    oracle: Optional[Parameter] = _p()
    max_iterations: Optional[Parameter] = _p()


def _o() -> Any:
    return element(ns="o", default=None)


class OraculumInfo(BaseXmlModel, tag="jobInfo", ns="uws", nsmap=NSMAP, search_mode="unordered", extra="forbid"):
    """oraculum's elements in <uws:jobInfo> (the schema allows any element there; vo-models
    models it as text, so the strict reader needs this part spelled out)."""

    kind: Optional[str] = _o()
    name: Optional[str] = _o()
    namespace: Optional[str] = _o()
    phase: Optional[str] = _o()
    message: Optional[str] = _o()
    suspended: Optional[str] = _o()
    dataset: Optional[str] = _o()
    shards: Optional[int] = _o()
    shardsDone: Optional[int] = _o()  # noqa: N815 - the element's name
    processed: Optional[int] = _o()
    rejected: Optional[int] = _o()
    experiment: Optional[str] = _o()
    iteration: Optional[int] = _o()
    experimentPhase: Optional[str] = _o()  # noqa: N815
    experimentIteration: Optional[int] = _o()  # noqa: N815
    batchSize: Optional[int] = _o()  # noqa: N815
    batchLabelled: Optional[int] = _o()  # noqa: N815
    labels: Optional[int] = _o()
    estimate: Optional[float] = _o()
    estimateLow: Optional[float] = _o()  # noqa: N815
    estimateHigh: Optional[float] = _o()  # noqa: N815
    predictedTargets: Optional[int] = _o()  # noqa: N815


class StrictPreprocessingJob(Job[PreprocessingParameters], extra="forbid"):
    job_info: Optional[OraculumInfo] = element(tag="jobInfo", default=None)


class StrictIterationJob(Job[IterationParameters], extra="forbid"):
    job_info: Optional[OraculumInfo] = element(tag="jobInfo", default=None)


class StrictJobs(Jobs, extra="forbid"):
    pass


class StrictResults(Results, extra="forbid"):
    pass


class StrictErrorSummary(ErrorSummary, extra="forbid"):
    pass


def _serialisable(parsed: Any) -> Any:
    """vo-models 0.5 reads a result's other attributes into ``any_attrs`` ({} when there are
    none) and then writes only those: an empty wildcard is set to None (the same meaning) so that
    its own serialiser keeps id, href, size and mime-type."""
    results = parsed if isinstance(parsed, Results) else getattr(parsed, "results", None)
    if not isinstance(results, Results) or not results.results:
        return parsed
    fixed = results.model_copy(update={"results": [r.model_copy(update={"any_attrs": r.any_attrs or None})
                                                   for r in results.results]})
    return fixed if parsed is results else parsed.model_copy(update={"results": fixed})


def strict(model: type[BaseXmlModel], xml: bytes) -> Any:
    """Parse with vo-models (strict: unknown content fails), and check the values survive a round
    trip through vo-models' own serialisation."""
    parsed = model.from_xml(xml)
    again = model.from_xml(_serialisable(parsed).to_xml(skip_empty=True))
    assert again == parsed, (again, parsed)
    return parsed


def _pedantic(parse: Any, xml: bytes) -> Any:
    from erfa import ErfaWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any complaint of the parser fails the test
        warnings.simplefilter("ignore", ErfaWarning)  # astropy: leap seconds of future dates are unknown
        return parse(io.BytesIO(xml), pedantic=True)


def pyvo_job(xml: bytes) -> Any:
    from pyvo.io.uws import parse_job

    return _pedantic(parse_job, xml)


def pyvo_jobs(xml: bytes) -> Any:
    from pyvo.io.uws import parse_job_list

    return _pedantic(parse_job_list, xml)


def params_of(parsed: Any) -> dict[str, str]:
    """Parameter id -> value from a vo-models Parameters model."""
    out = {}
    for value in parsed.__dict__.values():
        if isinstance(value, Parameter):
            out[value.id] = str(value.value)
    return out


# --------------------------------------------------------------------------------------------
# The mapping tables (pure functions)
# --------------------------------------------------------------------------------------------

PPJ_TABLE = [
    # status.phase, spec.suspend, last UWS request, Job state -> UWS phase
    (None, True, "CREATE", None, "PENDING"),
    ("Suspended", True, "CREATE", "Suspended", "PENDING"),
    ("Suspended", False, "RUN", "Suspended", "QUEUED"),  # RUN given, the controller has not looked yet
    (None, False, "RUN", None, "QUEUED"),
    (None, False, None, None, "QUEUED"),  # created running by kubectl
    ("Pending", False, None, "Created", "QUEUED"),
    ("Running", False, "RUN", "Pending", "QUEUED"),  # pods waiting for a node
    ("Running", False, "RUN", "Running", "EXECUTING"),
    ("Running", False, None, None, "EXECUTING"),
    ("Running", True, "ABORT", "Running", "ABORTED"),  # ABORT given, not carried out yet
    ("Suspended", True, "ABORT", "Suspended", "ABORTED"),
    ("Suspended", True, "RUN", "Suspended", "HELD"),  # suspended outside UWS after RUN
    ("Suspended", True, None, "Suspended", "HELD"),  # kubectl patch / JSON API suspend
    ("Succeeded", False, "RUN", "Succeeded", "COMPLETED"),
    ("Succeeded", True, "ABORT", "Succeeded", "COMPLETED"),  # results beat a late ABORT
    ("Failed", False, "RUN", "Failed", "ERROR"),
    ("Failed", True, "ABORT", "Failed", "ERROR"),
    ("Exploded", False, None, None, "UNKNOWN"),  # a newer controller's phase
]


@pytest.mark.parametrize(("status", "suspend", "last", "job", "expected"), PPJ_TABLE)
def test_preprocessing_phase_table(status: str | None, suspend: bool, last: str | None, job: str | None,
                                   expected: str) -> None:
    assert preprocessing_phase(status, suspend, last, job) == expected


ITERATION_TABLE = [
    # k, current, experiment phase, suspend, run.json, last request, iterate Job -> UWS phase
    (0, 2, "Training", False, True, None, "Running", "COMPLETED"),
    (1, 2, "Failed", False, True, None, None, "COMPLETED"),  # an earlier iteration stays done
    (2, 2, "Failed", False, False, None, "Failed", "ERROR"),
    (2, 2, "Failed", False, True, None, None, "ERROR"),  # failed while evaluating its labels
    (2, 2, "AwaitingLabels", False, True, None, None, "COMPLETED"),
    (2, 2, "Succeeded", False, True, None, None, "COMPLETED"),
    (2, 2, "Training", False, True, None, "Succeeded", "COMPLETED"),  # evaluating after labelling
    (0, 0, None, False, False, None, None, "QUEUED"),
    (0, 0, "Pending", False, False, None, None, "QUEUED"),  # waiting for the dataset
    (2, 2, "Training", False, False, None, None, "QUEUED"),  # next iteration, Job not made yet
    (2, 2, "Training", False, False, None, "Created", "QUEUED"),
    (2, 2, "Training", False, False, None, "Pending", "QUEUED"),
    (2, 2, "Training", False, False, "RUN", "Running", "EXECUTING"),
    (2, 2, "Suspended", False, False, "RUN", "Suspended", "QUEUED"),  # resuming
    (2, 2, "Training", True, False, "ABORT", "Running", "ABORTED"),
    (2, 2, "Suspended", True, False, "ABORT", "Suspended", "ABORTED"),
    (2, 2, "Suspended", True, False, None, "Suspended", "HELD"),
    (2, 2, "Suspended", True, True, "ABORT", None, "COMPLETED"),  # its batch exists: done
    (2, 2, "AwaitingLabels", False, False, None, None, "UNKNOWN"),  # status and store disagree
    (2, 2, "Exploded", False, False, None, None, "UNKNOWN"),
]


@pytest.mark.parametrize(("k", "current", "phase", "suspend", "finished", "last", "job", "expected"), ITERATION_TABLE)
def test_iteration_phase_table(k: int, current: int, phase: str | None, suspend: bool, finished: bool,
                               last: str | None, job: str | None, expected: str) -> None:
    assert iteration_phase(k, current, phase, suspend, finished, last, job) == expected


def test_an_iteration_after_the_current_one_is_no_job() -> None:
    with pytest.raises(ValueError, match="has not started"):
        iteration_phase(3, 2, "Training", False, False, None, None)


def _view(job_id: str, phase: str, minute: int | None) -> JobView:
    created = None if minute is None else datetime(2026, 1, 1, 12, minute, tzinfo=UTC)
    return JobView(job_id=job_id, phase=phase, creation_time=created)


FILTER_JOBS = [_view("a", "COMPLETED", 1), _view("b", "EXECUTING", 2), _view("c", "ERROR", 3),
               _view("d", "ARCHIVED", 4), _view("e", "PENDING", 5), _view("f", "COMPLETED", None)]


@pytest.mark.parametrize(("phases", "after", "last", "expected"), [
    ((), None, None, ["f", "a", "b", "c", "e"]),  # oldest first, ARCHIVED only when asked for
    (("COMPLETED",), None, None, ["f", "a"]),
    (("COMPLETED", "ERROR"), None, None, ["f", "a", "c"]),
    (("ARCHIVED",), None, None, ["d"]),
    ((), 2, None, ["c", "e"]),  # strictly after 12:02; no creation time: not after anything
    ((), None, 2, ["e", "c"]),  # the two most recent, newest first
    (("COMPLETED", "EXECUTING"), 1, 5, ["b"]),
    ((), 9, None, []),
])
def test_job_list_filters(phases: tuple[str, ...], after: int | None, last: int | None, expected: list[str]) -> None:
    when = None if after is None else datetime(2026, 1, 1, 12, after, tzinfo=UTC)
    assert [j.job_id for j in filter_jobs(FILTER_JOBS, phases, when, last)] == expected


def test_parameters_round_trip_through_the_spec() -> None:
    given = {"source": "s3://archive/lamost/dr2", "patterns": "*.fits.gz,*.fits", "dataset": "dr2-pool", "shards": "8",
             "parallelism": "4", "grid_start": "6500.5", "grid_end": "6750.0", "grid_points": "200",
             "grid_spacing": "log", "grid_medium": "air", "blur_sigma_px": "7.0", "normalisation": "continuum",
             "continuum_degree": "3", "cpu": "2", "memory": "4Gi", "gpu": "0"}
    spec = preprocessing_spec(given, suspend=True)
    assert spec["suspend"] is True and spec["grid"] == {"start": 6500.5, "end": 6750.0, "points": 200,
                                                        "spacing": "log", "medium": "air"}
    assert dict(preprocessing_parameters(spec)) == given
    synthetic = preprocessing_spec({"source": "synthetic:50?seed=7", "dataset": "d"}, suspend=False)
    assert synthetic["source"] == {"synthetic": {"count": 50, "seed": 7}}
    shown = dict(preprocessing_parameters(synthetic))
    assert shown["source"] == "synthetic:50?seed=7" and shown["shards"] == "1" and "blur_sigma_px" not in shown
    assert PreprocessingJobSpec.model_validate(synthetic).suspend is False


@pytest.mark.parametrize(("given", "named", "says"), [
    ({"dataset": "d"}, "source", "required"),
    ({"source": "x"}, "dataset", "required"),
    ({"source": "x", "dataset": "d", "colour": "red"}, "colour", "unknown parameter"),
    ({"source": "x", "dataset": "d", "shards": "two"}, "shards", "'two' is not valid"),
    ({"source": "x", "dataset": "d", "shards": "0"}, "shards", "greater than or equal to 1"),
    ({"source": "x", "dataset": "Bad_Name"}, "dataset", "should match pattern"),
    ({"source": "x", "dataset": "d", "grid_start": "7000", "grid_end": "6000"}, "grid_end", "greater than start"),
    ({"source": "x", "dataset": "d", "grid_spacing": "cubic"}, "grid_spacing", "'linear' or 'log'"),
    ({"source": "synthetic:many", "dataset": "d"}, "source", "synthetic:COUNT"),
    ({"source": "synthetic:5", "dataset": "d"}, "source", "greater than or equal to 10"),
    ({"source": "x", "dataset": "d", "patterns": " , "}, "patterns", "at least one"),
])
def test_bad_parameters_are_named(given: dict[str, str], named: str, says: str) -> None:
    with pytest.raises(UwsParameterError, match=says) as caught:
        preprocessing_spec(given, suspend=True)
    assert caught.value.parameter == named and str(caught.value).startswith(f"parameter {named.upper()}")


def _ppj_resource(status: dict[str, Any], suspend: bool = False) -> Resource:
    spec = {"source": {"synthetic": {"count": 20, "seed": 5}}, "dataset": "other", "suspend": suspend}
    return Resource(kind="PreprocessingJob", name="job", namespace=None, uid="u1", generation=1,
                    created="2026-01-01T10:00:00Z", spec=spec, status=status)


def test_preprocessing_view_times_results_and_errors() -> None:
    links = Links(api="http://api.test/api/v1")
    record = UwsRecord(list="preprocessing", name="job", uid="u1", owner="ada", run_id="r7", requests=[
        UwsRequest(phase="CREATE", at=datetime(2026, 1, 1, 10, 0, tzinfo=UTC), by="ada"),
        UwsRequest(phase="RUN", at=datetime(2026, 1, 1, 10, 5, tzinfo=UTC), by="ada")])
    done = {"phase": "Succeeded", "message": "complete", "shards": 1, "shardsDone": 1, "processed": 19, "rejected": 1,
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed",
                            "lastTransitionTime": "2026-01-01T10:09:30Z"}]}
    view = preprocessing_view(_ppj_resource(done), record, {"index.json": 0}, links)
    assert view.phase == "COMPLETED" and view.owner_id == "ada" and view.run_id == "r7"
    assert view.start_time == datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    assert view.end_time == datetime(2026, 1, 1, 10, 9, 30, tzinfo=UTC)
    assert [(r.id, r.href) for r in view.results] == [("index", "http://api.test/api/v1/datasets/other"),
                                                       ("rejected", "http://api.test/api/v1/datasets/other/rejected")]
    assert ("processed", "19") in view.info and view.error is None
    failed = {"phase": "Failed", "message": "Job job-preprocess failed: BackoffLimitExceeded",
              "conditions": [{"type": "Failed", "status": "True", "reason": "JobFailed",
                              "lastTransitionTime": "2026-01-01T10:07:00Z"}]}
    view = preprocessing_view(_ppj_resource(failed), record, {}, links)
    assert view.phase == "ERROR" and view.error is not None and "BackoffLimitExceeded" in view.error.message
    assert view.error.fatal and view.end_time == datetime(2026, 1, 1, 10, 7, tzinfo=UTC) and view.results == []
    pending = preprocessing_view(_ppj_resource({}, suspend=True), record.model_copy(update={"requests": record.requests[:1]}),
                                 {}, links)
    assert pending.phase == "PENDING" and pending.start_time is None


def test_every_representation_is_read_by_two_independent_implementations() -> None:
    """The error summary as a document of its own, and a job with every optional part filled."""
    links = Links(api="http://api.test/api/v1")
    record = UwsRecord(list="preprocessing", name="job", uid="u1", owner="ada", execution_duration=3600,
                       destruction=datetime(2030, 1, 31, 12, 0, tzinfo=UTC),
                       requests=[UwsRequest(phase="RUN", at=datetime(2026, 1, 1, 10, 5, tzinfo=UTC), by="ada")])
    failed = {"phase": "Failed", "message": "shard 3: <unreadable> & \"odd\" ünïcode",
              "conditions": [{"type": "Failed", "status": "True", "reason": "JobFailed",
                              "lastTransitionTime": "2026-01-01T10:07:00.250Z"}]}
    view = preprocessing_view(_ppj_resource(failed), record, {}, links)
    summary = strict(StrictErrorSummary, error_summary_document(view.error))  # type: ignore[arg-type]
    assert summary.message == failed["message"] and summary.type.value == "fatal" and summary.has_detail
    from oraculum.api.uws_xml import job_document

    document = job_document(view)
    job = strict(StrictPreprocessingJob, document)
    assert (job.job_id, job.phase.value, job.owner_id, job.run_id) == ("job", "ERROR", "ada", None)
    assert job.execution_duration == 3600 and job.destruction == datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
    assert job.end_time == datetime(2026, 1, 1, 10, 7, 0, 250000, tzinfo=UTC)
    assert job.error_summary.message == failed["message"]
    assert params_of(job.parameters) == dict(view.parameters)
    parsed = pyvo_job(document)
    assert parsed.phase == "ERROR" and parsed.errorsummary.message.content == failed["message"]
    assert parsed.executionduration.to_value("s") == 3600 and parsed.destruction.isot.startswith("2030-01-31T12:00:00")


# --------------------------------------------------------------------------------------------
# The endpoints, in process, on the synthetic world (local backend)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def client(local_store: Path) -> Any:  # noqa: F811
    with TestClient(create_app(settings_for(local_store)), follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def reader(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    """One client on one copy of the world, for requests that are refused (they change nothing)."""
    import shutil

    store = tmp_path_factory.mktemp("uws-refused") / "store"
    shutil.copytree(world, store)
    with TestClient(create_app(settings_for(store)), follow_redirects=False) as test_client:
        yield test_client


def set_status(store: Path, kind_plural: str, name: str, status: dict[str, Any]) -> None:
    """Write what the local runner would have written for a resource."""
    LocalStore(store).put_bytes(status_key(kind_plural, name), json.dumps(
        {"kind": "", "name": name, "uid": "", "generation": 1, "specHash": "", "status": status}).encode())


def check_job(client: TestClient, url: str, model: type[BaseXmlModel]) -> tuple[Any, Any]:
    """GET a job: both readers agree with each other and with the single-value resources."""
    response = client.get(url, headers=auth("viewer"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml"), response.text
    job = strict(model, response.content)
    parsed = pyvo_job(response.content)
    assert (parsed.jobid, parsed.phase, parsed.runid, parsed.ownerid) == (job.job_id, job.phase.value, job.run_id,
                                                                         job.owner_id)
    assert [(p.id_, p.content) for p in parsed.parameters] == list(params_of(job.parameters).items())
    assert [(r.id_, r.href, r.mimetype) for r in parsed.results] == [
        (r.id, r.href, r.mime_type) for r in job.results.results]
    assert client.get(f"{url}/phase", headers=auth("viewer")).text == job.phase.value
    assert client.get(f"{url}/owner", headers=auth("viewer")).text == (job.owner_id or "")
    assert client.get(f"{url}/executionduration", headers=auth("viewer")).text == str(job.execution_duration)
    assert client.get(f"{url}/quote", headers=auth("viewer")).text == ""
    parameters = client.get(f"{url}/parameters", headers=auth("viewer"))
    params_model = job.parameters.__class__
    assert params_of(strict(params_model, parameters.content)) == params_of(job.parameters)
    results = strict(StrictResults, client.get(f"{url}/results", headers=auth("viewer")).content)
    assert results.results == job.results.results
    return job, parsed


def test_iterations_of_the_world(client: TestClient, local_store: Path) -> None:  # noqa: F811
    listed = client.get(f"{U}/iterations", headers=auth("viewer"))
    assert listed.status_code == 200
    jobs = strict(StrictJobs, listed.content)
    assert [(j.job_id, j.phase.value) for j in jobs.jobref] == [(f"{EXPERIMENT}/0", "COMPLETED"),
                                                               (f"{EXPERIMENT}/1", "COMPLETED")]
    assert [(j.jobid, j.phase) for j in pyvo_jobs(listed.content)] == [(j.job_id, j.phase.value) for j in jobs.jobref]
    assert jobs.jobref[1].href == f"http://testserver{U}/iterations/{EXPERIMENT}/1"

    job, _ = check_job(client, f"{U}/iterations/{EXPERIMENT}/1", StrictIterationJob)
    run = json.loads((local_store / f"experiments/{EXPERIMENT}/iterations/1/run.json").read_text())
    assert job.start_time == datetime.fromisoformat(run["started"]).replace(microsecond=job.start_time.microsecond)
    assert job.end_time is not None and job.end_time >= job.start_time
    assert params_of(job.parameters)["strategy"] == "entropy" and params_of(job.parameters)["batch_size"] == "12"
    assert job.job_info.experimentPhase == "AwaitingLabels" and job.job_info.batchSize == 18
    results = {r.id: r for r in job.results.results}
    assert {"batch", "candidates-csv", "candidates-votable", "map"} <= set(results) and "metrics" not in results
    csv = (local_store / f"experiments/{EXPERIMENT}/iterations/1/candidates.csv").read_bytes()
    assert results["candidates-csv"].size == len(csv)
    # every result link is a real, authorised API resource serving the object
    fetched = client.get(results["candidates-csv"].href.removeprefix("http://testserver"), headers=auth("viewer"))
    assert fetched.status_code == 200 and fetched.content == csv
    batch = client.get(results["batch"].href.removeprefix("http://testserver"), headers=auth("viewer")).json()
    assert batch["iteration"] == 1 and batch["size"] == 18
    redirect = client.get(f"{U}/iterations/{EXPERIMENT}/1/results/candidates-votable", headers=auth("viewer"))
    assert redirect.status_code == 303 and redirect.headers["location"] == results["candidates-votable"].href
    assert client.get(f"{U}/iterations/{EXPERIMENT}/1/results/nothing", headers=auth("viewer")).status_code == 404

    first, _ = check_job(client, f"{U}/iterations/{EXPERIMENT}/0", StrictIterationJob)
    assert "metrics" in {r.id for r in first.results.results}  # iteration 0 was evaluated
    assert first.job_info.labels == 40
    metrics = client.get(f"{V1}/experiments/{EXPERIMENT}/iterations/0/metrics", headers=auth("viewer"))
    assert metrics.status_code == 200

    # iterations are the experiment's: no creating, deleting or limits of their own
    assert client.get(f"{U}/iterations/{EXPERIMENT}/2", headers=auth("viewer")).status_code == 404
    assert client.get(f"{U}/iterations/ghost/0", headers=auth("viewer")).status_code == 404
    created = client.post(f"{U}/iterations", data={"EXPERIMENT": EXPERIMENT}, headers=auth("admin"))
    assert created.status_code == 405 and "/api/v1/experiments" in created.json()["detail"]
    deleted = client.delete(f"{U}/iterations/{EXPERIMENT}/1", headers=auth("admin"))
    assert deleted.status_code == 405 and "DELETE /api/v1/experiments/exp" in deleted.json()["detail"]
    assert client.post(f"{U}/iterations/{EXPERIMENT}/1", data={"ACTION": "DELETE"}, headers=auth("admin")).status_code == 409
    limit = client.post(f"{U}/iterations/{EXPERIMENT}/1/destruction", data={"DESTRUCTION": "2030-01-01T00:00:00Z"},
                        headers=auth("admin"))
    assert limit.status_code == 409
    done = client.post(f"{U}/iterations/{EXPERIMENT}/1/phase", data={"PHASE": "ABORT"}, headers=auth("admin"))
    assert done.status_code == 409 and "COMPLETED" in done.json()["detail"]
    assert client.get(f"{U}/iterations/{EXPERIMENT}/1/error", headers=auth("viewer")).status_code == 404


def test_abort_and_run_an_executing_iteration(client: TestClient, local_store: Path) -> None:  # noqa: F811
    """Iteration 2 is training (its Job runs, no batch yet): ABORT suspends the experiment, RUN
    resumes it; suspending through the JSON API shows as HELD; a failure as ERROR."""
    training = {"phase": "Training", "iteration": 2, "message": "iteration 2: training the network",
                "jobs": [{"name": "exp-iterate-2", "purpose": "iterate", "iteration": 2, "state": "Running"}],
                "history": [{"iteration": 0, "labels": 40}, {"iteration": 1, "labels": 58}]}
    set_status(local_store, "activelearningexperiments", EXPERIMENT, training)
    url = f"{U}/iterations/{EXPERIMENT}/2"
    job, _ = check_job(client, url, StrictIterationJob)
    assert job.phase.value == "EXECUTING" and job.start_time is None and not job.results.results
    run1 = json.loads((local_store / f"experiments/{EXPERIMENT}/iterations/1/run.json").read_text())
    assert job.creation_time == datetime.fromisoformat(run1["finished"]).replace(
        microsecond=job.creation_time.microsecond)  # created no earlier than iteration 1 ended

    aborted = client.post(f"{url}/phase", data={"PHASE": "ABORT"}, headers=auth("admin"))
    assert aborted.status_code == 303 and aborted.headers["location"] == f"http://testserver{url}"
    registry = LocalRegistry(LocalStore(local_store))
    assert registry.get("ActiveLearningExperiment", EXPERIMENT).spec["suspend"] is True  # type: ignore[union-attr]
    job, _ = check_job(client, url, StrictIterationJob)
    assert job.phase.value == "ABORTED" and job.end_time is not None
    again = client.post(f"{url}/phase", data={"phase": "abort"}, headers=auth("admin"))  # idempotent, names any case
    assert again.status_code == 303

    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=auth("admin")).status_code == 303
    assert registry.get("ActiveLearningExperiment", EXPERIMENT).spec["suspend"] is False  # type: ignore[union-attr]
    assert client.get(f"{url}/phase", headers=auth("viewer")).text == "EXECUTING"
    assert client.post(f"{V1}/experiments/{EXPERIMENT}/suspend", headers=auth("admin")).status_code == 200
    assert client.get(f"{url}/phase", headers=auth("viewer")).text == "HELD"
    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=auth("admin")).status_code == 303

    failed = {**training, "phase": "Failed", "message": "Job exp-iterate-2 failed: OOMKilled",
              "conditions": [{"type": "Failed", "status": "True", "reason": "JobFailed", "message": "OOMKilled",
                              "lastTransitionTime": "2026-02-01T08:00:00Z"}]}
    set_status(local_store, "activelearningexperiments", EXPERIMENT, failed)
    job, parsed = check_job(client, url, StrictIterationJob)
    assert job.phase.value == "ERROR" and "OOMKilled" in job.error_summary.message and job.error_summary.has_detail
    assert job.end_time == datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    assert parsed.errorsummary.type_ == "fatal"
    detail = client.get(f"{url}/error", headers=auth("viewer"))
    assert detail.status_code == 200 and "Failed=True (JobFailed" in detail.text and "exp-iterate-2" in detail.text
    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=auth("admin")).status_code == 409
    listed = strict(StrictJobs, client.get(f"{U}/iterations?PHASE=ERROR", headers=auth("viewer")).content)
    assert [j.job_id for j in listed.jobref] == [f"{EXPERIMENT}/2"]


def test_create_run_abort_delete_a_preprocessing_job(client: TestClient, local_store: Path) -> None:  # noqa: F811
    created = client.post(f"{U}/preprocessing", headers=auth("admin"), data={
        "SOURCE": "synthetic:20?seed=5", "DATASET": "other", "shards": "2", "RunId": "calibration-7", "NAME": "ppj-a"})
    assert created.status_code == 303, created.text
    url = f"{U}/preprocessing/ppj-a"
    assert created.headers["location"] == f"http://testserver{url}"
    registry = LocalRegistry(LocalStore(local_store))
    assert registry.get("PreprocessingJob", "ppj-a").spec["suspend"] is True  # type: ignore[union-attr]
    job, parsed = check_job(client, url, StrictPreprocessingJob)
    assert (job.phase.value, job.owner_id, job.run_id) == ("PENDING", "ada", "calibration-7")
    assert job.start_time is None and job.job_info.kind == "PreprocessingJob" and job.job_info.suspended == "true"
    assert params_of(job.parameters)["shards"] == "2" and params_of(job.parameters)["source"] == "synthetic:20?seed=5"
    assert parsed.creationtime is not None

    # the same job from a manifest body; names clash -> 409
    body = yaml.safe_dump({"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob", "metadata": {"name": "ppj-b"},
                           "spec": {"source": {"url": "archive/"}, "dataset": "from-manifest", "suspend": False}})
    from_manifest = client.post(f"{U}/preprocessing", content=body,
                                headers={**auth("admin"), "Content-Type": "application/yaml"})
    assert from_manifest.status_code == 303
    assert registry.get("PreprocessingJob", "ppj-b").spec["suspend"] is True  # type: ignore[union-attr]  # UWS: PENDING
    clash = client.post(f"{U}/preprocessing", data={"SOURCE": "x", "DATASET": "y", "NAME": "ppj-a"}, headers=auth("admin"))
    assert clash.status_code == 409
    running = client.post(f"{U}/preprocessing?PHASE=RUN", data={"MANIFEST": body.replace("ppj-b", "ppj-c")},
                          headers=auth("admin"))
    assert running.status_code == 303
    assert client.get(f"{U}/preprocessing/ppj-c/phase", headers=auth("viewer")).text == "QUEUED"

    listed = strict(StrictJobs, client.get(f"{U}/preprocessing", headers=auth("viewer")).content)
    assert sorted(j.job_id for j in listed.jobref) == ["ppj-a", "ppj-b", "ppj-c"]
    newest = strict(StrictJobs, client.get(f"{U}/preprocessing?LAST=1&phase=PENDING&PHASE=QUEUED",
                                           headers=auth("viewer")).content)
    assert len(newest.jobref) == 1

    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=auth("admin")).status_code == 303
    assert registry.get("PreprocessingJob", "ppj-a").spec["suspend"] is False  # type: ignore[union-attr]
    job, _ = check_job(client, url, StrictPreprocessingJob)
    assert job.phase.value == "QUEUED" and job.start_time is not None
    set_status(local_store, "preprocessingjobs", "ppj-a", {"phase": "Running", "shards": 2, "shardsDone": 1, "processed": 9,
                                                           "jobs": [{"name": "ppj-a-preprocess", "purpose": "preprocess",
                                                                     "state": "Running"}]})
    job, _ = check_job(client, url, StrictPreprocessingJob)
    assert job.phase.value == "EXECUTING" and job.job_info.shardsDone == 1 and job.job_info.processed == 9
    assert client.post(f"{url}/phase", data={"PHASE": "ABORT"}, headers=auth("admin")).status_code == 303
    job, _ = check_job(client, url, StrictPreprocessingJob)
    assert job.phase.value == "ABORTED" and job.end_time is not None
    assert registry.get("PreprocessingJob", "ppj-a").spec["suspend"] is True  # type: ignore[union-attr]

    gone = client.post(url, data={"ACTION": "DELETE"}, headers=auth("admin"))
    assert gone.status_code == 303 and gone.headers["location"] == f"http://testserver{U}/preprocessing"
    assert registry.get("PreprocessingJob", "ppj-a") is None
    assert client.get(url, headers=auth("viewer")).status_code == 404
    assert [k for k, _, name in list_records(LocalStore(local_store)) if name == "ppj-a"] == []
    assert client.delete(f"{U}/preprocessing/ppj-b", headers=auth("admin")).status_code == 303
    assert client.delete(f"{U}/preprocessing/ppj-b", headers=auth("admin")).status_code == 404


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "says"), [
    ("GET", f"{U}/preprocessing?LAST=0", {}, 400, "LAST"),
    ("GET", f"{U}/preprocessing?LAST=x", {}, 400, "LAST"),
    ("GET", f"{U}/preprocessing?AFTER=yesterday", {}, 400, "AFTER"),
    ("GET", f"{U}/preprocessing?PHASE=DONE", {}, 400, "PHASE"),
    ("GET", f"{U}/preprocessing?COLOUR=red", {}, 400, "COLOUR"),
    ("GET", f"{U}/iterations/{EXPERIMENT}/1?WAIT=soon", {}, 400, "WAIT"),
    ("GET", f"{U}/iterations/{EXPERIMENT}/1?WAIT=-2", {}, 400, "WAIT"),
    ("GET", f"{U}/iterations/{EXPERIMENT}/1?WAIT=1&WAIT=2", {}, 400, "WAIT"),
    ("POST", f"{U}/preprocessing", {"data": {"DATASET": "d"}}, 400, "SOURCE"),
    ("POST", f"{U}/preprocessing", {"data": {"SOURCE": "x", "DATASET": "d", "PHASE": "ABORT"}}, 400, "PHASE"),
    ("POST", f"{U}/preprocessing", {"data": {"SOURCE": "x", "DATASET": "d", "NAME": "Not/A/Name"}}, 400, "NAME"),
    ("POST", f"{U}/preprocessing", {"data": {"SOURCE": "x", "DATASET": "d", "MANIFEST": "a: b"}}, 400, "not with a manifest"),
    ("POST", f"{U}/preprocessing", {"data": {"MANIFEST": "kind: ActiveLearningExperiment\n"}}, 400, "MANIFEST"),
    ("POST", f"{U}/preprocessing", {"data": {"MANIFEST": "[unclosed"}}, 400, "MANIFEST"),
    ("POST", f"{U}/preprocessing", {"files": {"MANIFEST": ("m.yaml", b"a: b")}}, 415, "form-encoded"),
    ("POST", f"{U}/iterations/{EXPERIMENT}/1/phase", {"data": {"PHASE": "PAUSE"}}, 400, "PHASE=RUN or PHASE=ABORT"),
    ("POST", f"{U}/iterations/{EXPERIMENT}/1", {"data": {"ACTION": "ARCHIVE"}}, 400, "ACTION=DELETE"),
    ("POST", f"{U}/preprocessing/ghost/phase", {"data": {"PHASE": "RUN"}}, 404, "ghost"),
    ("POST", f"{U}/preprocessing/ghost/destruction", {"data": {"DESTRUCTION": "soon"}}, 400, "DESTRUCTION"),
    # a job that does not exist is 404 before "iterations cannot do that" (409)
    ("POST", f"{U}/iterations/{EXPERIMENT}/7", {"data": {"ACTION": "DELETE"}}, 404, "no iteration 7"),
    ("POST", f"{U}/iterations/ghost/0/destruction", {"data": {"DESTRUCTION": "2030-01-01T00:00:00Z"}}, 404, "ghost"),
])
def test_bad_requests_are_4xx_naming_the_parameter(reader: TestClient, method: str, path: str, kwargs: dict[str, Any],
                                                   status: int, says: str) -> None:
    response = reader.request(method, path, headers=auth("admin"), **kwargs)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


def test_links_behind_an_ingress_path(local_store: Path) -> None:  # noqa: F811
    with TestClient(create_app(settings_for(local_store, root_path="/oraculum/")), follow_redirects=False) as client:
        created = client.post(f"/oraculum{U}/preprocessing", data={"SOURCE": "x", "DATASET": "d", "NAME": "rooted"},
                              headers=auth("admin"))
        assert created.headers["location"] == f"http://testserver/oraculum{U}/preprocessing/rooted"
        listed = strict(StrictJobs, client.get(f"/oraculum{U}/iterations", headers=auth("viewer")).content)
        assert listed.jobref[0].href == f"http://testserver/oraculum{U}/iterations/{EXPERIMENT}/0"
        job = strict(StrictIterationJob, client.get(f"/oraculum{U}/iterations/{EXPERIMENT}/0", headers=auth("viewer")).content)
        assert all(r.href.startswith(f"http://testserver/oraculum{V1}/experiments/") for r in job.results.results)


def test_blocking_get_waits_for_a_phase_change(client: TestClient, local_store: Path) -> None:  # noqa: F811
    assert client.post(f"{U}/preprocessing", data={"SOURCE": "x", "DATASET": "d", "NAME": "slow", "PHASE": "RUN"},
                       headers=auth("admin")).status_code == 303
    url = f"{U}/preprocessing/slow"
    started = time.monotonic()
    other = client.get(f"{url}?WAIT=30&PHASE=EXECUTING", headers=auth("viewer"))  # not in that phase: at once
    assert time.monotonic() - started < 2 and strict(StrictPreprocessingJob, other.content).phase.value == "QUEUED"
    started = time.monotonic()
    timed_out = client.get(f"{url}?WAIT=1", headers=auth("viewer"))
    assert 0.9 <= time.monotonic() - started < 5 and b"QUEUED" in timed_out.content

    def controller() -> None:  # the local runner's part: the Job starts
        time.sleep(0.8)
        set_status(local_store, "preprocessingjobs", "slow", {"phase": "Running", "jobs": [
            {"name": "slow-preprocess", "purpose": "preprocess", "state": "Running"}]})

    thread = threading.Thread(target=controller)
    started = time.monotonic()
    thread.start()
    changed = client.get(f"{url}?wait=20", headers=auth("viewer"))
    thread.join()
    assert time.monotonic() - started < 10 and strict(StrictPreprocessingJob, changed.content).phase.value == "EXECUTING"
    done = client.get(f"{U}/iterations/{EXPERIMENT}/1?WAIT=30", headers=auth("viewer"))  # COMPLETED: no blocking
    assert done.status_code == 200


def test_execution_duration_and_destruction_are_enforced(client: TestClient, local_store: Path) -> None:  # noqa: F811
    assert client.post(f"{U}/preprocessing", data={"SOURCE": "x", "DATASET": "d", "NAME": "limited", "PHASE": "RUN"},
                       headers=auth("admin")).status_code == 303
    url = f"{U}/preprocessing/limited"
    assert client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "-1"}, headers=auth("admin")).status_code == 400
    assert client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "1"}, headers=auth("admin")).status_code == 303
    assert client.get(f"{url}/executionduration", headers=auth("viewer")).text == "1"
    time.sleep(1.3)
    job, parsed = check_job(client, url, StrictPreprocessingJob)
    assert job.phase.value == "ABORTED" and job.error_summary.type.value == "transient"
    assert "executionDuration of 1 s" in job.error_summary.message and parsed.errorsummary.has_detail is False
    assert "executionDuration" in client.get(f"{url}/error", headers=auth("viewer")).text
    registry = LocalRegistry(LocalStore(local_store))
    assert registry.get("PreprocessingJob", "limited").spec["suspend"] is True  # type: ignore[union-attr]
    assert client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "60"}, headers=auth("admin")).status_code == 409

    bad = client.post(f"{url}/destruction", data={"DESTRUCTION": "next week"}, headers=auth("admin"))
    assert bad.status_code == 400 and "DESTRUCTION" in bad.json()["detail"]
    later = "2099-06-30T12:00:00.000Z"
    assert client.post(f"{url}/destruction", data={"DESTRUCTION": later}, headers=auth("admin")).status_code == 303
    assert client.get(f"{url}/destruction", headers=auth("viewer")).text == later
    soon = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert client.post(f"{url}/destruction", data={"DESTRUCTION": soon}, headers=auth("admin")).status_code == 303
    time.sleep(1.2)
    assert client.get(url, headers=auth("viewer")).status_code == 404  # destroyed when next looked at
    assert registry.get("PreprocessingJob", "limited") is None


@pytest.mark.asyncio
async def test_the_sweeper_enforces_limits_and_drops_orphan_records(local_store: Path) -> None:  # noqa: F811
    from oraculum.api.uws_service import ORPHAN_GRACE, sweep

    app = create_app(settings_for(local_store))
    async with client_for(app) as client:
        for name in ("doomed", "kept"):
            assert (await client.post(f"{U}/preprocessing", data={"SOURCE": "x", "DATASET": "d", "NAME": name},
                                      headers=auth("admin"))).status_code == 303
        store = LocalStore(local_store)
        registry = LocalRegistry(store)
        doomed = registry.get("PreprocessingJob", "doomed")
        assert doomed is not None
        record = read_record(store, "preprocessing", "doomed", doomed.uid)
        write_record(store, record.model_copy(update={"destruction": datetime(2020, 1, 1, tzinfo=UTC)}))
        # a record whose resource was deleted outside UWS (the JSON API)
        assert (await client.delete(f"{V1}/preprocessingjobs/kept", headers=auth("admin"))).status_code == 204
        state = app.state.oraculum
        assert await sweep(state) == 1  # destroyed; the orphan is young: kept for now
        assert registry.get("PreprocessingJob", "doomed") is None
        assert [name for _, _, name in list_records(store)] == ["kept"]
        assert await sweep(state, now=datetime.now(UTC) + ORPHAN_GRACE + timedelta(seconds=1)) == 1
        assert list(list_records(store)) == []


# --------------------------------------------------------------------------------------------
# Over HTTP with independent clients: pyvo's UWS job client, requests, the local runner
# --------------------------------------------------------------------------------------------


def test_a_whole_lifecycle_over_http_with_pyvo(tmp_path: Path) -> None:
    import requests
    from pyvo.dal import DALServiceError
    from pyvo.dal.tap import AsyncTAPJob

    store = tmp_path / "store"
    store.mkdir()
    api = ApiProcess({"ORACULUM_STORE": str(store), "ORACULUM_API_TOKENS": TOKEN_LIST, "ORACULUM_API_BACKEND": "local",
                      "ORACULUM_API_RUN_JOBS": "1", "ORACULUM_REDIS_URL": "", "ORACULUM_ROOT_PATH": "",
                      "ORACULUM_CACHE_DIR": str(tmp_path / "cache")}, tmp_path / "api.log")
    try:
        api.start()
        session = requests.Session()
        session.headers.update(auth("admin"))
        created = session.post(f"{api.url}{U}/preprocessing", data={
            "SOURCE": "synthetic:12?seed=5", "DATASET": "tiny", "RUNID": "pyvo-run"})  # follows the 303 with a GET
        assert created.status_code == 200 and created.history[0].status_code == 303, created.text
        job = AsyncTAPJob(created.url, session=session, delete=False)
        assert job.job_id.startswith("tiny-") and job.phase == "PENDING" and job.owner == "ada"
        job.execution_duration = 600
        assert job.execution_duration.to_value("s") == 600
        job.destruction = datetime(2099, 1, 31, 12, 0, tzinfo=UTC)
        assert job.destruction.isot.startswith("2099-01-31T12:00:00")

        job.run()
        job.wait(timeout=180)  # long polls with WAIT=-1 until COMPLETED
        assert job.phase == "COMPLETED", api.log.read_text()[-3000:]
        job.raise_if_error()
        hrefs = {r.id_: r.href for r in job.results}
        assert set(hrefs) == {"index", "rejected"}
        index = session.get(hrefs["index"])
        assert index.status_code == 200 and index.json()["name"] == "tiny"
        count = index.json()["index"]["count"]
        rejected = session.get(hrefs["rejected"]).json()
        assert count + rejected["total"] == 12 and count > 0
        final = pyvo_job(session.get(job.url).content)
        assert final.starttime is not None and final.endtime is not None and final.endtime >= final.starttime

        # a second job aborted while it waits, then deleted the UWS way (DELETE -> 303 to the list)
        second = session.post(f"{api.url}{U}/preprocessing", data={"SOURCE": "synthetic:12?seed=6", "DATASET": "tiny2"})
        other = AsyncTAPJob(second.url, session=session, delete=True)
        other.abort()
        assert other.phase == "ABORTED"
        with pytest.raises(DALServiceError, match="not active"):
            other.wait(timeout=5)
        with other:
            pass  # leaving the context deletes the job
        assert session.get(second.url).status_code == 404
        listed = pyvo_jobs(session.get(f"{api.url}{U}/preprocessing").content)
        assert [(j.jobid, j.phase, j.runid) for j in listed] == [(job.job_id, "COMPLETED", "pyvo-run")]
        job.delete()
        assert session.get(f"{api.url}{U}/preprocessing/{job.job_id}").status_code == 404
        assert requests.get(f"{api.url}{U}/preprocessing").status_code == 401  # the API's own authentication
    finally:
        api.stop()


# --------------------------------------------------------------------------------------------
# The Kubernetes backend (emulated API server)
# --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_uws_on_the_kubernetes_backend(tmp_path: Path) -> None:
    from tests.support.operator_harness import ALE, NS, PPJ, cluster, load_rbac, ungranted
    from tests.api.test_api_kubernetes import RBAC, api_requests, app_on

    store = tmp_path / "data"
    store.mkdir()
    async with cluster(tmp_path) as c, client_for(app_on(c, store)) as client:
        created = await client.post(f"{U}/preprocessing", data={"SOURCE": "s3://archive/dr2", "DATASET": "dr2",
                                                                "NAME": "dr2-ppj"}, headers=auth("admin"))
        assert created.status_code == 303, created.text
        body = c.get(PPJ, "dr2-ppj")
        assert body["spec"]["suspend"] is True and body["spec"]["source"]["url"] == "s3://archive/dr2"
        url = f"{U}/preprocessing/dr2-ppj"

        async def job() -> Any:
            response = await client.get(url, headers=auth("viewer"))
            assert response.status_code == 200, response.text
            pyvo_job(response.content)
            return strict(StrictPreprocessingJob, response.content)

        assert (await job()).phase.value == "PENDING"
        assert (await client.post(f"{url}/phase", data={"PHASE": "RUN"}, headers=auth("admin"))).status_code == 303
        assert c.get(PPJ, "dr2-ppj")["spec"]["suspend"] is False and (await job()).phase.value == "QUEUED"
        c.api.set_status(PPJ, NS, "dr2-ppj", {"phase": "Running", "shards": 1, "jobs": [
            {"name": "dr2-ppj-preprocess", "purpose": "preprocess", "state": "Running"}]})
        assert (await job()).phase.value == "EXECUTING"
        c.api.set_status(PPJ, NS, "dr2-ppj", {"phase": "Succeeded", "shards": 1, "shardsDone": 1, "processed": 5,
                                              "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed",
                                                              "message": "", "lastTransitionTime": "2026-03-01T09:30:00Z"}]})
        finished = await job()
        assert finished.phase.value == "COMPLETED" and finished.end_time == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        assert finished.job_info.namespace == NS and finished.owner_id == "ada"

        # an experiment's iterations: ABORT and RUN patch spec.suspend of the custom resource
        assert (await client.post(f"{V1}/experiments", json=manifest(), headers=auth("admin"))).status_code == 201
        c.api.set_status(ALE, NS, EXPERIMENT, {"phase": "Training", "iteration": 0, "jobs": [
            {"name": "exp-iterate-0", "purpose": "iterate", "iteration": 0, "state": "Running"}]})
        iteration = f"{U}/iterations/{EXPERIMENT}/0"
        response = await client.get(iteration, headers=auth("viewer"))
        assert strict(StrictIterationJob, response.content).phase.value == "EXECUTING"
        assert (await client.post(f"{iteration}/phase", data={"PHASE": "ABORT"}, headers=auth("admin"))).status_code == 303
        assert c.get(ALE, EXPERIMENT)["spec"]["suspend"] is True
        assert (await client.get(f"{iteration}/phase", headers=auth("viewer"))).text == "ABORTED"
        assert (await client.post(f"{iteration}/phase", data={"PHASE": "RUN"}, headers=auth("admin"))).status_code == 303
        assert c.get(ALE, EXPERIMENT)["spec"]["suspend"] is False

        # DELETE follows the standard: 303 to the job list, which no longer has the job
        deleted = await client.delete(url, headers=auth("admin"), follow_redirects=True)
        assert deleted.status_code == 200 and str(deleted.url).endswith(f"{U}/preprocessing")
        assert strict(StrictJobs, deleted.content).jobref == [] and c.api.get(PPJ, NS, "dr2-ppj") is None
        missing = ungranted(api_requests(c.api), load_rbac(RBAC))
        assert not missing, f"the UWS facade used verbs api/rbac.yaml does not grant: {missing}"


@pytest.mark.asyncio
async def test_kubernetes_backend_errors_are_answered(tmp_path: Path) -> None:
    from tests.support.operator_harness import cluster
    from tests.api.test_api_kubernetes import app_on

    store = tmp_path / "data"
    store.mkdir()
    async with cluster(tmp_path) as c, client_for(app_on(c, store)) as client:
        c.api.inject("POST", "preprocessingjobs", 503, times=1)
        answer = await client.post(f"{U}/preprocessing", data={"SOURCE": "x", "DATASET": "d"}, headers=auth("admin"))
        assert answer.status_code == 502 and "Kubernetes API" in answer.json()["detail"]
        # (the emulator stored the object anyway, like an API server whose answer was lost)
        assert (await client.get(f"{U}/preprocessing", headers=auth("viewer"))).status_code == 200
