"""Ingestion throughput with 1 and 2 workers, on real and on synthetic spectra, and the dataset
iterator's flux-only read against the full one, all in one run.

* real: every FITS file of ../shared/data (LAMOST low and medium resolution, Ondřejov tables and
  images: all the formats there), replicated by hard links to --real-files files (skipped when
  the folder is absent);
* synthetic: `synthetic:N` (--synthetic, default 10,000 LAMOST-format files, generated once into
  the store before anything is timed).

Each is ingested (read, preprocess, write the HDF5 shard and the index: `run_preprocess`, one
shard, as `oraculum preprocess` makes for up to 20,000 files) with 1 worker (the baseline), then
with 2 workers in each pool start method: fork (what `auto` picks in a process with one thread),
forkserver (the heavy modules preloaded once), thread, and spawn (a fresh interpreter per worker,
as before). Every run is a fresh process, so the cost of starting a pool counts as it does for
`oraculum preprocess`. Reported: files/s, the speed-up over 1 worker, CPU ms per file (this
process plus its workers; a fork server's own import is not in it), the load average around each
run, and whether every run made the same dataset. Then, on the synthetic dataset, the time to
iterate over it reading ids, metadata and flux (what `iter_batches()` always did) against the flux
alone (`iter_batches(ids=False, meta=False)`), interleaved, median of --repeats.

    .venv/bin/python benchmarks/bench_ingest.py [--real-files 3000] [--synthetic 10000]

Writes benchmarks/results/ingest.json. Files are page-cached on local disk. The machine may be
shared: the load average is recorded with every run, and a run on a loaded machine says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hardware import hardware

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: (workers, start method) of each run; the first is the baseline.
CONFIGURATIONS = [(1, "auto"), (2, "fork"), (2, "forkserver"), (2, "thread"), (2, "spawn")]
TARGET_SPEEDUP = 1.6


def real_files() -> list[Path]:
    return sorted(p for p in SHARED.rglob("*") if p.is_file() and p.name.endswith(FITS_SUFFIXES))


def replicate(files: list[Path], count: int, target: Path) -> None:
    for i in range(count):
        source = files[i % len(files)]
        folder = target / f"copy{i // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{i:07d}-{source.name}"
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)


def one_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One ingestion, in this (fresh) process: what `--one` runs."""
    from oraculum.ingest.pipeline import run_preprocess
    from oraculum.settings import Settings
    from oraculum.spectra.preprocessing import PreprocessingParameters

    load_before = os.getloadavg()[0]
    report = run_preprocess(spec["source"], spec["dataset"], PreprocessingParameters(), Settings(store=spec["store"]),
                            workers=spec["workers"], start_method=spec["method"])
    assert report.index is not None
    pool = report.pool
    return {
        "data": spec["data"], "workers": spec["workers"], "method": pool.method if pool else "serial",
        "processes": pool.processes if pool else 1, "chunks": pool.chunks if pool else 0,
        "preloaded": pool.preloaded if pool else None, "files": report.files, "stored": report.index.count,
        "rejected": report.index.rejected, "seconds": report.seconds, "files_per_s": report.files / report.seconds,
        "cpu_s": report.cpu_seconds, "cpu_ms_per_file": 1000 * report.cpu_seconds / report.files,
        "load_average_1min": load_before, "load_average_after": os.getloadavg()[0], "checksum": report.index.checksum,
    }


