"""Running Jobs report their progress to the API (oraculum.progress), end to end.

Real parts: the API is ``oraculum serve api`` (uvicorn subprocess, local backend, in-process live
state); the Jobs are real ``oraculum preprocess`` subprocesses started by the local runner from the
Job dicts of :mod:`oraculum.control.jobs`, so the variables and the token's ``secretKeyRef`` are the ones a
pod gets. The one stand-in is a small ``http.server`` that answers 500 or records requests: the real
API cannot be made to fail on demand, and the throttling test needs to count requests. It says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.api_fixtures import NAMES, ROOT, TOKEN_LIST, TOKENS, ApiProcess, auth, free_port
from tests.support.api_world import EXPERIMENT, manifest, ppj_manifest
from oraculum.control.jobs import JobConfig, preprocess_job
from oraculum.manifests import parse_manifest
from oraculum.progress import ENV_API_URL, ENV_JOB, ENV_KIND, ENV_NAME, ENV_TOKEN, ProgressReporter, ProgressTarget
from oraculum.control.runner import LocalJobs
from oraculum.settings import Settings
from tests.control.test_runner import drive

V1 = "/api/v1"


def api_env(store: Path, **extra: str) -> dict[str, str]:
    return {"ORACULUM_STORE": str(store), "ORACULUM_API_TOKENS": TOKEN_LIST, "ORACULUM_API_BACKEND": "local",
            "ORACULUM_REDIS_URL": "", ENV_API_URL: "", **extra}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The real API with a configured worker token (TOKENS['worker'], named NAMES['worker'])."""
    root = tmp_path_factory.mktemp("progress-api")
    server = ApiProcess(api_env(root / "store"), root / "api.log").start()
    try:
        yield server
    finally:
        server.stop()


