"""The whole path through the public interfaces only, twice: once against the local runner
(``oraculum serve api --run-jobs`` as a subprocess), once against the real kopf operator on the
emulated Kubernetes API server (tests/support/k8s_emulator.py) with the API's Kubernetes backend.

manifests (the demo's own, pointed at a folder of FITS files made by ``oraculum synth``) applied
through the API as YAML -> the PreprocessingJob's Jobs preprocess them -> iteration 0 -> every
label PUT through the API exactly as the dashboard's labelling page sends it -> submit ->
iteration 1 -> its candidates downloaded as CSV and VOTable and read with astropy -> labelled and
submitted -> the experiment Succeeded -> metrics and the learning curve downloaded.

On the emulated cluster nothing runs pods, so :class:`ProcessKubelet` stands in for the Job
controller and the kubelet: it runs each Job's container command for real, as a subprocess
(through :class:`oraculum.control.runner.LocalJobs`, the local runner's own Job controller), and writes the
Job's status back as the Job controller would. So the operator's Jobs do the real work (TensorFlow
included), but their scheduling is the harness's. Every figure here comes from synthetic data.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from astropy.io import ascii as astropy_ascii
from astropy.io.votable import parse_single_table
from click.testing import CliRunner

from tests.support.api_fixtures import auth, client_for, settings_for
from tests.support.dashboard_harness import start_api
from oraculum.api.app import create_app
from oraculum.api.backend import KubernetesBackend
from oraculum.cli.main import main
from oraculum.demo.manifests import DemoPlan, load_plan
from oraculum.learning.labels import read_label_csv
from oraculum.learning.oracle import SimulatedOracle
from oraculum.progress import COLLECTIONS
from oraculum.control.local_jobs import LocalJobs, _LocalJob
from oraculum.settings import Settings
from tests.support.operator_harness import NS, cluster

pytestmark = pytest.mark.asyncio

V1 = "/api/v1"
COUNT = 300
JOBS = ("batch", "v1", "jobs")
CONFIGMAPS = ("", "v1", "configmaps")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of synthetic LAMOST-format FITS files with labels.csv, made by the CLI."""
    folder = tmp_path_factory.mktemp("archive") / "fits"
    # targets less rare than in the demo's pool, so that 40 random labels teach even a small pool
    result = CliRunner().invoke(main, ["synth", str(folder), "--count", str(COUNT), "--seed", "7",
                                       "--fraction", "emission=0.15", "--fraction", "double-peak=0.1"])
    assert result.exit_code == 0, result.output
    return folder


def plan_for(archive: Path) -> DemoPlan:
    """The demo's manifests on the archive, two iterations, a few epochs (test time)."""
    plan = load_plan(source=archive, iterations=2)
    plan.experiment["spec"]["model"]["epochs"] = 4
    return plan


class Oracle:
    """The person at the dashboard, who happens to know the true classes (labels.csv)."""

    def __init__(self, archive: Path, plan: DemoPlan) -> None:
        truth = read_label_csv((archive / "labels.csv").read_bytes(), "labels.csv")
        self.answers = SimulatedOracle(truth, [c["name"] for c in plan.classes])
        self.targets = {c["name"] for c in plan.classes if c.get("target")}

    def label(self, spectrum_id: str) -> str:
        return self.answers.label_of(spectrum_id)


