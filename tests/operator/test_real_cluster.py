"""The chart and the operator on a REAL control plane (issue 15, "What the lane must prove").

Real: etcd, kube-apiserver (RBAC, admission, schema and CEL validation), kube-controller-manager
(Job controller, garbage collector) from tests/support/controlplane.py, a real helm 3 and kubectl.
Pods run under the PROCESS KUBELET (tests/support/process_kubelet.py), which STANDS IN FOR KUBELET:
it binds each pod and runs its container command (``oraculum ...``, found on this virtualenv's
PATH, which the process kubelet passes to its processes) as a local process, and reports real pod
status to the real Job controller.

Each test has its own namespace with ``helm install`` of charts/oraculum in it (helpers in
tests/support/real_operator.py):

* default values, except that every pod of the chart (operator, API, dashboard, MinIO, Redis) has
  a node selector no node matches: all objects are created and validated by the server, and the
  process kubelet runs none of them (no images exist here, and an in-cluster operator would
  compete with the one under test);
* the one change to an installed object: the chart's settings ConfigMap says ORACULUM_STORE=<a
  folder of the test> instead of the parked MinIO. Worker pods get it by ``envFrom`` as on a
  cluster, and the operator reads it the same way;
* the operator runs as a local process, ``oraculum operator``, with the command, ``--namespace``
  arguments and environment of the chart's Deployment as the server stores it, and a kubeconfig
  holding a TokenRequest token of the chart's operator ServiceAccount: the chart's Role authorises
  every request, not cluster admin.

The namespaces enforce the ``restricted`` Pod Security standard, so the real PodSecurity admission
checks every pod of the chart and every worker pod the Job controller makes. Data is small: 300
synthetic spectra (``synthetic: {count: 300, seed: 1}``), one epoch. An experiment is applied once
its PreprocessingJob has Succeeded: applied together, the experiment would notice the finished
dataset only at the operator's next periodic look (30 s). Each phase prints its wall time
(``pytest -s``).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from oraculum.ingest.sources import synthetic_prefix
from tests.operator.test_rbac import NEEDS
from tests.support.controlplane import ControlPlane
from tests.support.real_operator import (Lab, OperatorProcess, Phases, granted, helm, operator_object, prepare_lab,
                                         watching)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "experiment-simulated.yaml"
POOL_COUNT, POOL_SEED = 300, 1
STEPS = ("iter", "answer", "eval")
#: What Kubernetes grants every ServiceAccount anywhere (discovery, self-reviews): the baseline.
EVERYONE = "default"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture()
def phases(request: pytest.FixtureRequest) -> Iterator[Phases]:
    timer = Phases(request.node.name)
    yield timer
    total = sum(seconds for _, seconds in timer.times)
    print(f"[{timer.test}] phases: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timer.times)
          + f" (sum {total:.1f}s)", flush=True)


@contextlib.contextmanager
def fresh_namespace(cluster: ControlPlane) -> Iterator[str]:
    """A new namespace that enforces the ``restricted`` Pod Security standard (the chart's pods and
    the worker Jobs are meant to meet it: the real PodSecurity admission checks each pod)."""
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    name = cluster.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "generateName": "lane-", "labels": labels}})["metadata"]["name"]
    cluster.wait_for(lambda: cluster.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"), 30,
                     f"the default ServiceAccount of {name}")
    try:
        yield name
    finally:
        cluster.delete(f"/api/v1/namespaces/{name}")  # Jobs and pods go with it (garbage collector)


@pytest.fixture()
def lab(control_plane: ControlPlane, tmp_path: Path, phases: Phases) -> Iterator[Lab]:
    """A namespace with the chart installed and the operator's launch spec (not started)."""
    with fresh_namespace(control_plane) as namespace:
        with phases("helm install + operator token"):
            lab = prepare_lab(control_plane, namespace, tmp_path)
        try:
            yield lab
        finally:
            lab.close()


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, float]]:
    """One installed chart for the tests that only look at it (no operator runs): the lab and
    the seconds ``helm install`` took."""
    with fresh_namespace(control_plane) as namespace:
        began = time.monotonic()
        lab = prepare_lab(control_plane, namespace, tmp_path_factory.mktemp("release"))
        yield lab, time.monotonic() - began


