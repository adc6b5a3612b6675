"""The chart and the operator on the real control plane (tests/operator/test_real_cluster.py).

Pods run under the PROCESS KUBELET (tests/support/process_kubelet.py), which stands in for
kubelet: each container's command is a local process; everything else is the real API server,
Job controller and garbage collector of :mod:`tests.support.controlplane`.

* :func:`install_chart`: ``helm install`` of charts/oraculum into a namespace, every pod of the
  chart parked on a node selector that no node has (:data:`PARKED`): the objects are created
  and validated by the server, but the process kubelet runs none of them (no image is pulled
  here, and a second, in-cluster operator would compete with the one under test).
* :func:`token_kubeconfig`: a kubeconfig with a TokenRequest token of a ServiceAccount, so a
  local process is exactly that ServiceAccount (its RBAC, not cluster admin).
* :func:`operator_launch`: how the chart's operator Deployment (as the server stores it) runs,
  turned into a local command and environment: its ``env`` and ``envFrom`` resolved from the
  ConfigMap and Secret it names, its ``--namespace`` arguments.
* :class:`OperatorProcess`: ``oraculum operator`` as a local process (SIGKILL, restart, log).
* :class:`Watch`: every Job the server ever added in a namespace, from a real watch, so a Job
  created twice (deleted and created again) cannot hide behind its deterministic name.
* :func:`granted`: what ``kubectl auth can-i --list --as=...`` prints, as (group, resource, verb).
* :func:`prepare_lab` and :class:`Lab`: all of the above for one namespace, the chart's settings
  ConfigMap pointed at a store folder of the test, and the reads and waits the tests share.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from oraculum.control.jobs import POD_ONLY_ENV
from tests.support.controlplane import ControlPlane, _die_with_parent
from tests.support.helm_binary import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "oraculum"
RELEASE = "oraculum"
#: A node label no node has: the chart's own pods (API, dashboard, operator, MinIO, Redis) stay
#: Pending, unscheduled, while their objects exist and were validated by the server.
PARKED = {"oraculum.dev/test-lane": "parked"}
PARKED_VALUES: dict[str, Any] = {part: {"nodeSelector": PARKED}
                                 for part in ("operator", "api", "dashboard", "minio", "redis")}


# --- helm -------------------------------------------------------------------------------------------


def helm(cluster: ControlPlane, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The real helm 3 CLI against the cluster as admin (its caches in ``home``); fails loudly."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(cluster.kubeconfig),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    result = subprocess.run([str(helm_binary("3")), *args], capture_output=True, text=True, env=env,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
    return result


def install_chart(cluster: ControlPlane, namespace: str, work: Path,
                  values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``helm install oraculum charts/oraculum -n <namespace>`` with :data:`PARKED_VALUES` (and
    ``values`` over them); returns the objects of the release's manifest as helm stored it."""
    path = work / "values.yaml"
    path.write_text(yaml.safe_dump({**PARKED_VALUES, **(values or {})}))
    helm(cluster, work / "helm-home", "install", RELEASE, str(CHART), "--namespace", namespace, "--values", str(path))
    manifest = helm(cluster, work / "helm-home", "get", "manifest", RELEASE, "--namespace", namespace).stdout
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


# --- identities -------------------------------------------------------------------------------------


