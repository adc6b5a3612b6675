"""A "process kubelet": the one stand-in in the real-control-plane test lane. IT STANDS IN FOR KUBELET.

There is no kubelet, no container runtime and no kube-scheduler on the machines that run the
tests. Everything else in the lane is the real thing (etcd, kube-apiserver with RBAC and
admission, kube-controller-manager with the real Job controller and garbage collector), so this
module plays the two missing parts as honestly as a process can:

* **scheduler** (with the ``system:kube-scheduler`` identity): binds each Pending pod that has no
  ``spec.nodeName`` (``schedulerName: default-scheduler``, no scheduling gates) to the node,
  through the ``pods/binding`` subresource, after a simple fit check: ``nodeSelector``, required
  node affinity, ``NoSchedule``/``NoExecute`` taints, and resource requests (cpu, memory,
  ``nvidia.com/gpu``, ...) against the node's allocatable minus the pods already bound. A pod that
  does not fit gets ``PodScheduled=False, reason=Unschedulable`` and stays Pending, as on a real
  cluster.
* **kubelet** (with the ``system:node:<name>`` identity, so the Node authorizer and the
  NodeRestriction admission plugin restrict it exactly as they restrict a kubelet): registers a
  Node (Ready, with allocatable cpu/memory/pods and optionally ``nvidia.com/gpu``), renews its
  Lease in ``kube-node-lease``, and runs each pod bound to it: init containers one after another,
  then every container, each as a LOCAL SUBPROCESS of its ``command`` + ``args`` (the image is
  not used: a container without ``command`` cannot run here and stays Waiting with
  ``CreateContainerConfigError``). It reports real pod status (``Running``, then ``Succeeded`` or
  ``Failed`` with each container's exit code, restarts under ``restartPolicy: OnFailure/Always``,
  ``activeDeadlineSeconds``), so the real Job controller drives Jobs (completions, Indexed Jobs,
  backoffLimit, suspend, podFailurePolicy) from these pods. Graceful deletion works as on a node:
  SIGTERM to the process group, SIGKILL after the grace period (at most 30 s here), then the final
  delete with grace 0.

What a container sees:

* the environment is resolved from the real API as the kubelet resolves it: ``envFrom``
  (ConfigMaps and Secrets, ``prefix``, ``optional``), ``env`` values with ``$(VAR)`` expansion,
  ``valueFrom`` ``configMapKeyRef``, ``secretKeyRef``, ``fieldRef`` (``metadata.name``,
  ``metadata.namespace``, ``metadata.uid``, ``metadata.labels['k']``,
  ``metadata.annotations['k']`` -- so ``JOB_COMPLETION_INDEX``, which the Job controller injects
  from the ``batch.kubernetes.io/job-completion-index`` annotation, works --, ``spec.nodeName``,
  ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``) and ``resourceFieldRef``;
  ``$(VAR)`` in ``command`` and ``args`` is expanded too. Besides: ``KUBERNETES_SERVICE_HOST`` /
  ``_PORT`` (the API server on loopback), ``HOSTNAME`` (the pod's name), ``HOME`` and ``TMPDIR``
  (folders of the pod), and ``PATH``, ``LANG``, ``LC_ALL``, ``TZ``, ``PYTHONPATH``,
  ``VIRTUAL_ENV`` inherited from the process kubelet (more names: ``--inherit-env``), since there
  is no image to take them from.
* **Volumes and mount paths.** Containers are not isolated, so a mount cannot appear at its
  ``mountPath``. Each volume is materialised in a folder of the pod (``configMap``, ``secret``,
  ``projected`` -- including the service-account token, obtained with the TokenRequest API
  bound to the pod --, ``downwardAPI``, ``emptyDir``; ``hostPath`` is used in place; ``subPath``
  is honoured), and the mount paths are REWRITTEN: every occurrence of a ``mountPath`` (as a path
  prefix) in the container's ``command``, ``args``, ``env`` values and ``workingDir`` is replaced
  by the folder that holds that volume, longest mount path first (literals of the pod spec only:
  the process kubelet's own host paths are never rewritten). ``PROCESS_KUBELET_MOUNTS`` (JSON
  ``{mountPath: folder}``) tells a program that needs more. A mount at ``/tmp`` is not rewritten
  (host paths under /tmp, such as pytest's ``tmp_path``, must reach the process unchanged): it
  becomes ``TMPDIR``. When the service-account token is mounted, ``KUBECONFIG`` points at a
  kubeconfig with that token, so in-cluster clients authenticate as the pod's ServiceAccount.
* ``securityContext`` (runAsUser, ...) is ignored: processes run as the user of the process
  kubelet. Probes are not run (a running container is Ready). Resource limits are not enforced.
  ConfigMap and Secret volumes are not refreshed after the container starts.
* Container processes are killed when the process kubelet ends (even by SIGKILL), so a dead test
  session leaves no process behind; on a real node containers outlive a kubelet restart.
* Each container's stdout and stderr go to
  ``<state-dir>/logs/<namespace>_<pod>_<uid>/<container>.log`` (``kubectl logs`` needs a real
  kubelet's server and does not work).

Run as a program (``python process_kubelet.py --help``); ``tests/support/controlplane.py``
starts it with the cluster. Only the standard library and PyYAML are needed.
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("process-kubelet")

GPU_RESOURCE = "nvidia.com/gpu"
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_GRACE_SECONDS = 30


# --------------------------------------------------------------------------------------------
# A minimal Kubernetes API client (standard library only)


class ApiError(Exception):
    """The API server refused a request (also used by ``tests/support/controlplane.py``)."""

    def __init__(self, status: int, body: Any, method: str, path: str):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: {status} {message}")

    @classmethod
    def from_http(cls, error: urllib.error.HTTPError, method: str, path: str) -> "ApiError":
        """The refusal an HTTPError carries, with its Status body parsed when it is JSON."""
        raw = error.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return cls(error.code, parsed, method, path)


class Api:
    """Requests to the API server with the credentials of one kubeconfig (its current context)."""

    def __init__(self, kubeconfig: str | Path):
        import yaml

        self._tmp = tempfile.mkdtemp(prefix="process-kubelet-creds-")
        config = yaml.safe_load(Path(kubeconfig).read_text())
        base = Path(kubeconfig).resolve().parent
        current = config.get("current-context") or config["contexts"][0]["name"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})
        self.server = cluster["server"].rstrip("/")
        self.ctx = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            self.ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            self.ctx.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        self.ca_pem = self._pem(cluster, "certificate-authority", base)
        cert = self._file(user, "client-certificate", base)
        key = self._file(user, "client-key", base)
        if cert and key:
            self.ctx.load_cert_chain(cert, key)
        self.token = user.get("token")

    def _pem(self, section: dict[str, Any], name: str, base: Path) -> str | None:
        if f"{name}-data" in section:
            return base64.b64decode(section[f"{name}-data"]).decode()
        if name in section:
            return (base / section[name]).read_text()
        return None

    def _file(self, section: dict[str, Any], name: str, base: Path) -> str | None:
        if f"{name}-data" in section:
            path = Path(self._tmp) / name
            path.write_bytes(base64.b64decode(section[f"{name}-data"]))
            path.chmod(0o600)
            return str(path)
        return str(base / section[name]) if name in section else None

    def _open(self, method: str, path: str, body: Any, params: dict[str, Any] | None,
              content_type: str, timeout: float):
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", "process-kubelet (stands in for kubelet)")
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, context=self.ctx, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise ApiError.from_http(error, method, path) from None

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        with self._open(method, path, body, params, content_type, timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def patch(self, path: str, body: Any, strategic: bool = True) -> Any:
        kind = "application/strategic-merge-patch+json" if strategic else "application/merge-patch+json"
        return self.request("PATCH", path, body, content_type=kind)

    def watch(self, path: str, params: dict[str, Any], timeout: float) -> Iterator[dict[str, Any]]:
        with self._open("GET", path, None, {**params, "watch": "true"}, "", timeout) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)


def informer(api: Api, path: str, params: dict[str, Any], handle: Callable[[str, dict[str, Any]], None],
             stop: threading.Event, resync: float = 20.0, name: str = "") -> None:
    """List, then watch from the list's resourceVersion; relist on 410 Gone, errors, or every resync.

    ``handle(kind, obj)`` gets ``SYNC`` for each listed object, then the watch's ``ADDED``,
    ``MODIFIED`` and ``DELETED``; after a relist, ``GONE`` for objects no longer listed.
    """
    known: dict[str, dict[str, Any]] = {}
    while not stop.is_set():
        try:
            listing = api.get(path, **params)
            current = {o["metadata"]["uid"]: o for o in listing.get("items", [])}
            for uid, obj in known.items():
                if uid not in current:
                    handle("GONE", obj)
            known = current
            for obj in current.values():
                handle("SYNC", obj)
            version = listing["metadata"]["resourceVersion"]
            deadline = time.monotonic() + resync
            while not stop.is_set() and time.monotonic() < deadline:
                watch_params = {**params, "resourceVersion": version, "allowWatchBookmarks": "true",
                                "timeoutSeconds": str(max(1, int(deadline - time.monotonic())))}
                for event in api.watch(path, watch_params, timeout=resync + 30):
                    kind, obj = event.get("type"), event.get("object", {})
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            deadline = 0  # relist
                            break
                        raise RuntimeError(f"watch {path}: {obj}")
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind == "BOOKMARK":
                        continue
                    uid = obj["metadata"]["uid"]
                    if kind == "DELETED":
                        known.pop(uid, None)
                    else:
                        known[uid] = obj
                    handle(kind, obj)
                    if stop.is_set():
                        return
        except Exception as error:  # noqa: BLE001 - keep the loop alive like a real informer
            if stop.is_set():
                return
            log.warning("%s informer on %s: %s; relisting", name, path, error)
            stop.wait(1.0)


# --------------------------------------------------------------------------------------------
# Quantities, times, expansion


_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity as a float (cpu in cores, memory in bytes)."""
    text = str(value).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``,
    undefined references are left as they are."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def rewrite_paths(text: str, mounts: list[tuple[str, str]]) -> str:
    """Replace each mount path (as a path prefix, the longest that matches) by the folder that holds
    it, in one pass (a replacement is never rewritten again). ``/`` and ``/tmp`` are never rewritten:
    host paths under /tmp (pytest's tmp_path) must reach the process unchanged; a mount at /tmp
    becomes TMPDIR instead."""
    table = {m: h for m, h in mounts if m not in ("/", "/tmp")}
    if not table:
        return text
    alternatives = "|".join(re.escape(m) for m in sorted(table, key=len, reverse=True))
    pattern = r"(?<![\w.\-/])(" + alternatives + r")(?=/|$|[\s:;,'\"=])"
    return re.sub(pattern, lambda m: table[m.group(1)], text)