# --- manifests --------------------------------------------------------------------------------


def simulated_example(pool: str, experiment: str, *, shards: int, iterations: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """examples/experiment-simulated.yaml, shrunk: 300 spectra in ``shards`` shards, one epoch,
    small batches, ``iterations`` iterations; the same kinds, fields and simulated oracle."""
    ppj, ale = (copy.deepcopy(doc) for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc)
    assert (ppj["kind"], ale["kind"]) == ("PreprocessingJob", "ActiveLearningExperiment")
    ppj["metadata"]["name"] = pool
    ppj["spec"].update(dataset=pool, shards=shards, parallelism=shards,
                       source={"synthetic": {"count": POOL_COUNT, "seed": POOL_SEED}})
    ale["metadata"]["name"] = experiment
    spec = ale["spec"]
    spec["dataset"] = pool
    spec["model"].update(epochs=1, patience=1)
    spec["acquisition"].update(batchSize=10, initialBatchSize=20)
    spec["estimation"]["size"] = 5
    spec["stopping"]["maxIterations"] = iterations
    spec["oracle"]["labels"] = f"{synthetic_prefix(POOL_COUNT, POOL_SEED)}/labels.csv"
    return ppj, ale


def expected_jobs(experiment: str, iterations: int) -> list[str]:
    return [f"{experiment}-{step}-{k}" for k in range(iterations) for step in STEPS]


def make_pool(lab: Lab, phases: Phases, ppj: dict[str, Any]) -> dict[str, Any]:
    with phases(f"preprocess ({ppj['spec']['shards']}-shard Indexed Job)"):
        lab.apply(ppj)
        return lab.wait_phase("preprocessingjobs", ppj["metadata"]["name"], "Succeeded", 120)


def assert_each_step_ran_once(lab: Lab, experiment: str, iterations: int, added: list[str]) -> None:
    """Every Job of the experiment was ADDED exactly once (the watch) and completed; none other."""
    expected = expected_jobs(experiment, iterations)
    repeated = [name for name, count in collections.Counter(added).items() if count > 1]
    assert not repeated, f"Jobs created more than once: {repeated} (all: {added})"
    assert sorted(name for name in added if name.startswith(f"{experiment}-")) == sorted(expected)
    by_step = collections.Counter((j["metadata"]["labels"]["oraculum.dev/purpose"], j["metadata"]["labels"]["oraculum.dev/iteration"])
                                  for j in lab.jobs(**{"oraculum.dev/experiment": experiment}))
    assert by_step == {(purpose, str(k)): 1 for k in range(iterations) for purpose in ("iterate", "answer", "evaluate")}
    for job in lab.jobs(**{"oraculum.dev/experiment": experiment}):
        conditions = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
        assert conditions.get("Complete") == "True", (job["metadata"]["name"], job["status"])


def assert_clean_logs(lab: Lab, processes: list[OperatorProcess] | None = None) -> None:
    """No request of the operator processes was refused (their RBAC is the chart's), none crashed."""
    for process in lab.operators if processes is None else processes:
        text = process.text()
        for bad in ("Forbidden", " 403", "Traceback"):
            assert bad not in text, f"{process.name} logged {bad!r}:\n{lab.logs(80)}"


# --- 1. the chart on the server, and the operator's RBAC --------------------------------------


def test_helm_install_is_accepted_by_the_server(control_plane: ControlPlane, release: tuple[Lab, float],
                                                phases: Phases) -> None:
    """``helm install`` creates every object of the chart on the real API server (its schema
    validation, admission and RBAC escalation checks included), and the hooks that install does
    not create (pre-delete, ``helm test``) pass a server-side dry run. Pods would run under the
    process kubelet, which stands in for kubelet; the chart's own pods are parked (none runs)."""
    lab, seconds = release
    phases.times.append(("helm install (module fixture)", seconds))
    kinds = collections.Counter(obj["kind"] for obj in lab.objects)
    assert {"Deployment", "StatefulSet", "Role", "RoleBinding", "ServiceAccount", "ConfigMap", "Secret",
            "Service"} <= set(kinds), kinds
    with phases("every object read back"):
        listed = control_plane.kubectl("get", "-n", lab.namespace, "-f", "-", "-o", "name",
                                       input=yaml.safe_dump_all(lab.objects)).stdout.split()
    assert len(listed) == len(lab.objects)
    with phases("hooks: server-side dry run"):
        hooks = helm(control_plane, lab.work / "helm-home", "get", "hooks", "oraculum", "--namespace", lab.namespace).stdout
        documents = [doc for doc in yaml.safe_load_all(hooks) if doc]
        assert {"Job", "Pod"} <= {doc["kind"] for doc in documents}
        control_plane.kubectl("create", "--dry-run=server", "-n", lab.namespace, "-f", "-",
                              input=yaml.safe_dump_all(documents))
    # the chart's pods are made by the real Deployment and StatefulSet controllers, and stay parked
    replicas = sum(obj["spec"]["replicas"] for obj in lab.objects if obj["kind"] in ("Deployment", "StatefulSet"))

    def chart_pods() -> list[dict[str, Any]] | None:
        items = control_plane.get(lab.path("pods"))["items"]
        return items if len(items) == replicas else None

    pods = control_plane.wait_for(chart_pods, 60, f"the {replicas} pods of the chart")
    assert all(p["status"].get("phase") == "Pending" and not p["spec"].get("nodeName") for p in pods)
    print(f"[{phases.test}] objects: {dict(sorted(kinds.items()))}; hooks: {[d['kind'] for d in documents]}")


def _operator_rules(control_plane: ControlPlane, lab: Lab) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """What ``kubectl auth can-i --list`` shows for the chart's operator ServiceAccount beyond what
    every ServiceAccount has: in the release namespace, and in a namespace the chart never named."""
    user = f"system:serviceaccount:{lab.namespace}:{operator_object(lab.objects, 'ServiceAccount')}"
    nobody = f"system:serviceaccount:{lab.namespace}:{EVERYONE}"  # the namespace's default account
    baseline = granted(control_plane, EVERYONE, nobody)
    return granted(control_plane, lab.namespace, user) - baseline, granted(control_plane, EVERYONE, user) - baseline


def test_operator_service_account_is_granted_every_verb_it_uses(control_plane: ControlPlane,
                                                               release: tuple[Lab, float], phases: Phases) -> None:
    """``kubectl auth can-i --list --as=system:serviceaccount:<ns>:<operator>`` against the real RBAC
    authorizer: every verb of NEEDS (tests/operator/test_rbac.py: what the reconciler and kopf
    request) is granted in the release namespace, and nothing at all in a namespace the chart did
    not name (namespaced scope). (No pod runs here; the process kubelet stands in for kubelet.)"""
    lab, _ = release
    with phases("kubectl auth can-i --list (x3)"):
        inside, outside = _operator_rules(control_plane, lab)
    assert sorted(NEEDS - inside) == [], "verbs the operator uses but the chart does not grant"
    assert outside == set(), f"granted outside the watched namespace: {sorted(outside)}"


def test_operator_service_account_has_no_verb_it_does_not_use(control_plane: ControlPlane,
                                                             release: tuple[Lab, float]) -> None:
    """The converse of the test above: ``kubectl auth can-i --list`` shows no verb beyond NEEDS.
    (No pod runs here; the process kubelet stands in for kubelet.)"""
    lab, _ = release
    inside, _ = _operator_rules(control_plane, lab)
    assert sorted(inside - NEEDS) == [], "verbs the chart grants the operator that none of its requests uses"


# --- 2. the simulated example, end to end -----------------------------------------------------


def test_simulated_example_runs_to_succeeded_through_real_jobs(lab: Lab, phases: Phases) -> None:
    """The operator (local process, the chart's ServiceAccount token) turns the simulated example
    into real Jobs; the real Job controller makes pods; the process kubelet, standing in for
    kubelet, runs each pod's ``oraculum ...`` command against the store folder that the chart's
    settings ConfigMap names; the operator reads the results from the store and starts the next
    step, iteration after iteration, to Succeeded. The PreprocessingJob is one real Indexed Job
    of 3 completions, one pod per shard, and the dataset index in the store lists 3 shards."""
    ppj, ale = simulated_example("pool", "sim", shards=3, iterations=2)
    with watching(lab.cluster, lab.namespace) as watch:
        with phases("operator start"):
            lab.start_operator()
        ppj_status = make_pool(lab, phases, ppj)
        with phases("experiment: 2 iterations to Succeeded"):
            lab.apply(ale)
            status = lab.wait_phase("activelearningexperiments", "sim", "Succeeded", 420)

    # the dataset, through a real Indexed Job
    [job] = lab.jobs(**{"oraculum.dev/preprocessingjob": "pool"})
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    assert job["status"]["succeeded"] == 3 and job["status"]["completedIndexes"] == "0-2", job["status"]
    pods = lab.pods(job["metadata"]["name"])
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"] and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    index = json.loads((lab.store / "datasets" / "pool" / "index.json").read_text())
    assert [(s["shard"], s["shards"]) for s in index["shards"]] == [(0, 3), (1, 3), (2, 3)]
    assert index["count"] == sum(s["count"] for s in index["shards"]) == ppj_status["processed"] > 0
    assert ppj_status["shards"] == ppj_status["shardsDone"] == 3

    # the experiment: every step once, iteration after iteration, results in the store
    assert_each_step_ran_once(lab, "sim", 2, watch.names())
    assert [h["iteration"] for h in status["history"]] == [0, 1] and status["iteration"] == 1
    assert status["history"][1]["labels"] > status["history"][0]["labels"] > 0
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "MaxIterations")
    for k in (0, 1):
        assert (lab.store / "experiments" / "sim" / "iterations" / str(k) / "metrics.json").is_file()
    uid = lab.cluster.get(lab.path("activelearningexperiments", "sim"))["metadata"]["uid"]
    for job in lab.jobs(**{"oraculum.dev/experiment": "sim"}):
        [owner] = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ActiveLearningExperiment", uid, True)
    reasons = [reason for _, reason, _ in lab.events("sim")]
    assert reasons.count("JobCreated") == 6 and reasons[-1] == "MaxIterations", reasons
    assert_clean_logs(lab)


