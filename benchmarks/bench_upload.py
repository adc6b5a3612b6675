"""Upload throughput through the API against a plain copy into the store, in the same run.

What the checksummed, resumable path costs: the client hashes each file, sends chunks with their
own SHA-256 (each stored as an object and recorded in the session), and the server re-reads the
parts, hashes the whole file and writes it atomically. The baseline is the least any upload must
do: ``LocalStore.put_file`` of the same files into a local store (an atomic, fsynced copy), in
this process. Both go to local folders on the same disk; the API is ``oraculum serve api`` as a
uvicorn subprocess on 127.0.0.1 (no network beyond loopback).

Workloads: the real LAMOST DR2 tree of ../shared/data (19 files, 2.7 MB: per-file costs
dominate) and one file of random bytes (--mbytes, default 64 MB: per-byte costs dominate; not
spectra, only size matters here). Also timed: the same upload again, when every file is already
there (hashing and one request per file, nothing sent).

    .venv/bin/python benchmarks/bench_upload.py [--mbytes 64] [--chunk-size BYTES]

Writes benchmarks/results/upload.json (figures, ratios, hardware, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hardware import hardware

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "upload.json"
TOKEN = "bench-admin-token-0123456789abcdef"


def baseline(files: list[tuple[Path, str]], target: Path) -> float:
    """Seconds to copy the files into a local store with its atomic, fsynced writes."""
    from oraculum.store import LocalStore

    store = LocalStore(target)
    started = time.perf_counter()
    for path, relative in files:
        store.put_file(f"archive/baseline/{relative}", path)
    return time.perf_counter() - started


def through_api(url: str, source: Path, prefix: str, chunk_size: int | None) -> tuple[float, Any]:
    from oraculum.client import Client

    with Client(url, token=TOKEN) as client:
        started = time.perf_counter()
        report = client.upload(source, prefix, progress=False, chunk_size=chunk_size)
        seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(report.summary())
    return seconds, report


def measure(name: str, source: Path, url: str, work: Path, chunk_size: int | None) -> dict[str, Any]:
    from oraculum.client.upload import walk

    files = [(path, relative) for path, relative, problem in walk([source]) if path is not None and not problem]
    size = sum(path.stat().st_size for path, _ in files)
    copy_seconds = baseline(files, work / f"baseline-{name}")
    api_seconds, report = through_api(url, source, name, chunk_size)
    again_seconds, again = through_api(url, source, name, chunk_size)
    assert again.bytes_sent == 0 and len(again.skipped) == len(files)
    return {
        "files": len(files), "bytes": size, "chunks_per_file_max": -(-max(p.stat().st_size for p, _ in files)
                                                                     // (chunk_size or 2 * 1024 * 1024)),
        "baseline_seconds": round(copy_seconds, 4), "api_seconds": round(api_seconds, 4),
        "again_seconds": round(again_seconds, 4),
        "baseline_mb_per_s": round(size / copy_seconds / 1e6, 2), "api_mb_per_s": round(size / api_seconds / 1e6, 2),
        "api_files_per_s": round(len(files) / api_seconds, 1),
        "api_over_baseline_time": round(api_seconds / copy_seconds, 2),
        "bytes_sent": report.bytes_sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbytes", type=int, default=64, help="Size of the random-bytes file, MB.")
    parser.add_argument("--chunk-size", type=int, default=None, help="Chunk size (default: the API's body limit).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from api_fixtures import ApiProcess

    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as folder:
        work = Path(folder)
        big = work / "random" / "random.bin"
        big.parent.mkdir()
        with open(big, "wb") as handle:
            for _ in range(args.mbytes):
                handle.write(os.urandom(1_000_000))
        env = {"ORACULUM_STORE": str(work / "store"), "ORACULUM_API_TOKENS": f"bench:admin:{TOKEN}",
               "ORACULUM_API_BACKEND": "local", "ORACULUM_REDIS_URL": "", "ORACULUM_AUTH_FILE": "",
               "ORACULUM_CACHE_DIR": str(work / "cache")}
        api = ApiProcess(env, work / "api.log").start()
        try:
            if (SHARED / "lamost-dr2").is_dir():
                results["lamost_dr2_tree"] = measure("dr2", SHARED / "lamost-dr2", api.url, work, args.chunk_size)
            results["random_file"] = measure("random", big.parent, api.url, work, args.chunk_size)
        finally:
            api.stop()
            shutil.rmtree(work / "store", ignore_errors=True)
    document = {
        "benchmark": "upload",
        "description": "Uploads through the API (client -> uvicorn, checksummed chunks stored as objects, whole-file "
                       "SHA-256, atomic write) against LocalStore.put_file of the same files, same disk, same run. "
                       "The random file is random bytes, not spectra.",
        "chunk_size": args.chunk_size or "the API's body limit (2 MiB)",
        "parallel_files": 4,
        **{f"{name}_{figure}": row[figure] for name, row in results.items()
           for figure in ("files", "bytes", "api_mb_per_s", "baseline_mb_per_s", "api_files_per_s", "again_seconds")},
        **{f"{name}_time_ratio_api_vs_baseline": row["api_over_baseline_time"] for name, row in results.items()},
        "results": results,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "hardware": hardware(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"{'workload':16} {'files':>6} {'MB':>8} {'copy MB/s':>10} {'API MB/s':>9} {'API/copy time':>14} {'again s':>8}")
    for name, row in results.items():
        print(f"{name:16} {row['files']:6d} {row['bytes'] / 1e6:8.1f} {row['baseline_mb_per_s']:10.1f} "
              f"{row['api_mb_per_s']:9.1f} {row['api_over_baseline_time']:14.1f} {row['again_seconds']:8.2f}")
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
