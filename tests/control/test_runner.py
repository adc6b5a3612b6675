"""``oraculum run``: the local Job controller, and whole experiments on this machine.

The end-to-end tests run the real CLI on the real simulated example (synthetic spectra, the tiny
network, TensorFlow on the CPU): one run of about a minute and a half on 2 cores, shared by the
tests that need a trained pool. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from oraculum.control.jobs import CONTAINER
from oraculum.control.observe import submit_labels
from oraculum.control.runner import LocalJobs, LocalRunner, load_all
from oraculum.settings import Settings
from oraculum.store import LocalStore

ROOT = Path(__file__).resolve().parents[2]
SIMULATED = ROOT / "examples" / "experiment-simulated.yaml"


def job(name: str, code: str, **spec: Any) -> dict[str, Any]:
    """A Job dict whose pod runs a Python snippet."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"oraculum.dev/experiment": "t"}},
        "spec": {"backoffLimit": 2, **spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": CONTAINER, "command": [sys.executable, "-c", code], "args": []}]}}},
    }


def drive(jobs: LocalJobs, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs.step()
        if all(j.complete or j.failed_reason for j in jobs.jobs.values()):
            return
        time.sleep(0.05)
    raise AssertionError("jobs did not finish")


@pytest.fixture()
def local_jobs(tmp_path: Path) -> LocalJobs:
    jobs = LocalJobs(Settings(store=str(tmp_path / "store")), tmp_path / "logs", max_parallel=4)
    yield jobs
    jobs.stop()


def test_local_jobs_retry_until_success_and_create_is_idempotent(local_jobs: LocalJobs, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    code = f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); t=p.exists(); p.touch(); sys.exit(0 if t else 1)"
    assert local_jobs.create(job("retry", code)) is True
    assert local_jobs.create(job("retry", code)) is False  # the API's 409
    drive(local_jobs)
    observed = local_jobs.observe("oraculum.dev/experiment", "t")["retry"]
    assert observed.complete and observed.failed == 1 and observed.failed_reason is None


def test_local_jobs_fail_past_the_backoff_limit_and_fast_on_usage_errors(local_jobs: LocalJobs) -> None:
    local_jobs.create(job("always", "import sys; sys.exit(1)", backoffLimit=1))
    local_jobs.create(job("usage", "import sys; sys.exit(2)", backoffLimit=5, podFailurePolicy={"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [2]}}]}))
    drive(local_jobs)
    observed = local_jobs.observe("oraculum.dev/experiment", "t")
    assert observed["always"].failed_reason == "BackoffLimitExceeded" and observed["always"].failed == 2
    assert observed["usage"].failed_reason == "PodFailurePolicy" and observed["usage"].failed == 1


def test_local_indexed_job_expands_the_completion_index(local_jobs: LocalJobs, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    out.mkdir()
    manifest = job("indexed", "import sys,pathlib; pathlib.Path(sys.argv[1], sys.argv[2]).touch()",
                   completionMode="Indexed", completions=3, parallelism=2, backoffLimitPerIndex=0)
    manifest["spec"]["template"]["spec"]["containers"][0]["args"] = [str(out), "shard-$(JOB_COMPLETION_INDEX)"]
    local_jobs.create(manifest)
    drive(local_jobs)
    assert sorted(p.name for p in out.iterdir()) == ["shard-0", "shard-1", "shard-2"]
    failing = job("per-index", "import os,sys; sys.exit(1 if os.environ['JOB_COMPLETION_INDEX']=='1' else 0)",
                  completionMode="Indexed", completions=2, backoffLimitPerIndex=0)
    local_jobs.create(failing)
    drive(local_jobs)
    assert local_jobs.observe("oraculum.dev/experiment", "t")["per-index"].failed_reason == "FailedIndexes"


def test_local_jobs_deadline_and_suspend(local_jobs: LocalJobs) -> None:
    local_jobs.create(job("slow", "import time; time.sleep(30)", activeDeadlineSeconds=1))
    drive(local_jobs, 15)
    assert local_jobs.observe("oraculum.dev/experiment", "t")["slow"].failed_reason == "DeadlineExceeded"
    local_jobs.create(job("paused", "import time; time.sleep(0.3)"))
    local_jobs.step()
    assert local_jobs.jobs["paused"].running
    local_jobs.set_suspended("paused", True)
    assert not local_jobs.jobs["paused"].running and local_jobs.observe("oraculum.dev/experiment", "t")["paused"].suspended
    local_jobs.step()
    assert not local_jobs.jobs["paused"].running  # a suspended Job starts no pod
    local_jobs.set_suspended("paused", False)
    drive(local_jobs)
    assert local_jobs.jobs["paused"].complete


def test_configmap_volumes_are_mounted_by_path(local_jobs: LocalJobs, tmp_path: Path) -> None:
    out = tmp_path / "copy.txt"
    local_jobs.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"m.yaml": "hello"}})
    manifest = job("reader", "import sys,shutil; shutil.copy(sys.argv[1], sys.argv[2])")
    pod = manifest["spec"]["template"]["spec"]
    pod["containers"][0]["args"] = ["/etc/oraculum/m.yaml", str(out)]
    pod["containers"][0]["volumeMounts"] = [{"name": "manifest", "mountPath": "/etc/oraculum"}]
    pod["volumes"] = [{"name": "manifest", "configMap": {"name": "cm"}}]
    local_jobs.create(manifest)
    drive(local_jobs)
    assert out.read_text() == "hello"


def test_run_refuses_an_object_store_url(tmp_path: Path) -> None:
    from oraculum.store import S3Store

    store = S3Store.__new__(S3Store)  # never connects: refused before any request
    store.url = "s3://bucket"
    with pytest.raises(ValueError, match="local folder"):
        LocalRunner(store, Settings())


# --- whole experiments -------------------------------------------------------------------------


def oraculum(store: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORACULUM_STORE": str(store)}
    return subprocess.run([sys.executable, "-m", "oraculum.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=store.parent)


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    """`oraculum run examples/experiment-simulated.yaml` on a fresh store, once for the module."""
    store = tmp_path_factory.mktemp("simulated") / "store"
    started = time.monotonic()
    result = oraculum(store, "run", str(SIMULATED))
    return store, result, time.monotonic() - started


@pytest.mark.slow
def test_oraculum_run_completes_the_simulated_example(simulated_run: tuple[Path, Any, float]) -> None:
    store, result, seconds = simulated_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "ppj/synthetic-pool: Succeeded" in out and "ale/simulated-emission: Succeeded" in out
    assert "MaxIterations" in out
    status = json.loads((store / "local/activelearningexperiments/simulated-emission/status.json").read_text())["status"]
    assert status["phase"] == "Succeeded" and [h["iteration"] for h in status["history"]] == [0, 1, 2]
    assert status["history"][-1]["labels"] > status["history"][0]["labels"] > 0
    for k in range(3):
        assert (store / f"experiments/simulated-emission/iterations/{k}/metrics.json").is_file()
    assert (store / "archive/synthetic-3000-s0/labels.csv").is_file()
    assert seconds < 300, f"the example took {seconds:.0f} s"
    # run again: everything is found done in the store; no Job runs again
    again = oraculum(store, "run", str(SIMULATED), timeout=120)
    assert again.returncode == 0 and "JobCreated" not in again.stdout, again.stdout


@pytest.mark.slow
def test_human_oracle_waits_for_the_submit_signal(simulated_run: tuple[Path, Any, float], tmp_path: Path) -> None:
    store_path, result, _ = simulated_run
    assert result.returncode == 0
    manifest = tmp_path / "human.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment", "metadata": {"name": "by-hand"},
        "spec": {"dataset": "synthetic-pool", "classes": [{"name": "absorption"}, {"name": "emission", "target": True},
                                                          {"name": "double-peak", "target": True}],
                 "model": {"preset": "tiny"}, "acquisition": {"batchSize": 12}, "stopping": {"maxIterations": 1},
                 "oracle": {"type": "human"}},
    }))
    store = LocalStore(store_path)
    lines: list[str] = []
    runner = LocalRunner(store, Settings(store=str(store_path)), echo=lines.append, poll_seconds=0.1)
    first = runner.run(load_all([manifest]), timeout=240, exit_when_waiting=True)
    assert first.phases == {"ale/by-hand": "AwaitingLabels"}, lines
    assert first.statuses["ale/by-hand"]["batch"] == {"size": 12, "labelled": 0}
    # the oracle labels the batch (here from the synthetic truth, as the API would store them)
    from oraculum.manifests import load_manifests
    from oraculum.learning.oracle import SimulatedOracle

    spec = load_manifests(manifest)[0].spec
    SimulatedOracle.from_spec(spec, store, labels="archive/synthetic-3000-s0/labels.csv").answer(store, "by-hand", 0)
    waiting = LocalRunner(store, Settings(store=str(store_path)), echo=lines.append, poll_seconds=0.1).run(
        load_all([manifest]), timeout=60, exit_when_waiting=True)
    assert waiting.phases == {"ale/by-hand": "AwaitingLabels"}
    assert "waiting for the oracle to submit" in waiting.statuses["ale/by-hand"]["message"]
    submit_labels(store, "by-hand", 0, who="test")
    done = LocalRunner(store, Settings(store=str(store_path)), echo=lines.append, poll_seconds=0.1).run(
        load_all([manifest]), timeout=120)
    assert done.phases == {"ale/by-hand": "Succeeded"}, lines[-10:]
    assert done.statuses["ale/by-hand"]["history"][0]["labels"] == 12