# --- 3. restarts and a second replica ----------------------------------------------------------


def _pod_running(lab: Lab, job: str) -> bool:
    return any(p["status"].get("phase") == "Running" for p in lab.pods(job))


def _allow_status_writes(lab: Lab, allowed: bool) -> None:
    """Grant or revoke ``patch`` on the custom resources' status in the chart's operator Role, and
    wait until the real authorizer answers accordingly."""
    name = operator_object(lab.objects, "Role")
    path = lab.path("roles", name)
    role = lab.cluster.get(path)
    status = {"apiGroups": ["oraculum.dev"], "resources": ["activelearningexperiments/status", "preprocessingjobs/status"],
              "verbs": ["patch"]}
    others = [rule for rule in role["rules"] if "activelearningexperiments/status" not in rule["resources"]]
    role["rules"] = others + [status] if allowed else others  # patch is the rule's only verb: drop it to revoke
    lab.cluster.request("PUT", path, role)
    account = f"system:serviceaccount:{lab.namespace}:{operator_object(lab.objects, 'ServiceAccount')}"
    answer = "yes" if allowed else "no"
    lab.cluster.wait_for(lambda: lab.cluster.kubectl(
        "auth", "can-i", "patch", "activelearningexperiments.oraculum.dev", "--subresource=status", f"--as={account}",
        "-n", lab.namespace, check=False).stdout.strip() == answer, 30, f"can-i patch status: {answer}")