_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_value(pod: dict[str, Any], path: str, node_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    match = _FIELD.fullmatch(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": node_ip, "status.hostIP": node_ip, "status.podIPs": node_ip, "status.hostIPs": node_ip,
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path}")
    return simple[path]


def resource_value(pod: dict[str, Any], ref: dict[str, Any], node_allocatable: dict[str, str]) -> str:
    container = next((c for c in pod["spec"]["containers"] if c["name"] == ref.get("containerName")),
                     pod["spec"]["containers"][0])
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(ref.get("divisor", "1"))
    value = quantity(raw) / divisor
    return str(int(-(-value // 1)))  # the kubelet rounds up


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    """The pod's effective requests: the sum over containers, at least the largest init container."""
    def of(container: dict[str, Any]) -> dict[str, float]:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {k: quantity(v) for k, v in merged.items()}

    total: dict[str, float] = {}
    for container in pod["spec"].get("containers", []):
        for k, v in of(container).items():
            total[k] = total.get(k, 0.0) + v
    for container in pod["spec"].get("initContainers", []) or []:
        for k, v in of(container).items():
            total[k] = max(total.get(k, 0.0), v)
    for k, v in (pod["spec"].get("overhead") or {}).items():
        total[k] = total.get(k, 0.0) + quantity(v)
    return total


def tolerates(pod: dict[str, Any], taint: dict[str, Any]) -> bool:
    for tol in pod["spec"].get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint["key"]:
                return True
        elif tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_fits(pod: dict[str, Any], node: dict[str, Any], used: dict[str, float]) -> str | None:
    """None when the pod fits the node, else why not (the scheduler's message)."""
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod["spec"].get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    required = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_expression_matches(e, labels) for e in t.get("matchExpressions") or [])
                         for t in terms):
        return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    for taint in node["spec"].get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return (f"0/1 nodes are available: 1 node(s) had untolerated taint "
                    f"{{{taint['key']}: {taint.get('value', '')}}}.")
    allocatable = {k: quantity(v) for k, v in (node["status"].get("allocatable") or {}).items()}
    requests = pod_requests(pod)
    requests["pods"] = 1
    short = [k for k, v in requests.items() if v > 0 and used.get(k, 0.0) + v > allocatable.get(k, 0.0) + 1e-9]
    if short:
        return "0/1 nodes are available: " + ", ".join(f"1 Insufficient {k}" for k in sorted(short)) + "."
    return None


# --------------------------------------------------------------------------------------------
# Running one pod


def _die_with_parent() -> None:
    """In a container's process before exec: SIGKILL if the process kubelet dies (even by SIGKILL).

    (PR_SET_PDEATHSIG follows the thread that started the process; that thread waits for it.)
    """
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class SetupError(Exception):
    """The pod cannot start yet (missing ConfigMap, unsupported volume): reason and message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ContainerRun:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name = spec["name"]
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.started_at = ""

    def status(self, image: str) -> dict[str, Any]:
        running = "running" in self.state
        status = {"name": self.name, "image": image, "imageID": "", "ready": running, "started": running,
                  "restartCount": self.restarts, "state": self.state, "lastState": self.last_state}
        if self.process is not None:
            status["containerID"] = f"process://{self.process.pid}"
        return status


class PodWorker(threading.Thread):
    def __init__(self, kubelet: "ProcessKubelet", pod: dict[str, Any]):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}"
        self.dir = kubelet.state_dir / "pods" / self.uid
        self.log_dir = kubelet.state_dir / "logs" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.stop_requested = threading.Event()  # kill the containers (deleted, deadline, shutdown)
        self.deleted = threading.Event()  # the pod has a deletionTimestamp: end with the final delete
        self.grace = MAX_GRACE_SECONDS
        self.lock = threading.Lock()
        self.init_runs = [ContainerRun(c) for c in pod["spec"].get("initContainers") or []]
        self.runs = [ContainerRun(c) for c in pod["spec"]["containers"]]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now()
        self.initialized = False
        self.finished = threading.Event()

    # -- status ---------------------------------------------------------------------------------

    def report(self) -> None:
        with self.lock:
            images = {c["name"]: c.get("image", "") for c in self.pod["spec"].get("initContainers") or []}
            images.update({c["name"]: c.get("image", "") for c in self.pod["spec"]["containers"]})
            ready = self.phase == "Running" and all("running" in r.state for r in self.runs)
            ts = now()
            not_ready = None if ready else "PodCompleted" if self.phase == "Succeeded" else "ContainersNotReady"
            # a strategic merge patch merges conditions by type: reason None removes an old reason
            conditions = [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": self.start_time},
                {"type": "Initialized", "status": "True" if self.initialized else "False", "lastTransitionTime": ts,
                 "reason": None if self.initialized else "ContainersNotInitialized"},
                {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": ts,
                 "reason": not_ready},
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ts, "reason": not_ready},
            ]
            status: dict[str, Any] = {
                "phase": self.phase, "conditions": conditions, "startTime": self.start_time,
                "hostIP": self.kubelet.node_ip, "hostIPs": [{"ip": self.kubelet.node_ip}],
                "podIP": self.kubelet.node_ip, "podIPs": [{"ip": self.kubelet.node_ip}],
                "containerStatuses": [r.status(images[r.name]) for r in self.runs],
            }
            if self.init_runs:
                status["initContainerStatuses"] = [r.status(images[r.name]) for r in self.init_runs]
            if self.reason:
                status["reason"] = self.reason
            if self.message:
                status["message"] = self.message
        try:
            self.kubelet.api.patch(self.path + "/status", {"status": status})
        except ApiError as error:
            if error.status != 404:
                log.warning("status of %s/%s: %s", self.namespace, self.pod_name, error)
        except Exception as error:  # noqa: BLE001
            log.warning("status of %s/%s: %s", self.namespace, self.pod_name, error)

    # -- setup ----------------------------------------------------------------------------------

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kubelet.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def _source_data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = self._get("configmaps" if kind == "configMap" else "secrets", name)
        if obj is None:
            if optional:
                return None
            noun = "configmap" if kind == "configMap" else "secret"
            raise SetupError("CreateContainerConfigError", f'{noun} "{name}" not found')
        if kind == "configMap":
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        else:
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        return data

    def _write_items(self, target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None,
                     mode: int | None, what: str) -> None:
        if items:
            for item in items:
                if item["key"] not in data:
                    raise SetupError("FailedMount", f'{what}: key "{item["key"]}" not found')
                self._write(target / item["path"], data[item["key"]], item.get("mode", mode))
        else:
            for key, value in data.items():
                self._write(target / key, value, mode)

    @staticmethod
    def _write(path: Path, value: bytes, mode: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value)
        path.chmod(mode if mode is not None else 0o644)

    def _token(self, audience: str | None, seconds: int) -> str:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {"expirationSeconds": seconds,
                                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                                   "name": self.pod_name, "uid": self.uid}}
        if audience:
            spec["audiences"] = [audience]
        result = self.kubelet.api.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return result["status"]["token"]

    def _downward(self, target: Path, items: list[dict[str, Any]], mode: int | None) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.kubelet.node_ip)
            else:
                value = resource_value(self.pod, item["resourceFieldRef"], self.kubelet.allocatable)
            self._write(target / item["path"], value.encode(), item.get("mode", mode))

    def materialise_volumes(self) -> dict[str, Path]:
        folders: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            target = self.dir / "volumes" / name
            if "hostPath" in volume:
                host = Path(volume["hostPath"]["path"])
                if volume["hostPath"].get("type") == "DirectoryOrCreate":
                    host.mkdir(parents=True, exist_ok=True)
                folders[name] = host
                continue
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            folders[name] = target
            if "emptyDir" in volume:
                continue
            if "configMap" in volume or "secret" in volume:
                kind = "configMap" if "configMap" in volume else "secret"
                source = volume[kind]
                source_name = source["name"] if kind == "configMap" else source["secretName"]
                try:
                    data = self._source_data(kind, source_name, bool(source.get("optional")))
                except SetupError as error:
                    raise SetupError("FailedMount", f'volume "{name}": {error}') from None
                self._write_items(target, data or {}, source.get("items"), source.get("defaultMode"), name)
            elif "downwardAPI" in volume:
                self._downward(target, volume["downwardAPI"].get("items") or [],
                               volume["downwardAPI"].get("defaultMode"))
            elif "projected" in volume:
                mode = volume["projected"].get("defaultMode")
                for source in volume["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        sat = source["serviceAccountToken"]
                        token = self._token(sat.get("audience"), int(sat.get("expirationSeconds", 3607)))
                        self._write(target / sat["path"], token.encode(), mode if mode is not None else 0o600)
                    elif "downwardAPI" in source:
                        self._downward(target, source["downwardAPI"].get("items") or [], mode)
                    elif "configMap" in source or "secret" in source:
                        kind = "configMap" if "configMap" in source else "secret"
                        ref = source[kind]
                        try:
                            data = self._source_data(kind, ref["name"], bool(ref.get("optional")))
                        except SetupError as error:
                            raise SetupError("FailedMount", f'volume "{name}": {error}') from None
                        self._write_items(target, data or {}, ref.get("items"), mode, name)
                    else:
                        raise SetupError("FailedMount", f'volume "{name}": projected source {sorted(source)} '
                                         "is not supported by the process kubelet")
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise SetupError("FailedMount", f'volume "{name}" of type {kinds} is not supported by the '
                                 "process kubelet (configMap, secret, projected, downwardAPI, emptyDir, hostPath)")
        return folders

    def container_env(self, container: dict[str, Any]) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The environment the container starts with, and its mount paths -> folders."""
        env: dict[str, str] = {}
        for name in self.kubelet.inherit_env:
            if name in os.environ:
                env[name] = os.environ[name]
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update({"HOME": str(home), "HOSTNAME": self.pod_name,
                    "KUBERNETES_SERVICE_HOST": self.kubelet.api_host,
                    "KUBERNETES_SERVICE_PORT": str(self.kubelet.api_port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(self.kubelet.api_port)})
        mounts: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            folder = self.folders.get(mount["name"])
            if folder is None:
                raise SetupError("CreateContainerConfigError", f'volume "{mount["name"]}" not found')
            if mount.get("subPath"):
                folder = folder / mount["subPath"]
            mounts.append((mount["mountPath"].rstrip("/") or "/", str(folder)))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        env["TMPDIR"] = next((h for m, h in mounts if m == "/tmp"), str(self.dir / "tmp"))
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        token_dir = next((h for m, h in mounts if m == SERVICE_ACCOUNT_MOUNT), None)
        if token_dir and (Path(token_dir) / "token").exists():
            env["KUBECONFIG"] = str(self._pod_kubeconfig(Path(token_dir)))
        env["PROCESS_KUBELET_MOUNTS"] = json.dumps(dict(mounts))

        for source in container.get("envFrom") or []:
            kind = "configMap" if "configMapRef" in source else "secret"
            ref = source["configMapRef" if kind == "configMap" else "secretRef"]
            data = self._source_data(kind, ref["name"], bool(ref.get("optional")))
            for key, value in (data or {}).items():
                name = source.get("prefix", "") + key
                if name and "=" not in name:
                    env[name] = rewrite_paths(value.decode(errors="replace"), mounts)
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(rewrite_paths(var.get("value", ""), mounts), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[name] = field_value(self.pod, source["fieldRef"]["fieldPath"], self.kubelet.node_ip)
            elif "resourceFieldRef" in source:
                env[name] = resource_value(self.pod, source["resourceFieldRef"], self.kubelet.allocatable)
            else:
                kind = "configMap" if "configMapKeyRef" in source else "secret"
                ref = source["configMapKeyRef" if kind == "configMap" else "secretKeyRef"]
                data = self._source_data(kind, ref["name"], bool(ref.get("optional")))
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    noun = "configmap" if kind == "configMap" else "secret"
                    raise SetupError("CreateContainerConfigError",
                                     f'couldn\'t find key {ref["key"]} in {noun} {self.namespace}/{ref["name"]}')
                env[name] = rewrite_paths(data[ref["key"]].decode(errors="replace"), mounts)
        return env, mounts

    def _pod_kubeconfig(self, token_dir: Path) -> Path:
        import yaml

        ca = token_dir / "ca.crt"
        cluster: dict[str, Any] = {"server": self.kubelet.api.server}
        if ca.exists():
            cluster["certificate-authority"] = str(ca)
        elif self.kubelet.api.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.kubelet.api.ca_pem.encode()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": cluster}],
            "users": [{"name": "pod", "user": {"token": (token_dir / "token").read_text().strip()}}],
            "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "pod",
                                                             "namespace": self.namespace}}],
        }
        path = self.dir / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def command_line(self, container: dict[str, Any], env: dict[str, str],
                     mounts: list[tuple[str, str]]) -> tuple[list[str], str]:
        if not container.get("command"):
            raise SetupError("CreateContainerConfigError",
                             f'container "{container["name"]}" has no command: the process kubelet runs '
                             "command + args as a local process and has no image to take an ENTRYPOINT from")
        # rewrite the spec's literals first, then expand: values taken from the environment are
        # already rewritten (or are the process kubelet's own host paths) and stay as they are
        argv = [expand(rewrite_paths(a, mounts), env)
                for a in list(container["command"]) + list(container.get("args") or [])]
        workdir = container.get("workingDir")
        cwd = rewrite_paths(workdir, mounts) if workdir else str(self.dir / "work")
        Path(cwd).mkdir(parents=True, exist_ok=True)
        return argv, cwd

    # -- running --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.exception("pod %s/%s", self.namespace, self.pod_name)
        finally:
            self.finished.set()
            self.kubelet.worker_finished(self)

    def _prepare(self) -> list[tuple[ContainerRun, list[str], str, dict[str, str]]] | None:
        """Set up volumes and each container's command; retry like the kubelet until it works."""
        reported = None
        while not self.stop_requested.is_set():
            try:
                self.folders = self.materialise_volumes()
                plans = []
                for run in self.init_runs + self.runs:
                    env, mounts = self.container_env(run.spec)
                    argv, cwd = self.command_line(run.spec, env, mounts)
                    plans.append((run, argv, cwd, env))
                return plans
            except (SetupError, ApiError, ValueError) as error:
                reason = getattr(error, "reason", "CreateContainerConfigError")
                if (reason, str(error)) != reported:
                    reported = (reason, str(error))
                    log.info("pod %s/%s cannot start: %s", self.namespace, self.pod_name, error)
                    with self.lock:
                        for run in self.init_runs + self.runs:
                            run.state = {"waiting": {"reason": reason, "message": str(error)}}
                    self.report()
                self.stop_requested.wait(2.0)
        return None

    def _deadline(self) -> float | None:
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        return time.monotonic() + int(seconds) if seconds is not None else None

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        deadline = self._deadline()
        self.report()
        plans = self._prepare()
        if plans is None:
            if self.deleted.is_set() and not self.kubelet.stop.is_set():
                self._finish_deleted()
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        init_plans = plans[:len(self.init_runs)]
        main_plans = plans[len(self.init_runs):]
        for plan in init_plans:
            with self.lock:
                self.phase = "Pending"
            code = self._run_container(plan, "Always" if policy == "Always" else policy, deadline, init=True)
            if code != 0:
                self._terminal("Failed")
                return
        with self.lock:
            self.initialized = True
            self.phase = "Running"
        threads = [threading.Thread(target=self._run_container, args=(plan, policy, deadline), daemon=True)
                   for plan in main_plans]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = [run.state.get("terminated", {}).get("exitCode", 1) for run in self.runs]
        ok = self.reason != "DeadlineExceeded" and all(c == 0 for c in codes)
        self._terminal("Succeeded" if ok else "Failed")

    def _terminal(self, phase: str) -> None:
        if self.kubelet.stop.is_set():  # the process kubelet is shutting down, not the pod
            return
        with self.lock:
            self.phase = phase
        self.report()
        log.info("pod %s/%s %s", self.namespace, self.pod_name, phase)
        if self.deleted.is_set():
            self._finish_deleted()

    def _finish_deleted(self) -> None:
        """The final delete a kubelet makes once the containers of a deleted pod have stopped."""
        try:
            self.kubelet.api.request("DELETE", self.path, {
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("final delete of %s/%s: %s", self.namespace, self.pod_name, error)

    def _run_container(self, plan: tuple[ContainerRun, list[str], str, dict[str, str]], policy: str,
                       deadline: float | None, init: bool = False) -> int:
        run, argv, cwd, env = plan
        backoff = 1.0
        while True:
            if self.stop_requested.is_set():
                return run.state.get("terminated", {}).get("exitCode", 137)
            code = self._run_once(run, argv, cwd, env, deadline)
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if init and code == 0:
                return 0
            if not restart or self.stop_requested.is_set() or self.reason == "DeadlineExceeded":
                return code
            self.stop_requested.wait(backoff)
            backoff = min(backoff * 2, 10.0)
            with self.lock:
                run.restarts += 1
                run.last_state = run.state

    def _run_once(self, run: ContainerRun, argv: list[str], cwd: str, env: dict[str, str],
                  deadline: float | None) -> int:
        log_path = self.log_dir / f"{run.name}.log"
        started = now()
        with open(log_path, "ab") as out:
            try:
                process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           preexec_fn=_die_with_parent)
            except OSError as error:
                out.write(f"process kubelet: cannot start {argv!r}: {error}\n".encode())
                with self.lock:
                    run.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(error),
                                                "startedAt": started, "finishedAt": now()}}
                self.report()
                return 128
        self.kubelet.track_process(process.pid)
        with self.lock:
            run.process = process
            run.state = {"running": {"startedAt": started}}
        self.report()
        code = None
        while code is None:
            try:
                code = process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline and self.reason != "DeadlineExceeded":
                    with self.lock:
                        self.reason, self.message = "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
                    self.stop_requested.set()
                if self.stop_requested.is_set():
                    code = self._kill(process)
        self.kubelet.untrack_process(process.pid)
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N
        with self.lock:
            run.state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                        "startedAt": started, "finishedAt": now(),
                                        "containerID": f"process://{process.pid}"}}
        self.report()
        return exit_code

    def _kill(self, process: subprocess.Popen[bytes]) -> int:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return process.wait(timeout=max(0, min(self.grace, MAX_GRACE_SECONDS)))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return process.wait()

    def request_stop(self, grace: int | None) -> None:
        if grace is not None:
            self.grace = grace
        self.deleted.set()
        self.stop_requested.set()


