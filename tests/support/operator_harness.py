"""Run the real kopf operator in-process against :mod:`k8s_emulator`, and play the Job controller.

There is no kubelet and no Job controller here (and no cluster can be had, see
../shared/TESTING.md), so :class:`FakeKubelet` stands in for both: it watches the Jobs the operator
creates, checks that the ConfigMap each pod mounts exists, does the *store side effects* a pod's
command would have (a small batch.json and run.json for ``iterate``, label events for ``answer``,
metrics.json for ``evaluate``, index.json for ``preprocess``; the real commands are exercised by
``oraculum run`` in test_runner.py) and writes the Job's status the way the Job controller does.
Everything else is real: kopf, the handlers, the reconciler, its HTTP client, the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kmock
import kopf
import yaml

from tests.support.k8s_emulator import ClusterEmulator, Route
from oraculum.control.crds import CRD_KINDS, crd
from oraculum.learning.experiments import iteration_key, write_json
from oraculum.control.jobs import CONTAINER, LABEL_EXPERIMENT, JobConfig
from oraculum.learning.labels import LabelEvent, LabelItem, append_event
from oraculum.operator.controller import Reconciler
from oraculum.operator.main import OperatorConfig, operator_main
from oraculum.settings import Settings
from oraculum.store import LocalStore

ALE = ("oraculum.dev", "v1alpha1", "activelearningexperiments")
PPJ = ("oraculum.dev", "v1alpha1", "preprocessingjobs")
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
CONFIGMAPS = ("", "v1", "configmaps")
EVENTS = ("", "v1", "events")
NS = "lab"
RBAC = Path(__file__).resolve().parents[2] / "operator" / "rbac.yaml"

BATCH = 10  # items per fake batch: 8 for the oracle, 2 for the estimate


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_labels(store: LocalStore, experiment: str, iteration: int, count: int = BATCH) -> None:
    """What the API does when a person labels: durable label events in the store."""
    items = [LabelItem(index=iteration * BATCH + i, id=f"s{iteration * BATCH + i}", label="emission" if i % 3 else "absorption")
             for i in range(count)]
    append_event(store, experiment, LabelEvent(who="astronomer", iteration=iteration, items=items))


class FakeKubelet:
    """Plays the Job controller and the pods (see the module docstring).

    ``policy(job) -> "succeed" | "fail" | "unschedulable" | "hold"`` decides per Job;
    "hold" leaves it running, "unschedulable" pending with a scheduler message.
    """

    def __init__(self, api: ClusterEmulator, store: LocalStore) -> None:
        self.api = api
        self.store = store
        self.policy: Callable[[dict[str, Any]], str] = lambda job: "succeed"
        self.handled: dict[str, str] = {}  # job uid -> what was done
        self.ran: list[str] = []  # job names whose work ran, in order
        self.mounted: dict[str, list[dict[str, Any]]] = {}  # job name -> the manifest ConfigMaps' data, per run
        #: iteration -> the ``target_precision`` an evaluate Job writes (default: a rising estimate)
        self.precision: Callable[[int], dict[str, Any]] = lambda k: {
            "estimate": round(0.5 + 0.1 * k, 3), "low": round(0.3 + 0.1 * k, 3), "high": round(0.7 + 0.1 * k, 3)}

    async def run(self) -> None:
        while True:
            for job in self.api.list(JOBS):
                self.step(job)
            await asyncio.sleep(0.05)

    def step(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        uid = meta["uid"]
        if spec.get("suspend"):
            if self.handled.get(uid) == "hold":
                self.api.set_status(JOBS, meta["namespace"], meta["name"], {"startTime": _now(), "active": 0})
                self.handled[uid] = "suspended"
            return
        if self.handled.get(uid) == "suspended":
            del self.handled[uid]
        if uid in self.handled:
            return
        decision = self.policy(job)
        self.handled[uid] = decision
        name, namespace = meta["name"], meta["namespace"]
        if decision == "hold":
            self.api.set_status(JOBS, namespace, name, {"startTime": _now(), "active": 1, "ready": 1})
        elif decision == "unschedulable":
            self.api.set_status(JOBS, namespace, name, {"startTime": "2020-01-01T00:00:00Z", "active": 1, "ready": 0})
            self.api._create(Route("", "v1", "pods", namespace), {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-x1", "labels": {"batch.kubernetes.io/job-name": name, "job-name": name}},
                "spec": spec["template"]["spec"],
                "status": {"phase": "Pending"},
            }, {})
            pod = self.api.get(PODS, namespace, f"{name}-x1")
            assert pod is not None
            self.api.set_status(PODS, namespace, f"{name}-x1", {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]})
        elif decision == "fail":
            self.api.set_status(JOBS, namespace, name, {
                "startTime": _now(), "failed": 3, "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit"}]})
        else:
            self.work(job)
            self.ran.append(name)
            completions = int(spec.get("completions") or 1)
            self.api.set_status(JOBS, namespace, name, {
                "startTime": _now(), "completionTime": _now(), "succeeded": completions,
                **({"completedIndexes": f"0-{completions - 1}"} if spec.get("completionMode") == "Indexed" else {}),
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]})

    def work(self, job: dict[str, Any]) -> None:
        """The store side effects of the pod's command (see the module docstring)."""
        pod = job["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == CONTAINER)
        for volume in pod.get("volumes", []):
            if "configMap" in volume:  # a kubelet cannot start a pod whose ConfigMap is missing
                configmap = self.api.get(CONFIGMAPS, job["metadata"]["namespace"], volume["configMap"]["name"])
                assert configmap, volume
                self.mounted.setdefault(job["metadata"]["name"], []).append(configmap.get("data") or {})
        args = container["args"]
        verb = args[1]
        if verb == "preprocess":
            dataset = args[args.index("--dataset") + 1]
            shards = int(args[args.index("--shard") + 1].split("/")[1])
            write_json(self.store, f"datasets/{dataset}/index.json",
                       {"count": 100 * shards, "rejected": 3 * shards, "shards": [{"shard": i} for i in range(shards)]})
            return
        experiment = job["metadata"]["labels"][LABEL_EXPERIMENT]
        k = int(args[args.index("--iteration") + 1])
        if verb == "iterate":
            items = [{"index": k * BATCH + i, "id": f"s{k * BATCH + i}", "set": "oracle" if i < 8 else "estimation"}
                     for i in range(BATCH)]
            write_json(self.store, iteration_key(experiment, k, "batch"), {"iteration": k, "items": items})
            write_json(self.store, iteration_key(experiment, k, "run"), {"durations_s": {"train": 1.5, "score": 0.5}})
        elif verb == "answer":
            write_labels(self.store, experiment, k)
        elif verb == "evaluate":
            write_json(self.store, iteration_key(experiment, k, "metrics"), {
                "batch_size": BATCH, "batch_labelled": BATCH, "labels_total": BATCH * (k + 1),
                "target_precision": self.precision(k),
                "predicted_target_count": 40 + k,
            })


class Cluster:
    """An emulated API server with the CRDs installed, a store, a fake kubelet, and operators."""

    def __init__(self, api: ClusterEmulator, server: kmock.Server, store: LocalStore) -> None:
        self.api = api
        self.server = server
        self.store = store
        self.kubelet = FakeKubelet(api, store)
        self.reconcilers: list[Reconciler] = []

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def create(self, resource: tuple[str, str, str], name: str, spec: dict[str, Any],
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
        kind = {ALE: "ActiveLearningExperiment", PPJ: "PreprocessingJob"}[resource]
        body = {"apiVersion": "oraculum.dev/v1alpha1", "kind": kind,
                "metadata": {"name": name, **({"annotations": annotations} if annotations else {})}, "spec": spec}
        return self.api._create(Route(*resource, NS), body, {})

    def get(self, resource: tuple[str, str, str], name: str) -> dict[str, Any]:
        obj = self.api.get(resource, NS, name)
        assert obj is not None, f"{resource[2]}/{name} does not exist"
        return obj

    def status(self, resource: tuple[str, str, str], name: str) -> dict[str, Any]:
        return self.get(resource, name).get("status") or {}

    def events(self, name: str) -> list[tuple[str, str, str]]:
        events = sorted(self.api.list(EVENTS, NS), key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [(e["type"], e["reason"], e["message"]) for e in events if e["involvedObject"]["name"] == name]

    def job_names(self) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.api.list(JOBS, NS))

    def calls(self, method: str, path_end: str) -> int:
        """Requests the operator's own client made so far with this method, whose path ends so."""
        return sum(1 for m, path, _, agent in self.api.calls
                   if m == method and path.endswith(path_end) and agent.startswith("oraculum-operator/"))

    def jobs_created(self) -> list[str]:
        """Every Job ever added, in order (a name twice means a duplicate creation)."""
        return [new["metadata"]["name"] for _, resource, kind, _, new in self.api.log if resource == JOBS and kind == "ADDED"]

    async def wait(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def wait_phase(self, resource: tuple[str, str, str], name: str, phase: str, timeout: float = 15.0) -> dict[str, Any]:
        await self.wait(lambda: self.status(resource, name).get("phase") == phase, timeout,
                        f"{name} to be {phase} (is {self.status(resource, name).get('phase')}: "
                        f"{self.status(resource, name).get('message')})")
        return self.status(resource, name)

    @contextlib.asynccontextmanager
    async def operator(self, config: JobConfig | None = None, poll_interval: float = 0.5,
                       store_factory: Callable[[], Any] | None = None,
                       operator_config: OperatorConfig | None = None) -> AsyncIterator[Reconciler]:
        """Start the real operator (kopf + handlers) in this event loop; stop it on exit."""
        stop, ready = asyncio.Event(), asyncio.Event()
        out: list[Reconciler] = []
        task = asyncio.create_task(operator_main(
            Settings(store=self.store.url), connection=kopf.ConnectionInfo(server=self.url),
            stop_flag=stop, ready_flag=ready, poll_interval=poll_interval, config=config or JobConfig(),
            store_factory=store_factory or (lambda: self.store), reconciler_out=out, operator_config=operator_config))
        try:
            await asyncio.wait_for(ready.wait(), 15)
            self.reconcilers.append(out[0])
            yield out[0]
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The emulated cluster with the generated CRDs applied; checks RBAC at the end."""
    store = LocalStore(tmp_path / "store")
    async with ClusterEmulator() as api, kmock.Server(api) as server:
        for kind in CRD_KINDS:
            api._create(Route("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd(kind), {})
        harness = Cluster(api, server, store)
        kubelet = asyncio.create_task(harness.kubelet.run())
        try:
            yield harness
        finally:
            kubelet.cancel()
            await asyncio.gather(kubelet, return_exceptions=True)
        missing = ungranted(operator_requests(api), load_rbac())
        assert not missing, f"the operator used verbs its RBAC does not grant: {missing}"


# --- RBAC -----------------------------------------------------------------------------------------


def load_rbac(path: Path = RBAC) -> list[dict[str, Any]]:
    """The rules of the ClusterRole(s) in operator/rbac.yaml."""
    rules = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in ("ClusterRole", "Role"):
            rules.extend(doc.get("rules", []))
    return rules


def request_verb(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) of an API request, as RBAC sees it."""
    from tests.support.k8s_emulator import parse_route

    route = parse_route(path)
    if route is None or route.plural is None:
        return None  # discovery: granted to every authenticated user
    resource = route.plural + (f"/{route.subresource}" if route.subresource else "")
    method = method.upper()
    verb = {
        "GET": "watch" if query.get("watch") in ("true", "1") else ("get" if route.name else "list"),
        "POST": "create", "PUT": "update", "PATCH": "patch",
        "DELETE": "delete" if route.name else "deletecollection",
    }[method]
    return route.group, resource, verb


def operator_requests(api: ClusterEmulator) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the operator (kopf or its own client) asked for."""
    used = set()
    for method, path, query, agent in api.calls:
        if agent.startswith(("kopf/", "oraculum-operator/")):
            verb = request_verb(method, path, query)
            if verb is not None:
                used.add(verb)
    return used


def ungranted(used: set[tuple[str, str, str]], rules: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    def granted(group: str, resource: str, verb: str) -> bool:
        return any(group in rule.get("apiGroups", []) and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
                   and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) for rule in rules)

    return sorted(item for item in used if not granted(*item))


def json_dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