def test_operator_killed_mid_iteration_resumes_without_duplicate_jobs(lab: Lab, phases: Phases) -> None:
    """SIGKILL of the operator twice, each time followed by a new process (as a Deployment
    restarts a crashed pod):

    1. while iteration 1's training Job runs (the status records it);
    2. between creating a Job and recording it in the status: the next process runs while the
       chart's Role refuses it status writes (real RBAC, restored afterwards), so when training
       ends it creates iteration 1's answer Job and cannot say so; it is killed once the server
       has that Job.

    No Job is ever created twice (a watch of the real server sees every ADDED): each process
    adopts the Jobs it finds. The status keeps its history and continues to Succeeded. Pods run
    under the process kubelet, which stands in for kubelet; they go on running while no operator
    runs."""
    ppj, ale = simulated_example("pool-restart", "restart", shards=1, iterations=2)
    experiment = lambda: lab.status("activelearningexperiments", "restart")  # noqa: E731
    with watching(lab.cluster, lab.namespace) as jobs:
        first = lab.start_operator("operator-1")
        make_pool(lab, phases, ppj)
        with phases("iteration 0, killed while iteration 1 trains"):
            lab.apply(ale)
            lab.wait(lambda: experiment().get("iteration") == 1 and _pod_running(lab, "restart-iter-1"), 240,
                     "iteration 1 recorded and training")
            during = experiment()
            first.kill()
        assert _pod_running(lab, "restart-iter-1"), "the training pod outlives the operator"
        _allow_status_writes(lab, False)
        with phases("restarted, no status writes, killed when it made answer-1"):
            second = lab.start_operator("operator-2")
            lab.wait(lambda: "restart-answer-1" in jobs.names(), 240, "the answer Job of iteration 1")
            second.kill()
        unrecorded = experiment()
        assert "restart-answer-1" not in json.dumps(unrecorded), unrecorded
        assert "Forbidden" in second.text()  # the refusal really happened
        _allow_status_writes(lab, True)
        with phases("restarted operator to Succeeded"):
            third = lab.start_operator("operator-3")
            status = lab.wait_phase("activelearningexperiments", "restart", "Succeeded", 240)

    assert_each_step_ran_once(lab, "restart", 2, jobs.names())
    assert [h["iteration"] for h in status["history"]] == [0, 1]
    assert during["history"] == unrecorded["history"] == status["history"][:1]  # kept through both kills
    warnings = [(reason, message) for kind, reason, message in lab.events("restart")
                if kind == "Warning" and reason != "Logging"]  # kopf's own: the refused writes
    assert warnings == [], warnings
    assert_clean_logs(lab, [first, third])