def token_kubeconfig(cluster: ControlPlane, namespace: str, account: str, path: Path, seconds: int = 3600) -> Path:
    """A kubeconfig whose user is a TokenRequest token of ServiceAccount ``namespace/account``."""
    review = cluster.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}})
    user = f"system:serviceaccount:{namespace}:{account}"
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator", "preferences": {},
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server, "certificate-authority-data": base64.b64encode(cluster.ca.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": review["status"]["token"]}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _resource(text: str) -> tuple[str, str]:
    """``jobs.batch`` -> (batch, jobs); ``x.oraculum.dev/status`` -> (oraculum.dev, x/status)."""
    name, _, sub = text.partition("/")
    plural, _, group = name.partition(".")
    return group, plural + (f"/{sub}" if sub else "")


def granted(cluster: ControlPlane, namespace: str, user: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) that ``kubectl auth can-i --list --as=user -n ns``
    lists (resource rules only; the non-resource URLs every client may GET are left out)."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout.splitlines()
    header = out[0]
    starts = [header.index(column) for column in ("Resources", "Non-Resource URLs", "Resource Names", "Verbs")]
    rules: set[tuple[str, str, str]] = set()
    for line in out[1:]:
        resource = line[starts[0]:starts[1]].strip()
        verbs = line[starts[3]:].strip().strip("[]").split()
        if resource:
            rules.update((*_resource(resource), verb) for verb in verbs)
    return rules


# --- the operator as a local process ----------------------------------------------------------------


def _source(cluster: ControlPlane, namespace: str, kind: str, name: str, optional: bool) -> dict[str, str]:
    path = f"/api/v1/namespaces/{namespace}/{'configmaps' if kind == 'configMap' else 'secrets'}/{name}"
    if optional and not cluster.exists(path):
        return {}
    data = cluster.get(path).get("data") or {}
    return data if kind == "configMap" else {k: base64.b64decode(v).decode() for k, v in data.items()}


def container_env(cluster: ControlPlane, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The environment a kubelet gives ``container``: ``envFrom`` then ``env`` (values, ConfigMap and
    Secret keys), read from the server."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind = "configMap" if "configMapRef" in source else "secret"
        ref = source["configMapRef" if kind == "configMap" else "secretRef"]
        for key, value in _source(cluster, namespace, kind, ref["name"], bool(ref.get("optional"))).items():
            env[source.get("prefix", "") + key] = value
    for var in container.get("env") or []:
        if "valueFrom" not in var:
            env[var["name"]] = var.get("value", "")
            continue
        source = var["valueFrom"]
        kind = "configMap" if "configMapKeyRef" in source else "secret"
        ref = source.get("configMapKeyRef") or source.get("secretKeyRef")
        assert ref is not None, f"{var['name']}: only ConfigMap and Secret keys are resolved here, not {source}"
        data = _source(cluster, namespace, kind, ref["name"], bool(ref.get("optional")))
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
    return env


def operator_launch(cluster: ControlPlane, namespace: str, kubeconfig: Path, home: Path,
                    deployment: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the chart's operator Deployment, as a local process.

    Taken from the Deployment the server stores: the container's command (``oraculum``, found on
    this interpreter's PATH), its ``--namespace`` arguments (the liveness endpoint is left out: no
    fixed port on a shared machine), and its environment resolved from the ConfigMap and Secret it
    names (its metrics port, if any, becomes any free loopback port, for the same reason).
    Variables that point into the pod's /tmp emptyDir (HOME, caches) point into ``home``;
    KUBECONFIG is the ServiceAccount's token kubeconfig; nothing else comes from the test's own
    environment but PATH, locale and Python's.
    """
    obj = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    [container] = obj["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "operator", args
    namespaces = [args[i + 1] for i, arg in enumerate(args) if arg in ("--namespace", "-n")]
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / container["command"][0]), "operator", *[f"--namespace={ns}" for ns in namespaces]]
    env = {name: os.environ[name] for name in ("LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV") if name in os.environ}
    env.update({k: v for k, v in container_env(cluster, namespace, container).items() if k not in POD_ONLY_ENV})
    if "ORACULUM_OPERATOR_METRICS_PORT" in env:  # the pod's own port: here any free one, on loopback
        env.update(ORACULUM_OPERATOR_METRICS_PORT="0", ORACULUM_OPERATOR_METRICS_ADDRESS="127.0.0.1")
    home.mkdir(parents=True, exist_ok=True)
    env.update({"PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]), "HOME": str(home),
                "ORACULUM_CACHE_DIR": str(home / "cache"), "MPLCONFIGDIR": str(home / "matplotlib"),
                "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"})
    return command, env


class OperatorProcess:
    """``oraculum operator`` running locally; its output appended to ``log``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, name: str = "operator"):
        self.command, self.env, self.log, self.name = command, env, log, name
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> "OperatorProcess":
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "ab") as out:
            out.write(f"--- {self.name} started {time.strftime('%H:%M:%S')} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.env["HOME"], start_new_session=True,
                                            preexec_fn=_die_with_parent)  # never outlives the test session
        self.started = time.monotonic()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup handler, no graceful end of its requests."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (kopf's graceful stop), SIGKILL after 20 s; nothing if it has ended."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --- watching -----------------------------------------------------------------------------------


