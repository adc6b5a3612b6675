"""API gateway under load: label writes, batch reads and spectrum fetches from 50 concurrent clients.

Everything is real and on this machine: ``oraculum serve api`` (uvicorn, one process) in a
subprocess, a real ``redis-server``, and a real S3 endpoint (the moto server, its own process) as
the object store. The world is synthetic: 600 synthetic LAMOST-format spectra preprocessed into a
dataset, and a cold-start iteration (a random batch of 100) of an experiment awaiting labels.

Scenarios (closed loop: each client sends its next request when the previous one is answered):

* ``mixed``: 50 clients for 30 s, 25 oracles labelling their own items of the batch (PUT, each
  label an event written to S3 before the answer) and 25 dashboards reading the batch (GET);
* ``flux`` / ``raw``: 50 clients fetching random spectra (preprocessed flux on the grid; the raw
  spectrum read from the archive file in S3, decimated to 2000 points), 15 s each;
* ``paced``: 50 oracles each labelling once a second (a person's pace), 15 s: latency when the
  server is not saturated.

Load generator, API, moto and Redis share the machine's cores, so the figures are for the whole
stack on one box. Prints a table and writes benchmarks/results/api.json with the hardware.

    .venv/bin/python benchmarks/bench_api.py [--seconds 30] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "api.json"
EXPERIMENT = "bench"
DATASET = "bench-pool"
TARGETS = {"label_write_p99_ms": 50.0, "spectrum_fetch_p95_ms": 20.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def build_world(root: Path, count: int) -> None:
    """A dataset and a cold-start iteration (no TensorFlow needed), in a local folder."""
    from oraculum.ingest import run_preprocess
    from oraculum.iteration import run_iteration
    from oraculum.manifests import ExperimentSpec, parse_manifest
    from oraculum.preprocessing import PreprocessingParameters
    from oraculum.registry import LocalRegistry, status_key
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


def summarise(latencies: list[float], errors: dict[str, int], seconds: float) -> dict[str, Any]:
    values = np.array(latencies) * 1000.0
    out: dict[str, Any] = {"requests": int(values.size), "throughput_per_s": round(values.size / seconds, 1),
                           "errors": errors}
    if values.size:
        out.update({f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)})
        out["max_ms"] = round(float(values.max()), 2)
    return out


async def run_clients(workers: list[Any], seconds: float) -> float:
    stop = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(worker(stop) for worker in workers))
    return time.monotonic() - started


async def scenario(base: str, kind: str, clients: int, seconds: float, batch: list[int], spectra: int) -> dict[str, dict[str, Any]]:
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    results: dict[str, tuple[list[float], dict[str, int]]] = {}

    def bucket(name: str) -> tuple[list[float], dict[str, int]]:
        return results.setdefault(name, ([], {}))

    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        async def timed(name: str, method: str, url: str, token: str, **kwargs: Any) -> None:
            latencies, errors = bucket(name)
            started = time.perf_counter()
            try:
                response = await client.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
                code = response.status_code
            except httpx.HTTPError as error:
                code = type(error).__name__  # type: ignore[assignment]
            elapsed = time.perf_counter() - started
            if isinstance(code, int) and code < 400:
                latencies.append(elapsed)
            else:
                errors[str(code)] = errors.get(str(code), 0) + 1

        def labeller(n: int, paced: bool = False) -> Any:
            mine = batch[n::clients]
            rng = random.Random(n)

            async def work(stop: float) -> None:
                i = 0
                while time.monotonic() < stop:
                    index = mine[i % len(mine)] if mine else batch[n % len(batch)]
                    label = "emission" if rng.random() < 0.3 else "absorption"
                    sent = time.perf_counter()
                    await timed("label write", "PUT", f"/api/v1/experiments/{EXPERIMENT}/iterations/0/labels/{index}",
                                f"labeller{n}-token-0123456789abcdef", json={"label": label})
                    i += 1
                    if paced:  # a person's pace: one label a second
                        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - sent)))
            return work

        def reader(n: int) -> Any:
            async def work(stop: float) -> None:
                while time.monotonic() < stop:
                    await timed("batch read", "GET", f"/api/v1/experiments/{EXPERIMENT}/batch", "viewer-token-0123456789abcdef")
            return work

        def fetcher(n: int, raw: bool) -> Any:
            rng = random.Random(1000 + n)

            async def work(stop: float) -> None:
                while time.monotonic() < stop:
                    index = rng.randrange(spectra)
                    url = f"/api/v1/datasets/{DATASET}/spectra/{index}" + ("/raw?max_points=2000" if raw else "/flux")
                    await timed("spectrum raw" if raw else "spectrum flux", "GET", url, "viewer-token-0123456789abcdef")
            return work

        if kind == "mixed":
            workers = [labeller(n) for n in range(clients // 2)] + [reader(n) for n in range(clients - clients // 2)]
        elif kind == "paced":
            workers = [labeller(n, paced=True) for n in range(clients)]
        else:
            workers = [fetcher(n, raw=kind == "raw") for n in range(clients)]
        elapsed = await run_clients(workers, seconds)
    return {name: {"scenario": kind, "clients": clients, "seconds": round(elapsed, 1), **summarise(lat, err, elapsed)}
            for name, (lat, err) in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="Duration of the mixed scenario (s).")
    parser.add_argument("--short", type=float, default=15.0, help="Duration of each other scenario (s).")
    parser.add_argument("--clients", type=int, default=50, help="Concurrent clients.")
    parser.add_argument("--spectra", type=int, default=600, help="Synthetic spectra in the pool.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Where to write the results JSON.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oraculum-bench-api-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print(f"building the synthetic world ({args.spectra} spectra, a cold-start batch of 100) ...", flush=True)
        build_world(work / "world", args.spectra)
        s3_port, redis_port, api_port = free_port(), free_port(), free_port()
        moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(moto)
        redis_binary = shutil.which("redis-server")
        if redis_binary is None:
            sys.exit("redis-server is missing: run scripts/test-services")
        redis = subprocess.Popen([redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
        processes.append(redis)
        wait_port(s3_port)
        wait_port(redis_port)
        from oraculum.settings import Settings

        endpoint = f"http://127.0.0.1:{s3_port}"
        settings = Settings(store="s3://oraculum", s3_endpoint=endpoint, s3_access_key="bench", s3_secret_key="bench",
                            s3_region="us-east-1")
        print(f"uploading to the S3 server: {upload(work / 'world', settings)} objects", flush=True)
        tokens = ",".join([f"labeller{n}:oracle:labeller{n}-token-0123456789abcdef" for n in range(args.clients)]
                          + ["vera:viewer:viewer-token-0123456789abcdef"])
        env = {**os.environ, "ORACULUM_STORE": settings.store, "ORACULUM_S3_ENDPOINT": endpoint,
               "ORACULUM_S3_ACCESS_KEY": "bench", "ORACULUM_S3_SECRET_KEY": "bench", "ORACULUM_S3_REGION": "us-east-1",
               "ORACULUM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "ORACULUM_API_TOKENS": tokens,
               "ORACULUM_API_BACKEND": "local", "ORACULUM_CACHE_DIR": str(work / "cache")}
        api = subprocess.Popen([sys.executable, "-m", "oraculum.cli", "serve", "api", "--port", str(api_port),
                                "--log-level", "warning"], env=env, cwd=str(ROOT))
        processes.append(api)
        wait_port(api_port)
        base = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            viewer = {"Authorization": "Bearer viewer-token-0123456789abcdef"}
            batch = [item["index"] for item in client.get(f"/api/v1/experiments/{EXPERIMENT}/batch", headers=viewer).json()["items"]]
            count = client.get(f"/api/v1/datasets/{DATASET}", headers=viewer).json()["index"]["count"]
            for index in range(0, count, max(1, count // 50)):  # warm: shard copies in the cache, archive client
                client.get(f"/api/v1/datasets/{DATASET}/spectra/{index}/flux", headers=viewer)
        rows: dict[str, dict[str, Any]] = {}
        for kind, seconds in (("mixed", args.seconds), ("flux", args.short), ("raw", args.short), ("paced", args.short)):
            print(f"scenario {kind}: {args.clients} clients for {seconds:.0f} s ...", flush=True)
            found = asyncio.run(scenario(base, kind, args.clients, seconds, batch, count))
            for name, row in found.items():
                rows[f"{name} ({kind})"] = row
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(work, ignore_errors=True)

    header = f"{'what':34} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'n':>7}  errors"
    print("\n" + header + "\n" + "-" * len(header))
    for name, row in rows.items():
        print(f"{name:34} {row['throughput_per_s']:>8} {row.get('p50_ms', '-'):>8} {row.get('p95_ms', '-'):>8} "
              f"{row.get('p99_ms', '-'):>8} {row.get('max_ms', '-'):>8} {row['requests']:>7}  {row['errors'] or ''}")
    write_p99 = rows.get("label write (mixed)", {}).get("p99_ms")
    fetch_p95 = rows.get("spectrum flux (flux)", {}).get("p95_ms")
    verdict = {
        "label_write_p99_ms": write_p99, "label_write_p99_target_met": write_p99 is not None and write_p99 < TARGETS["label_write_p99_ms"],
        "paced_label_write_p99_ms": rows.get("label write (paced)", {}).get("p99_ms"),
        "spectrum_fetch_p95_ms": fetch_p95, "spectrum_fetch_p95_target_met": fetch_p95 is not None and fetch_p95 < TARGETS["spectrum_fetch_p95_ms"],
    }
    print(f"\ntargets: label write p99 < 50 ms under {args.clients} clients: {write_p99} ms "
          f"({'met' if verdict['label_write_p99_target_met'] else 'NOT met'}); "
          f"spectrum fetch p95 < 20 ms: {fetch_p95} ms ({'met' if verdict['spectrum_fetch_p95_target_met'] else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "api", "description": __doc__.split("\n\n")[0], "synthetic_data": True,
        "clients": args.clients, "results": rows, "targets": TARGETS, "verdict": verdict, "hardware": hardware(),
        "load_average": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