async def wait_for(client: httpx.AsyncClient, plural: str, name: str, done: Callable[[dict[str, Any]], bool],
                   what: str, timeout: float = 300.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get(f"{V1}/{plural}/{name}", headers=auth("viewer"))
        assert response.status_code == 200, response.text
        detail = response.json()
        if done(detail):
            return detail
        assert detail["phase"] != "Failed", f"{plural}/{name} failed: {detail['message']}"
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {plural}/{name} is {detail['phase']}: {detail['message']}")
        await asyncio.sleep(0.5)


async def label_and_submit(client: httpx.AsyncClient, oracle: Oracle, experiment: str, iteration: int) -> list[dict[str, Any]]:
    batch = (await client.get(f"{V1}/experiments/{experiment}/batch", headers=auth("viewer"))).json()
    assert batch["iteration"] == iteration and batch["size"] == len(batch["items"]) > 0
    early = await client.post(f"{V1}/experiments/{experiment}/iterations/{iteration}/submit", headers=auth("oracle"))
    assert early.status_code == 409 and early.json()["detail"]["labelled"] == 0
    for item in batch["items"]:  # one PUT per key press, the body the labelling page sends
        saved = await client.put(f"{V1}/experiments/{experiment}/iterations/{iteration}/labels/{item['index']}",
                                 json={"label": oracle.label(item["id"]), "comment": None}, headers=auth("oracle"))
        assert saved.status_code == 201, saved.text
    progress = (await client.get(f"{V1}/experiments/{experiment}/iterations/{iteration}/progress",
                                 headers=auth("viewer"))).json()
    assert progress["complete"] and progress["labelled"] == batch["size"]
    submitted = await client.post(f"{V1}/experiments/{experiment}/iterations/{iteration}/submit", headers=auth("oracle"))
    assert submitted.status_code == 202, submitted.text
    return list(batch["items"])


async def the_whole_path(client: httpx.AsyncClient, plan: DemoPlan, oracle: Oracle) -> None:
    ppj, experiment = plan.ppj_name, plan.experiment_name
    for document in (plan.preprocessing, plan.experiment):  # what `kubectl apply -f` would send
        created = await client.post(f"{V1}/{COLLECTIONS[document['kind']]}", content=yaml.safe_dump(document).encode(),
                                    headers={**auth("admin"), "Content-Type": "application/yaml"})
        assert created.status_code == 201, created.text

    done = await wait_for(client, "preprocessingjobs", ppj, lambda d: d["phase"] == "Succeeded", "preprocessing")
    assert done["status"]["processed"] + done["status"]["rejected"] == COUNT and done["status"]["rejected"] > 0
    dataset = (await client.get(f"{V1}/datasets/{plan.dataset}", headers=auth("viewer"))).json()
    assert dataset["index"]["count"] == done["status"]["processed"]

    await wait_for(client, "experiments", experiment, lambda d: d["phase"] == "AwaitingLabels" and d["iteration"] == 0,
                   "iteration 0")
    first = await label_and_submit(client, oracle, experiment, 0)
    assert len(first) == plan.experiment["spec"]["acquisition"]["initialBatchSize"]
    await wait_for(client, "experiments", experiment, lambda d: d["phase"] == "AwaitingLabels" and d["iteration"] == 1,
                   "iteration 1")
    metrics0 = (await client.get(f"{V1}/experiments/{experiment}/iterations/0/metrics", headers=auth("viewer"))).json()
    assert metrics0["metrics"]["labels_total"] == len(first)

    # the candidates of the first trained network, as a person downloads them
    csv_answer = await client.get(f"{V1}/experiments/{experiment}/iterations/1/candidates.csv", headers=auth("viewer"))
    vot_answer = await client.get(f"{V1}/experiments/{experiment}/iterations/1/candidates.vot", headers=auth("viewer"))
    assert csv_answer.status_code == vot_answer.status_code == 200
    assert "attachment" in csv_answer.headers["content-disposition"]
    from_csv = astropy_ascii.read(csv_answer.text, format="csv")
    from_vot = parse_single_table(io.BytesIO(vot_answer.content)).to_table()
    assert list(from_csv.colnames) == list(from_vot.colnames)
    assert {"id", "ra", "dec", "predicted", "probability"} <= set(from_csv.colnames)
    assert len(from_csv) == len(from_vot) > 0
    assert sorted(str(i) for i in from_csv["id"]) == sorted(str(i) for i in from_vot["id"])
    assert set(str(p) for p in from_vot["predicted"]) <= oracle.targets
    assert str(from_vot["ra"].unit) == "deg"

    second = await label_and_submit(client, oracle, experiment, 1)
    finished = await wait_for(client, "experiments", experiment, lambda d: d["phase"] == "Succeeded", "the end")
    assert [h["iteration"] for h in finished["history"]] == [0, 1]
    metrics1 = (await client.get(f"{V1}/experiments/{experiment}/iterations/1/metrics", headers=auth("viewer"))).json()
    m = metrics1["metrics"]
    assert m["labels_total"] == len(first) + len(second)
    assert m["predicted_target_count"] == len(from_csv)
    precision = m["target_precision"]
    if precision["estimate"] is not None:
        assert 0.0 <= precision["low"] <= precision["estimate"] <= precision["high"] <= 1.0
    curves = (await client.get(f"{V1}/experiments/{experiment}/curves", headers=auth("viewer"))).json()
    assert [(p["iteration"], p["labels_total"]) for p in curves["points"]] == [(0, len(first)), (1, m["labels_total"])]
    assert curves["points"][1]["predicted_targets"] == len(from_csv)


async def test_the_whole_path_against_the_local_runner(tmp_path: Path, archive: Path) -> None:
    plan = plan_for(archive)
    api = start_api(tmp_path / "store", tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
            await the_whole_path(client, plan, Oracle(archive, plan))
    finally:
        api.stop()


# -- the operator on the emulated cluster -----------------------------------------------------------


def _time(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


class ProcessKubelet:
    """Stands in for the Job controller and the kubelets (see the module docstring)."""

    def __init__(self, api: Any, store_url: str, logs: Path) -> None:
        self.api = api
        self.jobs = LocalJobs(Settings(store=store_url), logs, max_parallel=2)
        self.uids: dict[str, str] = {}
        self.written: dict[str, dict[str, Any]] = {}

    def status(self, job: _LocalJob) -> dict[str, Any]:
        seen = job.observed()
        status: dict[str, Any] = {"active": seen.active, "ready": seen.ready, "succeeded": seen.succeeded,
                                  "failed": seen.failed}
        if job.started:
            status["startTime"] = _time(job.started)
        if job.spec.get("completionMode") == "Indexed" and job.succeeded:
            status["completedIndexes"] = ",".join(str(i) for i in sorted(job.succeeded))
        if seen.complete:
            previous = self.written.get(job.name, {})
            status["completionTime"] = previous.get("completionTime") or _time(datetime.now(timezone.utc))
            status["conditions"] = [{"type": "SuccessCriteriaMet", "status": "True"},
                                    {"type": "Complete", "status": "True"}]
        elif seen.failed_reason:
            status["conditions"] = [{"type": "FailureTarget", "status": "True", "reason": seen.failed_reason},
                                    {"type": "Failed", "status": "True", "reason": seen.failed_reason,
                                     "message": seen.failed_message}]
        return status

    def sync(self) -> None:
        for configmap in self.api.list(CONFIGMAPS, NS):
            self.jobs.configmaps[configmap["metadata"]["name"]] = configmap
        present = {}
        for job in self.api.list(JOBS, NS):
            name, uid = job["metadata"]["name"], job["metadata"]["uid"]
            present[name] = uid
            if self.uids.get(name) != uid:  # new, or deleted and created again
                self.jobs.delete(name)
                self.jobs.create(job)
                self.uids[name] = uid
                self.written.pop(name, None)
            if bool(job["spec"].get("suspend")) != self.jobs.jobs[name].suspended:
                self.jobs.set_suspended(name, bool(job["spec"].get("suspend")))
        for name in [n for n in self.uids if n not in present]:
            self.jobs.delete(name)
            del self.uids[name]
        self.jobs.step()
        for name, job in self.jobs.jobs.items():
            status = self.status(job)
            if self.written.get(name) != status:
                self.api.set_status(JOBS, NS, name, status)
                self.written[name] = status

    async def run(self) -> None:
        while True:
            self.sync()
            await asyncio.sleep(0.2)


async def _with_kubelet(kubelet: ProcessKubelet, body: Awaitable[None]) -> None:
    task = asyncio.create_task(kubelet.run())
    try:
        await body
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        kubelet.jobs.stop()


async def test_the_whole_path_against_the_operator_on_the_emulated_cluster(tmp_path: Path, archive: Path) -> None:
    plan = plan_for(archive)
    async with cluster(tmp_path) as c:
        c.kubelet.step = lambda job: None  # type: ignore[method-assign]  # ProcessKubelet plays it instead
        kubelet = ProcessKubelet(c.api, c.store.url, tmp_path / "pods")
        backend = KubernetesBackend(NS, login=lambda: kopf.ConnectionInfo(server=c.url))
        app = create_app(settings_for(c.store.url, api_backend="kubernetes", namespace=NS), backend=backend,
                         store=c.store)
        async with c.operator(), client_for(app) as client:
            await _with_kubelet(kubelet, the_whole_path(client, plan, Oracle(archive, plan)))
        # the operator, not the harness, made every Job, each once, with the deterministic names
        experiment = plan.experiment_name
        assert sorted(set(c.jobs_created())) == sorted(c.jobs_created())
        assert {f"{experiment}-iter-0", f"{experiment}-iter-1", f"{plan.ppj_name}-preprocess"} <= set(c.jobs_created())