class Watch(threading.Thread):
    """Every Job ADDED in ``namespace``, from a real watch opened at once.

    ``added`` lists (name, uid) in the order the server reported them: a name twice is a Job
    created twice (deleted and made again), which the server's unique names would otherwise hide.
    """

    def __init__(self, cluster: ControlPlane, namespace: str):
        super().__init__(name=f"watch-{namespace}-jobs", daemon=True)
        self.path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self.server = cluster.server
        self.ctx = ssl.create_default_context(cafile=str(cluster.ca))
        self.ctx.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
        self.version = cluster.get(self.path)["metadata"]["resourceVersion"]
        self.added: list[tuple[str, str]] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                query = urllib.parse.urlencode({"watch": "true", "resourceVersion": self.version,
                                                "allowWatchBookmarks": "true", "timeoutSeconds": "5"})
                request = urllib.request.Request(f"{self.server}{self.path}?{query}", headers={"Accept": "application/json"})
                with urllib.request.urlopen(request, context=self.ctx, timeout=30) as response:
                    for line in response:
                        event = json.loads(line)
                        assert event["type"] != "ERROR", event  # a 410 would mean events were missed
                        meta = event["object"]["metadata"]
                        self.version = meta["resourceVersion"]
                        if event["type"] == "ADDED":
                            self.added.append((meta["name"], meta["uid"]))
        except BaseException as error:  # noqa: BLE001 - reported by names()
            self.error = error

    def names(self) -> list[str]:
        assert self.error is None, f"the watch of {self.path} failed: {self.error!r}"
        return [name for name, _ in self.added]

    def close(self) -> None:
        self.halt.set()
        self.join(10)


@contextlib.contextmanager
def watching(cluster: ControlPlane, namespace: str) -> Iterator[Watch]:
    """A started :class:`Watch` of the namespace's Jobs, closed on exit."""
    watch = Watch(cluster, namespace)
    watch.start()
    try:
        yield watch
    finally:
        watch.close()


# --- one namespace with the chart and the operator -----------------------------------------------