def progress_of(api_url: str, collection: str, name: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{api_url}{V1}/{collection}/{name}", headers=auth("viewer"), timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["progress"])


# --- a real Job, a real API ----------------------------------------------------------------------


def test_preprocessing_pods_report_each_shard_until_done(api: ApiProcess, tmp_path: Path) -> None:
    document = ppj_manifest(name="progress-job", dataset="progress", count=90)
    document["spec"]["shards"] = 2
    created = httpx.post(f"{api.url}{V1}/preprocessingjobs", json=document, headers=auth("admin"), timeout=30)
    assert created.status_code == 201, created.text
    assert progress_of(api.url, "preprocessingjobs", "progress-job") == []

    config = JobConfig(api_url=api.url, progress_secret="oraculum-worker-token")
    job = preprocess_job("progress-job", None, "uid-1", parse_manifest(document).spec, config)  # type: ignore[arg-type]
    store = tmp_path / "job-store"
    jobs = LocalJobs(Settings(store=str(store)), tmp_path / "logs", max_parallel=1,
                     secrets={"oraculum-worker-token": {"token": TOKENS["worker"]}})
    try:
        assert jobs.create(job)
        drive(jobs, seconds=180)
    finally:
        jobs.stop()
    logs = "\n".join(path.read_text() for path in sorted((tmp_path / "logs").glob("*.log")))
    assert all(j.complete for j in jobs.jobs.values()), logs
    assert "progress report" not in logs  # nothing went wrong on the way

    reports = {r["job"]: r for r in progress_of(api.url, "preprocessingjobs", "progress-job")}
    assert set(reports) == {"progress-job-preprocess-0", "progress-job-preprocess-1"}  # one line per shard
    for report in reports.values():
        assert report["step"] == "preprocess" and report["reporter"] == NAMES["worker"]
        assert report["total"] > 0 and report["done"] == report["total"] and report["fraction"] == 1.0
        assert "spectra stored" in report["message"]
    assert sum(r["total"] for r in reports.values()) == 90  # every synthetic FITS file, split in two
    assert "index written" in reports["progress-job-preprocess-1"]["message"]  # the last shard writes the index


def test_an_iteration_job_reports_to_the_end(api: ApiProcess, world: Path, tmp_path: Path) -> None:  # noqa: F811
    """``oraculum iterate`` (train the tiny CNN, score the pool, choose) with a Job's variables; the
    stages on the way are checked in tests/learning/test_iteration.py, the wiring and the last report here."""
    created = httpx.post(f"{api.url}{V1}/experiments", json=manifest(), headers=auth("admin"), timeout=30)
    assert created.status_code == 201, created.text
    store = tmp_path / "store"
    shutil.copytree(world, store)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    env = {**os.environ, "ORACULUM_STORE": str(store), ENV_API_URL: api.url, ENV_TOKEN: TOKENS["worker"],
           ENV_KIND: "ActiveLearningExperiment", ENV_NAME: EXPERIMENT, ENV_JOB: f"{EXPERIMENT}-iter-1"}
    result = subprocess.run([sys.executable, "-m", "oraculum.cli.main", "--no-progress", "iterate", str(path), "-k", "1"],
                            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "progress report" not in result.stderr
    (report,) = progress_of(api.url, "experiments", EXPERIMENT)
    assert report["job"] == f"{EXPERIMENT}-iter-1" and report["reporter"] == NAMES["worker"]
    assert report["step"] == "finished" and report["fraction"] == 1.0
    assert report["message"] == "iteration 1: 12 spectra for the oracle, 6 for the estimate"


def test_a_token_the_api_refuses_stops_the_reports_not_the_work(api: ApiProcess, caplog: pytest.LogCaptureFixture) -> None:
    httpx.post(f"{api.url}{V1}/preprocessingjobs", json=ppj_manifest(name="refused"), headers=auth("admin"), timeout=30)
    for token, status in (("not-a-known-token-0123456789", "401"), (TOKENS["oracle"], "403")):
        target = ProgressTarget(api.url, token, "PreprocessingJob", "refused", "refused-preprocess-0")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="oraculum.progress"), \
                ProgressReporter(target, interval=0.05) as reporter:
            for done in range(50):
                reporter.update(done, 49, stage="preprocess", unit="files")
                time.sleep(0.01)
        assert not reporter.enabled and reporter.sent == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and status in warnings[0] and ENV_TOKEN in warnings[0], warnings
    assert progress_of(api.url, "preprocessingjobs", "refused") == []


def test_an_unknown_resource_is_a_404_and_stops_the_reports(api: ApiProcess) -> None:
    target = ProgressTarget(api.url, TOKENS["worker"], "ActiveLearningExperiment", "no-such-experiment", "x-iter-0")
    with ProgressReporter(target) as reporter:
        reporter.update(1, 2, stage="train")
    assert not reporter.enabled and reporter.sent == 0


# --- the work completes whatever the API does ------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Stand-in for the API (see the module docstring): answers ``server.status``, records bodies."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((self.path, self.headers.get("Authorization"), json.loads(body)))  # type: ignore[attr-defined]
        self.server.times.append(time.monotonic())  # type: ignore[attr-defined]
        status = self.server.status  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"detail": "stand-in answer"} if status >= 400 else {}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stand_in() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests = []  # type: ignore[attr-defined]
    server.times = []  # type: ignore[attr-defined]
    server.status = 202  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def preprocess_with(env: dict[str, str], store: Path) -> subprocess.CompletedProcess[str]:
    """``oraculum preprocess`` as a Job runs it, with these progress variables."""
    full = {**os.environ, "ORACULUM_STORE": str(store), ENV_KIND: "PreprocessingJob", ENV_NAME: "ppj",
            ENV_JOB: "ppj-preprocess-0", **env}
    return subprocess.run([sys.executable, "-m", "oraculum.cli.main", "--no-progress", "preprocess", "synthetic:40?seed=3",
                           "--dataset", "d", "--workers", "1"], env=full, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("api_state", ["down", "500"])
def test_the_work_completes_when_the_api_is_down_or_failing(api_state: str, stand_in: ThreadingHTTPServer,
                                                            tmp_path: Path) -> None:
    if api_state == "down":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        stand_in.status = 500  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    started = time.monotonic()
    result = preprocess_with({ENV_API_URL: url, ENV_TOKEN: TOKENS["worker"]}, tmp_path / "store")
    assert result.returncode == 0, result.stderr
    assert "index written" in result.stdout, result.stdout
    warnings = [line for line in result.stderr.splitlines() if "progress report" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], result.stderr  # said once, not per report
    assert ("cannot reach it" if api_state == "down" else "answered 500") in warnings[0]
    if api_state == "500":  # it kept trying (first and last report at least), never gave up on a 5xx
        assert len(stand_in.requests) >= 2  # type: ignore[attr-defined]
    assert time.monotonic() - started < 120


def test_unconfigured_reporting_does_nothing(stand_in: ThreadingHTTPServer, tmp_path: Path) -> None:
    reporter = ProgressReporter.from_env({ENV_API_URL: f"http://127.0.0.1:{stand_in.server_address[1]}"})
    assert not reporter.enabled
    with reporter:
        reporter.update(1, 2, stage="score")
    assert reporter._thread is None and stand_in.requests == []  # type: ignore[attr-defined]
    # the CLI by hand, with only the URL set (e.g. a shell that also runs the dashboard): no request
    result = preprocess_with({ENV_API_URL: f"http://127.0.0.1:{stand_in.server_address[1]}", ENV_TOKEN: ""},
                             tmp_path / "store")
    assert result.returncode == 0 and stand_in.requests == [], result.stderr  # type: ignore[attr-defined]


def test_reports_are_throttled_first_and_last_sent_at_once(stand_in: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    target = ProgressTarget(url, "t" * 20, "ActiveLearningExperiment", "exp", "exp-iter-3")
    with ProgressReporter(target, interval=0.5) as reporter:
        started = time.monotonic()
        done = 0
        while time.monotonic() - started < 1.3:  # ~1.3 s of a tight loop
            done += 1
            reporter.update(done, 10**6, stage="score", unit="spectra")
    requests = stand_in.requests  # type: ignore[attr-defined]
    assert 2 <= len(requests) <= 5, len(requests)  # first at once, then at most one per 0.5 s, then the last
    assert done > 1000  # update() never waited for the network
    path, authorization, first = requests[0]
    assert path == "/api/v1/experiments/exp/progress" and authorization == "Bearer " + "t" * 20
    assert first["job"] == "exp-iter-3" and first["step"] == "score" and first["done"] >= 1
    assert stand_in.times[0] - started < 0.4  # type: ignore[attr-defined]  # the first one without waiting
    last = requests[-1][2]
    assert last["done"] == done and last["total"] == 10**6 and last["message"] == f"{done:,} / 1,000,000 spectra"
    assert set(last) <= {"job", "step", "done", "total", "message"}  # what ProgressIn accepts, nothing else


def test_a_failure_is_the_last_report(stand_in: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    target = ProgressTarget(url, "t" * 20, "PreprocessingJob", "ppj", "ppj-preprocess-1")
    with pytest.raises(RuntimeError), ProgressReporter(target) as reporter:
        reporter.update(3, 10, stage="preprocess", unit="files")
        raise RuntimeError("the store went away")
    last = stand_in.requests[-1][2]  # type: ignore[attr-defined]
    assert last["message"] == "failed: the store went away" and last["done"] == 3


def test_bad_variables_mean_no_reports_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    base = {ENV_API_URL: "http://api:8000", ENV_TOKEN: "t" * 20, ENV_KIND: "PreprocessingJob", ENV_NAME: "p"}
    assert ProgressTarget.from_env(base) == ProgressTarget("http://api:8000", "t" * 20, "PreprocessingJob", "p", "p")
    with caplog.at_level(logging.WARNING, logger="oraculum.progress"):
        assert ProgressTarget.from_env({**base, ENV_KIND: "Deployment"}) is None
        assert ProgressTarget.from_env({**base, ENV_API_URL: "api:8000"}) is None
    assert "ORACULUM_PROGRESS_KIND='Deployment'" in caplog.text and "http://" in caplog.text


# --- the embedded demo: the API's own runner -------------------------------------------------------


def test_jobs_of_the_api_s_own_runner_report_to_it(tmp_path: Path) -> None:
    """``serve api --run-jobs``: the runner hands its Jobs the API's address and a worker token of
    its own, so one machine shows progress the way a cluster does."""
    server = ApiProcess(api_env(tmp_path / "store", ORACULUM_API_RUN_JOBS="true"), tmp_path / "api.log").start()
    try:
        document = ppj_manifest(name="embedded", dataset="embedded", count=30)
        created = httpx.post(f"{server.url}{V1}/preprocessingjobs", json=document, headers=auth("admin"), timeout=30)
        assert created.status_code == 201, created.text
        phase = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            detail = httpx.get(f"{server.url}{V1}/preprocessingjobs/embedded", headers=auth("viewer"), timeout=10).json()
            phase = detail["phase"]
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        assert phase == "Succeeded", (tmp_path / "api.log").read_text()[-3000:]
        reports = detail["progress"]
        assert [r["job"] for r in reports] == ["embedded-preprocess-0"]
        assert reports[0]["reporter"] == "local-runner" and reports[0]["done"] == reports[0]["total"] == 30
    finally:
        server.stop()


def test_the_operator_hands_its_api_url_to_jobs_when_the_job_settings_name_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from oraculum.operator.main import job_config

    monkeypatch.delenv("ORACULUM_JOB_API_URL", raising=False)
    monkeypatch.delenv("ORACULUM_API_URL", raising=False)
    settings = Settings(api_url="http://oraculum-api.astro.svc:8000")
    assert job_config(settings).api_url == "http://oraculum-api.astro.svc:8000"
    explicit = JobConfig(api_url="http://elsewhere:8000")
    assert job_config(settings, explicit).api_url == "http://elsewhere:8000"  # ORACULUM_JOB_API_URL wins
    assert job_config(Settings()).api_url is None  # nothing configured: Jobs do not report