def test_two_operators_at_once_create_each_job_once(lab: Lab, phases: Phases) -> None:
    """Peering is off (operator/handlers.py: ``settings.peering.standalone = True``), so the chart
    pins one replica with ``strategy: Recreate`` (as the server stores the Deployment; docs/install.md:
    "so two operators never run at once"). If two run anyway (a manual scale, a second install),
    both act, and the design still holds against the real server: deterministic Job names (409 for
    the loser) and status writes at the resourceVersion read (409, then a fresh read) mean each Job
    is created once and each Event posted once. Pods run under the process kubelet, which stands
    in for kubelet."""
    deployment = lab.cluster.get(lab.path("deployments", operator_object(lab.objects, "Deployment")))
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    ppj, ale = simulated_example("pool-pair", "pair", shards=1, iterations=1)
    with watching(lab.cluster, lab.namespace) as watch:
        with phases("two operators start"):
            pair = [lab.start_operator("replica-a"), lab.start_operator("replica-b")]
        make_pool(lab, phases, ppj)
        with phases("experiment: 1 iteration, two operators"):
            lab.apply(ale)
            status = lab.wait_phase("activelearningexperiments", "pair", "Succeeded", 240)

    assert all(process.running for process in pair), lab.logs(60)
    assert_each_step_ran_once(lab, "pair", 1, watch.names())
    assert watch.names().count("pool-pair-preprocess") == 1
    assert [h["iteration"] for h in status["history"]] == [0]
    for name, steps in (("pair", 3), ("pool-pair", 1)):
        created = [message for _, reason, message in lab.events(name) if reason == "JobCreated"]
        assert len(created) == steps, created  # each Event once, though both operators reconciled
    activity = {p.name: (p.text().count("Handler 'experiment-event' succeeded"), p.text().count("(409)"),
                         p.text().count("changed while reconciling")) for p in pair}
    assert all(handled > 0 for handled, _, _ in activity.values()), activity  # both acted
    print(f"[{phases.test}] per operator (experiment events handled, creations that met 409, "
          f"status writes retried after 409): {activity}")
    assert_clean_logs(lab)