class Lab:
    """One namespace with the chart installed, a store folder, and the operator's launch spec.

    ``start_operator()`` starts another ``oraculum operator`` process (all are stopped by
    :meth:`close`); the rest are the few reads and waits the tests share.
    """

    def __init__(self, cluster: ControlPlane, namespace: str, work: Path, objects: list[dict[str, Any]],
                 store: Path, command: list[str], env: dict[str, str]):
        self.cluster, self.namespace, self.work, self.objects = cluster, namespace, work, objects
        self.store, self.command, self.env = store, command, env
        self.operators: list[OperatorProcess] = []

    def start_operator(self, name: str = "operator") -> OperatorProcess:
        process = OperatorProcess(self.command, self.env, self.work / f"{name}.log", name).start()
        self.operators.append(process)
        return process

    def close(self) -> None:
        for process in self.operators:
            process.stop()

    def logs(self, tail: int = 40) -> str:
        return "\n".join(f"--- {p.name} (last {tail} lines) ---\n" + "\n".join(p.text().splitlines()[-tail:])
                         for p in self.operators)

    # -- the API -------------------------------------------------------------------------------

    def path(self, plural: str, name: str = "") -> str:
        group = {"activelearningexperiments": "/apis/oraculum.dev/v1alpha1", "preprocessingjobs": "/apis/oraculum.dev/v1alpha1",
                 "jobs": "/apis/batch/v1", "deployments": "/apis/apps/v1",
                 "roles": "/apis/rbac.authorization.k8s.io/v1"}.get(plural, "/api/v1")
        return f"{group}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def apply(self, *documents: dict[str, Any]) -> None:
        """``kubectl apply`` as a user would (cluster admin, the namespace of this lab)."""
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump_all(documents))

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.cluster.get(self.path(plural, name)).get("status") or {}

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """``cluster.wait_for``, with the pods and the operators' logs in the failure's message."""
        try:
            return self.cluster.wait_for(predicate, timeout, what, interval=0.3)
        except AssertionError as error:
            raise AssertionError(f"{error}\npods: {self.pod_phases()}\n{self.logs()}") from None

    def wait_phase(self, plural: str, name: str, phase: str, timeout: float) -> dict[str, Any]:
        """The status once ``status.phase`` is ``phase``; fails at once on an unexpected Failed."""
        def reached() -> dict[str, Any] | None:
            status = self.status(plural, name)
            if status.get("phase") == "Failed" != phase:
                raise AssertionError(f"{plural}/{name} Failed: {status.get('message')}\n{self.logs()}")
            return status if status.get("phase") == phase else None

        try:
            return self.cluster.wait_for(reached, timeout, f"{plural}/{name} to be {phase}", interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus: {json.dumps(self.status(plural, name))[:2000]}\n"
                                 f"pods: {self.pod_phases()}\n{self.logs()}") from None

    def jobs(self, **labels: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return self.cluster.get(self.path("jobs"), labelSelector=selector)["items"]

    def pods(self, job: str) -> list[dict[str, Any]]:
        return self.cluster.get(self.path("pods"), labelSelector=f"batch.kubernetes.io/job-name={job}")["items"]

    def pod_phases(self) -> dict[str, str]:
        return {p["metadata"]["name"]: p["status"].get("phase", "?") for p in self.cluster.get(self.path("pods"))["items"]
                if not p["spec"].get("nodeSelector")}

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events about object ``name``, oldest first."""
        items = self.cluster.get(self.path("events"), fieldSelector=f"involvedObject.name={name}")["items"]
        items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [(e["type"], e["reason"], e.get("message", "")) for e in items]


def operator_object(objects: list[dict[str, Any]], kind: str) -> str:
    """The name of the chart's one ``kind`` object of the operator component (its ServiceAccount,
    Deployment, Role)."""
    [name] = [o["metadata"]["name"] for o in objects
              if o["kind"] == kind and o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]
    return name


def prepare_lab(cluster: ControlPlane, namespace: str, work: Path, values: dict[str, Any] | None = None) -> Lab:
    """Install the chart into ``namespace`` and make the operator's launch spec (see the module
    docstring); the settings ConfigMap of the chart points ORACULUM_STORE at ``work/store``."""
    objects = install_chart(cluster, namespace, work, values)
    [settings] = [o for o in objects if o["kind"] == "ConfigMap" and "ORACULUM_STORE" in (o.get("data") or {})]
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    # the one change to an installed object: the store is this folder, not the parked MinIO
    cluster.patch(f"/api/v1/namespaces/{namespace}/configmaps/{settings['metadata']['name']}",
                  {"data": {"ORACULUM_STORE": str(store)}})
    account, deployment = (operator_object(objects, kind) for kind in ("ServiceAccount", "Deployment"))
    kubeconfig = token_kubeconfig(cluster, namespace, account, work / "operator.kubeconfig")
    command, env = operator_launch(cluster, namespace, kubeconfig, work / "operator-home", deployment)
    return Lab(cluster, namespace, work, objects, store, command, env)


# --- timings ------------------------------------------------------------------------------------


class Phases:
    """Wall time of each phase of a test, printed as it ends (``pytest -s`` shows them)."""

    def __init__(self, test: str):
        self.test = test
        self.times: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - began
            self.times.append((phase, seconds))
            print(f"[{self.test}] {phase}: {seconds:.1f}s", flush=True)