# --------------------------------------------------------------------------------------------
# The node


class ProcessKubelet:
    def __init__(self, api: Api, binder_api: Api | None, node_name: str, state_dir: Path,
                 capacity: dict[str, str], labels: dict[str, str], inherit_env: list[str]):
        self.api = api
        self.binder_api = binder_api
        self.node_name = node_name
        self.state_dir = state_dir
        self.capacity = capacity
        self.allocatable = dict(capacity)
        self.labels = labels
        self.inherit_env = inherit_env
        parsed = urllib.parse.urlsplit(api.server)
        self.api_host = parsed.hostname or "127.0.0.1"
        self.api_port = parsed.port or 443
        self.node_ip = "127.0.0.1"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.bound: dict[str, dict[str, float]] = {}  # uid -> requests of non-terminal pods on the node
        self.node: dict[str, Any] | None = None
        self.unschedulable_reported: dict[str, str] = {}
        (state_dir / "processes").mkdir(parents=True, exist_ok=True)

    # -- processes (so that `controlplane stop` can end any a killed kubelet left behind) --------

    def track_process(self, pid: int) -> None:
        try:
            start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except OSError:
            start = ""
        (self.state_dir / "processes" / str(pid)).write_text(start)

    def untrack_process(self, pid: int) -> None:
        (self.state_dir / "processes" / str(pid)).unlink(missing_ok=True)

    # -- node -----------------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        ts = now()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "lastHeartbeatTime": ts,
             "lastTransitionTime": ts, "message": message}
            for kind, reason, message in [
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available")]
        ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": ts,
              "lastTransitionTime": ts, "message": "process kubelet (stands in for kubelet) is posting ready status"}]
        return {
            "capacity": self.capacity, "allocatable": self.allocatable, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name).hex,
                         "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name)),
                         "bootID": str(uuid.uuid4()), "kernelVersion": os.uname().release,
                         "osImage": "process kubelet (test stand-in for kubelet)",
                         "containerRuntimeVersion": "process://0", "kubeletVersion": "v0.0.0-process-kubelet",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }

    def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": {
                    "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "process-kubelet",
                    **self.labels}},
                "spec": {}, "status": self.node_status()}
        try:
            self.node = self.api.request("POST", "/api/v1/nodes", node)
            log.info("registered node %s", self.node_name)
        except ApiError as error:
            if error.status != 409:
                raise
            self.node = self.api.get(f"/api/v1/nodes/{self.node_name}")
        self.node = self.api.patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self.node_status()})

    def heartbeat(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        last_status = time.monotonic()
        while not self.stop.is_set():
            try:
                try:
                    self.api.patch(path, {"spec": {"renewTime": micro_now(), "holderIdentity": self.node_name}},
                                   strategic=False)
                except ApiError as error:
                    if error.status != 404:
                        raise
                    owner = {"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                             "uid": (self.node or {}).get("metadata", {}).get("uid", "")}
                    self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.node_name, "ownerReferences": [owner] if owner["uid"] else []},
                        "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                                 "renewTime": micro_now()}})
                if time.monotonic() - last_status > 60:
                    self.node = self.api.patch(f"/api/v1/nodes/{self.node_name}/status",
                                               {"status": self.node_status()})
                    last_status = time.monotonic()
                else:
                    self.node = self.api.get(f"/api/v1/nodes/{self.node_name}")
            except Exception as error:  # noqa: BLE001
                log.warning("heartbeat: %s", error)
            self.stop.wait(10.0)

    # -- scheduler ------------------------------------------------------------------------------

    def on_unbound_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if kind in ("DELETED", "GONE") or meta.get("deletionTimestamp") or spec.get("nodeName"):
            self.unschedulable_reported.pop(meta["uid"], None)
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler" or spec.get("schedulingGates"):
            return
        if pod.get("status", {}).get("phase") not in (None, "Pending"):
            return
        if self.node is None:
            return
        for fresh in (False, True):
            if fresh:  # the node may have changed (taints, labels): look again before refusing
                try:
                    self.node = (self.binder_api or self.api).get(f"/api/v1/nodes/{self.node_name}")
                except Exception as error:  # noqa: BLE001
                    log.warning("node %s: %s", self.node_name, error)
            with self.lock:
                used: dict[str, float] = {}
                for requests in self.bound.values():
                    for k, v in list(requests.items()) + [("pods", 1.0)]:
                        used[k] = used.get(k, 0.0) + v
                try:
                    problem = node_fits(pod, self.node, used)
                except ValueError as error:
                    problem = f"0/1 nodes are available: {error}"
                if problem is None:
                    self.bound[meta["uid"]] = pod_requests(pod)
                    break
        api = self.binder_api or self.api
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if problem is None:
            try:
                api.request("POST", path + "/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"], "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}})
                log.info("bound %s/%s to %s", meta["namespace"], meta["name"], self.node_name)
            except ApiError as error:
                with self.lock:
                    self.bound.pop(meta["uid"], None)
                if error.status not in (404, 409):
                    log.warning("binding %s/%s: %s", meta["namespace"], meta["name"], error)
            return
        if self.unschedulable_reported.get(meta["uid"]) == problem:
            return
        self.unschedulable_reported[meta["uid"]] = problem
        try:
            api.patch(path + "/status", {"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": problem,
                "lastTransitionTime": now()}]}})
        except ApiError as error:
            log.warning("unschedulable %s/%s: %s", meta["namespace"], meta["name"], error)

    # -- kubelet --------------------------------------------------------------------------------

    def on_node_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        phase = pod.get("status", {}).get("phase", "Pending")
        with self.lock:
            worker = self.workers.get(uid)
            if kind in ("DELETED", "GONE"):
                self.bound.pop(uid, None)
                if worker is not None:
                    worker.request_stop(0)
                    self.workers.pop(uid, None)
                    if worker.finished.is_set():
                        self._cleanup(worker)
                return
            if phase in ("Succeeded", "Failed"):
                self.bound.pop(uid, None)
            else:
                self.bound.setdefault(uid, pod_requests(pod))
            if worker is None:
                if phase in ("Succeeded", "Failed"):
                    if meta.get("deletionTimestamp"):
                        self._delete_now(pod)
                    return
                if meta.get("deletionTimestamp"):
                    self._delete_now(pod)
                    return
                if phase == "Running":  # started by an earlier process kubelet: its processes are gone
                    self._report_lost(pod)
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
                return
            worker.pod = pod
        if meta.get("deletionTimestamp") and not worker.deleted.is_set():
            worker.request_stop(meta.get("deletionGracePeriodSeconds"))

    def _delete_now(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", {
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}})
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("delete %s/%s: %s", meta["namespace"], meta["name"], error)

    def _report_lost(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                     "started": False, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                              "message": "The container could not be located when the pod was "
                                                         "terminated (the process kubelet restarted)"}}}
                    for c in pod["spec"]["containers"]]
        try:
            self.api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                           {"status": {"phase": "Failed", "containerStatuses": statuses}})
        except ApiError as error:
            log.warning("lost pod %s/%s: %s", meta["namespace"], meta["name"], error)

    def worker_finished(self, worker: PodWorker) -> None:
        with self.lock:
            self.bound.pop(worker.uid, None)
            if self.workers.get(worker.uid) is not worker:
                self._cleanup(worker)

    @staticmethod
    def _cleanup(worker: PodWorker) -> None:
        shutil.rmtree(worker.dir, ignore_errors=True)

    # -- main -----------------------------------------------------------------------------------

    def run(self) -> None:
        threads = [threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)]
        threads.append(threading.Thread(target=informer, name="kubelet", daemon=True, kwargs={
            "api": self.api, "path": "/api/v1/pods", "handle": self.on_node_pod, "stop": self.stop,
            "params": {"fieldSelector": f"spec.nodeName={self.node_name}"}, "name": "kubelet"}))
        threads.append(threading.Thread(target=informer, name="scheduler", daemon=True, kwargs={
            "api": self.binder_api or self.api, "path": "/api/v1/pods", "handle": self.on_unbound_pod,
            "stop": self.stop, "params": {"fieldSelector": "spec.nodeName=,status.phase=Pending"},
            "name": "scheduler", "resync": 5.0}))
        for thread in threads:
            thread.start()
        self.stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.grace = min(worker.grace, 5)
            worker.stop_requested.set()
        for worker in workers:
            worker.finished.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring.")
    parser.add_argument("--kubeconfig", required=True, help="the node's kubeconfig (system:node:<name>)")
    parser.add_argument("--binder-kubeconfig", help="the scheduler's kubeconfig (system:kube-scheduler); "
                        "default: --kubeconfig")
    parser.add_argument("--node-name", default="process-kubelet")
    parser.add_argument("--state-dir", required=True, type=Path, help="pod folders and container logs")
    parser.add_argument("--cpu", default="16")
    parser.add_argument("--memory", default="64Gi")
    parser.add_argument("--pods", default="110")
    parser.add_argument("--gpus", type=int, default=0, help=f"{GPU_RESOURCE} to advertise")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--inherit-env", action="append", default=[], metavar="NAME",
                        help="another variable that containers inherit from this process")
    parser.add_argument("--ready-file", type=Path, help="written once the node is registered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    capacity = {"cpu": args.cpu, "memory": args.memory, "pods": args.pods, "ephemeral-storage": "100Gi"}
    if args.gpus:
        capacity[GPU_RESOURCE] = str(args.gpus)
    labels = dict(item.split("=", 1) for item in args.label)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    kubelet = ProcessKubelet(
        Api(args.kubeconfig), Api(args.binder_kubeconfig) if args.binder_kubeconfig else None,
        args.node_name, args.state_dir, capacity, labels, [*INHERITED_ENV, *args.inherit_env])

    def terminate(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping the pods' processes", signum)
        kubelet.stop.set()

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack into the log
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    for attempt in range(60):
        try:
            kubelet.register()
            break
        except Exception as error:  # noqa: BLE001 - the API server may still be starting
            if attempt == 59:
                raise
            log.info("registering the node: %s", error)
            time.sleep(1)
    if args.ready_file:
        args.ready_file.write_text(socket.gethostname())
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