def run_fresh(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"run {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(data: str, source: str, store: Path, shared_store: bool) -> list[dict[str, Any]]:
    rows = []
    for workers, method in CONFIGURATIONS:
        where = store if shared_store else store / f"{workers}-{method}"
        rows.append(run_fresh({"data": data, "source": source, "store": str(where), "dataset": f"bench-{workers}-{method}",
                               "workers": workers, "method": method}))
        row = rows[-1]
        print(f"  {data:>9} {row['workers']} worker(s) {row['method']:>10}: {row['files_per_s']:8.0f} files/s, "
              f"{row['cpu_ms_per_file']:6.3f} CPU ms/file, load {row['load_average_1min']:.2f}", flush=True)
    base = rows[0]
    for row in rows:
        row["speedup"] = row["files_per_s"] / base["files_per_s"]
        row["cpu_per_file_vs_1_worker"] = row["cpu_ms_per_file"] / base["cpu_ms_per_file"]
    return rows


def iterator(store: Path, dataset: str, repeats: int) -> dict[str, Any]:
    """Seconds to read the whole dataset: everything (ids, metadata, flux) against the flux alone."""
    from oraculum.spectra.datasets import Dataset
    from oraculum.store import LocalStore

    ds = Dataset.open(LocalStore(store), dataset)
    ways = {"full": {}, "flux_only": {"ids": False, "meta": False}, "ids_only": {"flux": False, "meta": False}}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, options in ways.items():
            started = time.perf_counter()
            rows = sum(len(batch) for batch in ds.iter_batches(**options))
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"spectra": rows, "points": ds.grid.points, "repeats": repeats, "median_seconds": medians,
            "full_vs_flux_only": medians["full"] / medians["flux_only"],
            "spectra_per_s": {name: rows / seconds for name, seconds in medians.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-files", type=int, default=3000, help="real files, replicated (default 3000)")
    parser.add_argument("--synthetic", type=int, default=10_000, help="synthetic files (default 10000)")
    parser.add_argument("--repeats", type=int, default=7, help="iterator passes per way (default 7)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return 0

    cores = len(os.sched_getaffinity(0))
    load_start = list(os.getloadavg())
    print(f"{hardware()['cpu']}, {cores} cores; load average at the start {load_start[0]:.2f}, {load_start[1]:.2f}, "
          f"{load_start[2]:.2f}", flush=True)
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"hardware": hardware(), "load_average_start": load_start}
    with tempfile.TemporaryDirectory(prefix="oraculum-bench-") as tmp:
        files = real_files()
        if files:
            archive = Path(tmp) / "real"
            replicate(files, args.real_files, archive)
            for path in archive.rglob("*"):  # page-cache the files
                if path.is_file():
                    path.read_bytes()
            result["real"] = {"distinct_files": len(files), "files": args.real_files, "source": str(SHARED)}
            runs += measure("real", str(archive), Path(tmp) / "real-stores", shared_store=False)
        else:
            print(f"no real spectra under {SHARED}: the real part is skipped", file=sys.stderr)
        store = Path(tmp) / "synthetic-store"
        source = f"synthetic:{args.synthetic}"
        from oraculum.ingest.sources import synthetic_source
        from oraculum.settings import Settings

        synthetic_source(source, Settings(store=str(store)))  # generated once, not timed
        for path in store.rglob("*"):
            if path.is_file():
                path.read_bytes()
        result["synthetic"] = {"files": args.synthetic, "source": source}
        runs += measure("synthetic", source, store, shared_store=True)
        result["iterator"] = iterator(store, "bench-1-auto", args.repeats)
    load_end = list(os.getloadavg())
    identical = {data: len({r["checksum"] for r in runs if r["data"] == data}) == 1 for data in ("real", "synthetic")
                 if any(r["data"] == data for r in runs)}
    fork = {r["data"]: r["speedup"] for r in runs if r["workers"] == 2 and r["method"] == "fork"}
    best = {data: max((r for r in runs if r["data"] == data and r["workers"] == 2), key=lambda r: r["speedup"])["method"]
            for data in identical}
    loaded = max(r["load_average_1min"] for r in runs) > 0.5
    result.update({
        "runs": runs, "identical": identical, "load_average_end": load_end, "cores": cores,
        "target_speedup_2_workers": TARGET_SPEEDUP, "speedup_2_workers_fork": fork, "best_method_2_workers": best,
        "loaded": loaded,
        "load_note": ("the machine was shared and busy during the run (1-minute load average up to "
                      f"{max(r['load_average_1min'] for r in runs):.2f} on {cores} cores): 2 workers did not have "
                      "2 idle cores, so the speed-ups are lower bounds" if loaded else
                      "the machine was idle (1-minute load average at most 0.5)"),
    })
    it = result["iterator"]
    print(f"iterator over {it['spectra']:,} spectra: full {it['median_seconds']['full'] * 1000:.1f} ms, flux only "
          f"{it['median_seconds']['flux_only'] * 1000:.1f} ms ({it['full_vs_flux_only']:.1f}x), ids only "
          f"{it['median_seconds']['ids_only'] * 1000:.1f} ms")
    for data, speedup in fork.items():
        print(f"{data}: 2 workers (fork) / 1 worker = {speedup:.2f}x (target >= {TARGET_SPEEDUP}); best: {best[data]}")
    print(f"datasets identical across runs: {identical}; {result['load_note']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
