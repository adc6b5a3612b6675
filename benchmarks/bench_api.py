"""API gateway under load: label writes, batch reads and spectrum fetches from 50 concurrent clients.

Everything is real and on this machine: ``oraculum serve api`` (uvicorn, ``--workers N``) in a
subprocess, a real ``redis-server``, and a real S3 endpoint (the moto server, its own process) as
the object store. The world is synthetic: 600 synthetic LAMOST-format spectra preprocessed into a
dataset, and a cold-start iteration (a random batch of 100) of an experiment awaiting labels.

Scenarios, each client on its own keep-alive connection (benchmarks/loadgen.py: one asyncio
process, h11, no threads; its own CPU time is recorded):

* closed loop (saturation: each client sends its next request when the previous one is
  answered; latency is then clients / throughput, Little's law):
  ``mixed``: 25 oracles labelling their own items of the batch (PUT, each label an event written
  to S3 before the answer) and 25 dashboards reading the batch (GET), 30 s;
  ``flux`` / ``raw``: 50 clients fetching random spectra (preprocessed flux on the grid; the raw
  spectrum read from the archive file in S3, decimated to 2000 points), 15 s each;
* paced (a person's pace: each client a Poisson process of one request a second, latency from the
  scheduled send time, 30 s): ``paced`` label writes by 50 oracles, ``paced-flux`` spectrum
  fetches by 50 viewers.

The targets (label write p99 < 50 ms, spectrum fetch p95 < 20 ms) are judged on the paced
scenarios: 50 people labelling at once is already far more than a research group, and a closed
loop of 50 clients measures throughput, not what one person waits. Closed-loop latencies are
reported too (and judged against the same bounds as ``saturated_*``), never hidden.

moto runs under benchmarks/moto_nogc.py, with its cyclic garbage collector off: its full
collections otherwise paused every S3 request for 20-100 ms a few times a minute, a cost of the
stand-in, not of MinIO (``--stock-moto`` measures plain ``moto_server``; moto's memory at the end
is recorded). The API itself freezes its start-up objects out of its collector's reach
(:mod:`oraculum.api.collector`), which cut its own full collections from about 110 ms to 10-20 ms.

Baselines in the same run: bare S3 PUTs of a label-event-sized object from the same minio client
(one at a time, and paced like the oracles) are the floor of a durable label write; ``--baseline
REF`` also runs every scenario against the API of an older commit (exported with ``git archive``,
nothing in the checkout changes), and ``--workers 1,2`` against one and two worker processes.
Each server has its own bucket and Redis database; each scenario runs in slices (``--slices``)
against every server in turn, the order rotating, so the machine's other load falls on all alike. API,
Redis, moto and the load generator share the machine's cores: the CPU time each used per request
is recorded, and the load average with each row.

    .venv/bin/python benchmarks/bench_api.py [--seconds 30] [--clients 50] [--workers 1,2] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import loadgen  # noqa: E402
from api_fixtures import RedisServer, free_port, stop_process, wait_port  # noqa: E402  (the tests' own)
from hardware import hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "api.json"
EXPERIMENT = "bench"
DATASET = "bench-pool"
TARGETS = {"paced_label_write_p99_ms": 50.0, "paced_spectrum_fetch_p95_ms": 20.0,
           "saturated_label_write_p99_ms": 50.0, "saturated_spectrum_fetch_p95_ms": 20.0}
VIEWER = "viewer-token-0123456789abcdef"
#: Bytes of each bare PUT of the floor: a one-item label event as the API writes it is 250-300 B.
EVENT_BYTES = 330


def build_world(root: Path, count: int) -> None:
    """A dataset and a cold-start iteration (no TensorFlow needed), in a local folder."""
    from oraculum.ingest.pipeline import run_preprocess
    from oraculum.learning.iteration import run_iteration
    from oraculum.manifests import ExperimentSpec, parse_manifest
    from oraculum.spectra.preprocessing import PreprocessingParameters
    from oraculum.control.registry import LocalRegistry, status_key
    from oraculum.settings import Settings
    from oraculum.store import LocalStore

    settings = Settings(store=str(root))
    run_preprocess(f"synthetic:{count}?seed=11", DATASET, PreprocessingParameters(), settings, workers=2)
    document = {"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment", "metadata": {"name": EXPERIMENT},
                "spec": {"dataset": DATASET, "classes": [{"name": "absorption", "hotkey": "1"},
                                                         {"name": "emission", "hotkey": "2", "target": True}],
                         "model": {"preset": "tiny"}, "acquisition": {"batchSize": 100, "initialBatchSize": 100},
                         "estimation": {"size": 10}, "oracle": {"type": "human"}}}
    store = LocalStore(root)
    run_iteration(EXPERIMENT, ExperimentSpec.model_validate(document["spec"]), 0, store, settings)
    LocalRegistry(store).apply(parse_manifest(document), managed_by="api")
    store.put_bytes(status_key("activelearningexperiments", EXPERIMENT), json.dumps(
        {"status": {"phase": "AwaitingLabels", "iteration": 0}, "generation": 1}).encode())


def upload(source: Path, settings: Any) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from oraculum.store import LocalStore, open_store

    local, remote = LocalStore(source), open_store(settings=settings)
    infos = list(local.list(""))
    remote.put_bytes(infos[0].key, local.get_bytes(infos[0].key))  # creates the bucket once
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda info: remote.put_bytes(info.key, local.get_bytes(info.key)), infos[1:]))
    return len(infos)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    family, total, frontier = {pid}, 0.0, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    for member in family:
        total += stats.get(member, (0, 0.0))[1]
    return total


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (MiB), or None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)}


@dataclass
class Measured:
    """What one scenario gave against one server, summed over its slices."""

    tally: loadgen.Tally = field(default_factory=loadgen.Tally)
    elapsed: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)


class Floor:
    """The floor of a durable label write: bare PUTs of an event-sized object to the same S3 server
    with the same minio client the API uses (one at a time, and paced like the oracles of the paced
    scenario, from a thread pool as the API does), and bare Redis PINGs."""

    def __init__(self, settings: Any, redis_url: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from oraculum.store import open_store

        self.store = open_store(settings=settings)
        self.redis_url = redis_url
        self.body = b"x" * EVENT_BYTES
        self.pool = ThreadPoolExecutor(16)
        for n in range(20):  # warm: connection, bucket check
            self.store.put_bytes(f"floor/{n}.json", self.body)

    def one_at_a_time(self, count: int = 300) -> dict[str, Any]:
        import redis

        puts = []
        for n in range(count):
            started = time.perf_counter()
            self.store.put_bytes(f"floor/{n % 50}.json", self.body)
            puts.append(time.perf_counter() - started)
        client = redis.Redis.from_url(self.redis_url)
        pings = []
        for _ in range(count):
            started = time.perf_counter()
            client.ping()
            pings.append(time.perf_counter() - started)
        client.close()
        return {"bare S3 PUT": {"requests": count, "bytes": EVENT_BYTES, **percentiles(puts)},
                "bare Redis PING": {"requests": count, **percentiles(pings)}}

    def paced_slice(self, clients: int, rate: float, seconds: float, seed: int, into: Measured) -> None:
        """PUTs paced like the oracles (the same Poisson schedule as the API's slice), added to ``into``."""

        async def put(number: int, n: int) -> tuple[str, int | str]:
            await asyncio.get_running_loop().run_in_executor(
                self.pool, self.store.put_bytes, f"floor/{seed}-{number}-{n}.json", self.body)
            return "bare S3 PUT", 200

        elapsed, cpu = loadgen.run(loadgen.poisson(clients, seconds, rate, put, into.tally, seed=seed))
        into.elapsed += elapsed
        into.cpu["load generator and S3 client"] = into.cpu.get("load generator and S3 client", 0.0) + cpu
        into.load.append(round(os.getloadavg()[0], 2))

    def close(self) -> None:
        self.pool.shutdown()


class Api:
    """``oraculum serve api`` in a subprocess (optionally from another source tree)."""

    def __init__(self, env: dict[str, str], workers: int, tree: Path | None) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "oraculum.cli.main", "serve", "api", "--port", str(self.port),
                   "--log-level", "warning", "--workers", str(workers)]
        if tree is not None:  # the older commit's code: its own oraculum package first on the path
            env = {**env, "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(command, env=env, cwd=str(tree or ROOT))
        self.batch: list[int] = []  # the batch's indices and the pool's size, once warmed up
        self.count = 0
        wait_port(self.port, timeout=60.0, process=self.process)

    def stop(self) -> None:
        stop_process(self.process, timeout=20)


def export_tree(ref: str, target: Path) -> Path:
    """``git archive ref`` into ``target`` (read-only for the checkout), with the package mapping
    of pyproject.toml (api/ -> oraculum/api, ...) as symlinks, so ``python -m oraculum.cli.main`` runs it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    for name in ("api", "operator", "dashboard"):
        if (target / name).is_dir() and not (target / "oraculum" / name).exists():
            (target / "oraculum" / name).symlink_to(target / name, target_is_directory=True)
    return target


def makers(kind: str, clients: int, batch: list[int], spectra: int) -> list[loadgen.Maker]:
    """One request maker per client of a scenario."""

    def auth(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}"), ("content-type", "application/json")]

    def labeller(n: int, writers: int) -> loadgen.Maker:
        mine = batch[n::writers] or [batch[n % len(batch)]]
        rng = random.Random(n)
        headers = auth(f"labeller{n}-token-0123456789abcdef")

        def make(_: int, i: int) -> tuple[str, loadgen.Request]:
            label = "emission" if rng.random() < 0.3 else "absorption"
            return "label write", ("PUT", f"/api/v1/experiments/{EXPERIMENT}/iterations/0/labels/{mine[i % len(mine)]}",
                                   headers, json.dumps({"label": label}).encode())
        return make

    def reader(_: int) -> loadgen.Maker:
        request = ("GET", f"/api/v1/experiments/{EXPERIMENT}/batch", auth(VIEWER), b"")
        return lambda _n, _i: ("batch read", request)

    def fetcher(n: int, raw: bool) -> loadgen.Maker:
        rng = random.Random(1000 + n)
        headers = auth(VIEWER)

        def make(_: int, __: int) -> tuple[str, loadgen.Request]:
            index = rng.randrange(spectra)
            path = f"/api/v1/datasets/{DATASET}/spectra/{index}" + ("/raw?max_points=2000" if raw else "/flux")
            return ("spectrum raw" if raw else "spectrum flux"), ("GET", path, headers, b"")
        return make

    if kind == "mixed":
        writers = clients // 2
        return [labeller(n, writers) for n in range(writers)] + [reader(n) for n in range(clients - writers)]
    if kind == "paced":
        return [labeller(n, clients) for n in range(clients)]
    return [fetcher(n, raw=kind == "raw") for n in range(clients)]


SCENARIOS = (("mixed", "closed"), ("flux", "closed"), ("raw", "closed"), ("paced", "paced"), ("paced-flux", "paced"))


def run_slice(kind: str, mode: str, api: "Api", pids: dict[str, int], args: argparse.Namespace, seconds: float,
              seed: int, into: Measured) -> None:
    """One slice of a scenario against one server, added to ``into`` (latencies, time, CPU per process)."""
    clients = makers("flux" if kind == "paced-flux" else kind, args.clients, api.batch, api.count)
    pids = {"api": api.process.pid, **pids}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if mode == "closed":
        coroutine = loadgen.closed("127.0.0.1", api.port, clients, seconds, into.tally)
    else:
        coroutine = loadgen.paced("127.0.0.1", api.port, clients, seconds, args.rate, into.tally, seed=seed)
    elapsed, loadgen_cpu = loadgen.run(coroutine)
    into.elapsed += elapsed
    for name, pid in pids.items():
        into.cpu[name] = into.cpu.get(name, 0.0) + cpu_seconds(pid) - before[name]
    into.cpu["load generator"] = into.cpu.get("load generator", 0.0) + loadgen_cpu
    into.load.append(round(os.getloadavg()[0], 2))


def rows_of(kind: str, mode: str, found: Measured, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """A row per kind of request of a scenario, with the CPU each process used per request."""
    tally, elapsed = found.tally, found.elapsed
    total = sum(len(v) for v in tally.latencies.values()) + sum(sum(e.values()) for e in tally.errors.values())
    return {f"{name} ({kind})": {
        "scenario": kind, "mode": mode, "clients": args.clients, "seconds": round(elapsed, 1),
        **({"rate_per_client_per_s": args.rate} if mode == "paced" else {}),
        **loadgen.summary(latencies, tally.errors.get(name, {}), elapsed),
        "cpu_ms_per_request": {k: round(v * 1000 / max(total, 1), 3) for k, v in found.cpu.items()},
        "cpu_busy_fraction_of_machine": round(sum(found.cpu.values()) / (elapsed * (os.cpu_count() or 1)), 3),
        "load_average_1min_per_slice": found.load,
    } for name, latencies in tally.latencies.items()}


@contextmanager
def services(work: Path, stock_moto: bool) -> Iterator[tuple[str, int, dict[str, int]]]:
    """The moto S3 server and redis-server: (S3 endpoint, Redis port, their pids). Unless
    ``stock_moto``, moto runs under benchmarks/moto_nogc.py (it says why)."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        s3_port = free_port()
        launcher = ([str(Path(sys.executable).parent / "moto_server")] if stock_moto
                    else [sys.executable, str(ROOT / "benchmarks" / "moto_nogc.py")])
        moto = subprocess.Popen([*launcher, "-H", "127.0.0.1", "-p", str(s3_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(moto)
        redis = RedisServer(work)  # the tests' own: free port, no persistence
        try:
            redis.start()
        finally:
            if redis.process is not None:
                processes.append(redis.process)
        wait_port(s3_port, timeout=60.0, process=moto)
        yield f"http://127.0.0.1:{s3_port}", redis.port, {"moto": moto.pid, "redis": processes[-1].pid}
    finally:
        for process in reversed(processes):
            stop_process(process)


def start_server(label: str, tree: Path | None, bucket: str, redis_db: int, endpoint: str, redis_port: int,
                 world: Path, work: Path, args: argparse.Namespace, workers: int) -> "Api":
    """Upload the world to a fresh bucket and start an API on it (its own Redis db), warmed up."""
    import httpx

    from oraculum.settings import Settings

    settings = Settings(store=f"s3://{bucket}", s3_endpoint=endpoint, s3_access_key="bench", s3_secret_key="bench",
                        s3_region="us-east-1")
    print(f"{label}: uploading to the S3 server: {upload(world, settings)} objects", flush=True)
    tokens = ",".join([f"labeller{n}:oracle:labeller{n}-token-0123456789abcdef" for n in range(args.clients)]
                      + [f"vera:viewer:{VIEWER}"])
    env = {**os.environ, "ORACULUM_STORE": settings.store, "ORACULUM_S3_ENDPOINT": endpoint,
           "ORACULUM_S3_ACCESS_KEY": "bench", "ORACULUM_S3_SECRET_KEY": "bench", "ORACULUM_S3_REGION": "us-east-1",
           "ORACULUM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/{redis_db}", "ORACULUM_API_TOKENS": tokens,
           "ORACULUM_API_BACKEND": "local", "ORACULUM_CACHE_DIR": str(work / f"cache-{bucket}")}
    api = Api(env, workers, tree)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=30) as client:
            viewer = {"Authorization": f"Bearer {VIEWER}"}
            api.batch = [item["index"] for item in
                         client.get(f"/api/v1/experiments/{EXPERIMENT}/batch", headers=viewer).json()["items"]]
            api.count = client.get(f"/api/v1/datasets/{DATASET}", headers=viewer).json()["index"]["count"]
            for _ in range(2 * workers):  # warm every worker: shard copies in the cache, archive client
                for index in range(0, api.count, max(1, api.count // 50)):
                    client.get(f"/api/v1/datasets/{DATASET}/spectra/{index}/flux", headers=viewer)
    except BaseException:
        api.stop()
        raise
    return api


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    header = (f"{'what':30} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'n':>6}  "
              f"{'CPU ms/req api moto redis gen':>30}  errors")
    print(f"\n{title}\n{header}\n" + "-" * len(header))
    for name, row in rows.items():
        cpu = row["cpu_ms_per_request"]
        shares = " ".join(f"{cpu.get(k, 0):.2f}" for k in ("api", "moto", "redis", "load generator"))
        print(f"{name:30} {row['throughput_per_s']:>7} {row.get('p50_ms', '-'):>8} {row.get('p95_ms', '-'):>8} "
              f"{row.get('p99_ms', '-'):>8} {row.get('max_ms', '-'):>8} {row['requests']:>6}  {shares:>30}  "
              f"{row['errors'] or ''}")


def slug(row: str) -> str:
    """A results-row name as part of a JSON key: 'label write (paced)' -> 'label_write_paced'."""
    return row.replace(" ", "_").replace("(", "").replace(")", "").replace("-", "_")


def comparisons(rows: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]], suffix: str) -> dict[str, float | None]:
    """Ratios of ``rows`` against ``other``: latency speed-ups (other / rows) and throughput ratios."""
    out: dict[str, float | None] = {}
    for row, key in (("label write (paced)", "p99_ms"), ("label write (paced)", "p50_ms"),
                     ("spectrum flux (paced-flux)", "p95_ms"), ("label write (mixed)", "p99_ms"),
                     ("spectrum flux (flux)", "p95_ms")):
        out[f"speedup_{slug(row)}_{key}_{suffix}"] = ratio(other.get(row, {}).get(key), rows.get(row, {}).get(key))
    for row in ("label write (mixed)", "batch read (mixed)", "spectrum flux (flux)", "spectrum raw (raw)"):
        out[f"throughput_ratio_{slug(row)}_{suffix}"] = ratio(rows.get(row, {}).get("throughput_per_s"),
                                                             other.get(row, {}).get("throughput_per_s"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="Duration of the mixed and paced scenarios (s).")
    parser.add_argument("--short", type=float, default=15.0, help="Duration of each other scenario (s).")
    parser.add_argument("--clients", type=int, default=50, help="Concurrent clients.")
    parser.add_argument("--rate", type=float, default=1.0, help="Requests per second per client when paced.")
    parser.add_argument("--workers", default="1", metavar="N[,N...]",
                        help="API worker processes (above 1 shares Redis); several (e.g. 1,2) are measured one after "
                             "the other in the same run, the first one is the result.")
    parser.add_argument("--slices", type=int, default=3,
                        help="Each scenario runs in this many slices, alternating between the servers measured.")
    parser.add_argument("--spectra", type=int, default=600, help="Synthetic spectra in the pool.")
    parser.add_argument("--baseline", default=None, metavar="REF",
                        help="Also measure the API of this git commit (e.g. HEAD) in the same run, for ratios.")
    parser.add_argument("--stock-moto", action="store_true",
                        help="Run plain moto_server, with its cyclic garbage collector (benchmarks/moto_nogc.py says why "
                             "it is off by default).")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where to write the results JSON.")
    args = parser.parse_args()
    try:
        worker_counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: give worker counts like 1 or 1,2")
    if not worker_counts or min(worker_counts) < 1:
        parser.error(f"--workers {args.workers!r}: worker counts must be 1 or more")
    if args.slices < 1:
        parser.error("--slices must be 1 or more")

    load_start = [round(v, 2) for v in os.getloadavg()]
    floors, measured = run_all(args, worker_counts)
    write_results(args, worker_counts, floors, measured, load_start)


def run_all(args: argparse.Namespace, worker_counts: list[int],
            ) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """Build the world, start moto, Redis and every server, run every scenario: (floor, rows per server)."""
    work = Path(tempfile.mkdtemp(prefix="oraculum-bench-api-"))
    measured: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        print(f"building the synthetic world ({args.spectra} spectra, a cold-start batch of 100) ...", flush=True)
        build_world(work / "world", args.spectra)
        with services(work, args.stock_moto) as (endpoint, redis_port, pids):
            from oraculum.settings import Settings

            print("floor: bare S3 PUTs and Redis PINGs, one at a time ...", flush=True)
            bare = Floor(Settings(store="s3://floor", s3_endpoint=endpoint, s3_access_key="bench", s3_secret_key="bench",
                                  s3_region="us-east-1"), f"redis://127.0.0.1:{redis_port}/15")
            floors = bare.one_at_a_time()
            floor_slices = Measured()
            plan: list[tuple[str, Path | None, int]] = []
            if args.baseline:
                plan.append((f"baseline {args.baseline}, {worker_counts[0]} worker(s)",
                             export_tree(args.baseline, work / "baseline-tree"), worker_counts[0]))
            plan += [(f"this tree, {n} worker(s)", None, n) for n in worker_counts]
            servers: dict[str, Api] = {}
            try:
                for number, (label, tree, workers) in enumerate(plan):  # each on its own bucket and Redis db
                    servers[label] = start_server(label, tree, f"bench-{number}", number, endpoint, redis_port,
                                                  work / "world", work, args, workers)
                    measured[label] = {}
                # each scenario runs in slices against every server in turn, the order rotating, so a
                # change in the machine's other load falls on all of them alike
                for step, (kind, mode) in enumerate(SCENARIOS):
                    seconds = args.seconds if kind in ("mixed", "paced") else args.short
                    print(f"  scenario {kind} ({mode}): {args.clients} clients, {seconds:.0f} s per server in "
                          f"{args.slices} slices ...", flush=True)
                    found = {label: Measured() for label in servers}
                    for part in range(args.slices):
                        turn = step + part
                        seed = step * 1000 + part
                        for label in list(servers)[turn % len(servers):] + list(servers)[:turn % len(servers)]:
                            run_slice(kind, mode, servers[label], pids, args, seconds / args.slices, seed, found[label])
                        if kind == "paced":  # the floor, on the same schedule, between the servers' slices
                            bare.paced_slice(args.clients, args.rate, seconds / args.slices, seed, floor_slices)
                    for label, result in found.items():
                        measured[label].update(rows_of(kind, mode, result, args))
                floors["bare S3 PUT (paced)"] = {
                    "clients": args.clients, "rate_per_client_per_s": args.rate, "bytes": EVENT_BYTES,
                    **loadgen.summary(floor_slices.tally.latencies.get("bare S3 PUT", []),
                                      floor_slices.tally.errors.get("bare S3 PUT", {}), floor_slices.elapsed),
                    "load_average_1min_per_slice": floor_slices.load}
                floors["moto_rss_mib"] = rss_mib(pids["moto"])
            finally:
                bare.close()
                for api in servers.values():
                    api.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return floors, measured


def write_results(args: argparse.Namespace, worker_counts: list[int], floors: dict[str, Any],
                  measured: dict[str, dict[str, dict[str, Any]]], load_start: list[float]) -> None:
    """Print the tables and the targets; write the results JSON with ratios, hardware and load."""
    moto_rss = floors.pop("moto_rss_mib", None)
    paced_floor = floors["bare S3 PUT (paced)"]
    print(f"\nfloor: bare S3 PUT ({EVENT_BYTES} B) one at a time p50 {floors['bare S3 PUT']['p50_ms']} ms, "
          f"p99 {floors['bare S3 PUT']['p99_ms']} ms; paced like the oracles p50 {paced_floor.get('p50_ms')} ms, "
          f"p99 {paced_floor.get('p99_ms')} ms; bare Redis PING p50 {floors['bare Redis PING']['p50_ms']} ms")
    for label, found in measured.items():
        print_table(label, found)
    primary = f"this tree, {worker_counts[0]} worker(s)"
    rows = measured[primary]

    def get(row: str, key: str) -> float | None:
        return rows.get(row, {}).get(key)

    verdict: dict[str, Any] = {
        "paced_label_write_p99_ms": get("label write (paced)", "p99_ms"),
        "paced_spectrum_fetch_p95_ms": get("spectrum flux (paced-flux)", "p95_ms"),
        "saturated_label_write_p99_ms": get("label write (mixed)", "p99_ms"),
        "saturated_spectrum_fetch_p95_ms": get("spectrum flux (flux)", "p95_ms"),
    }
    for name, bound in TARGETS.items():
        verdict[f"{name[:-3]}_target_met"] = verdict[name] is not None and verdict[name] < bound
    print(f"\ntargets ({primary}; judged on the paced scenarios, saturated = closed loop, for the record):")
    for name, bound in TARGETS.items():
        met = verdict[f"{name[:-3]}_target_met"]
        print(f"  {name}: {verdict[name]} (< {bound}: {'met' if met else 'NOT met'})")
    result: dict[str, Any] = {
        "benchmark": "api", "description": __doc__.split("\n\n")[0], "synthetic_data": True,
        "command": " ".join(["benchmarks/bench_api.py", *sys.argv[1:]]),
        "clients": args.clients, "workers": worker_counts[0], "paced_rate_per_client_per_s": args.rate,
        "results": rows, "targets": TARGETS, "verdict": verdict,
        "targets_judged_on": "paced scenarios (50 people at a person's pace); saturated_* = closed loop, recorded",
        "floor": floors,
        "paced_label_write_p50_vs_bare_put_p50": ratio(get("label write (paced)", "p50_ms"),
                                                       floors["bare S3 PUT"]["p50_ms"]),
        "paced_label_write_p99_vs_paced_bare_put_p99": ratio(get("label write (paced)", "p99_ms"),
                                                             paced_floor.get("p99_ms")),
        "s3_server": ("moto_server, stock" if args.stock_moto else
                      "moto_server via benchmarks/moto_nogc.py: its cyclic garbage collector off (its full collections "
                      "paused it 20-100 ms; MinIO, in production, is a Go server)"),
        "moto_rss_mib": moto_rss,
        "load_generator": "benchmarks/loadgen.py: one asyncio process (uvloop), h11, one keep-alive connection per "
                          "client; its CPU per request is in each row (cpu_ms_per_request)",
        "other_servers": {label: found for label, found in measured.items() if label != primary},
        "hardware": hardware(), "load_average_start": load_start, "load_average": [round(v, 2) for v in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for label, found in measured.items():
        if label.startswith("baseline"):
            result["baseline_ref"] = args.baseline
            result.update(comparisons(rows, found, "vs_baseline"))
        elif label != primary:
            workers = label.split(", ")[1].split(" ")[0]
            result.update(comparisons(found, rows, f"{workers}_workers_vs_{worker_counts[0]}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
