"""End-to-end ingestion throughput and its scaling with shards (worker processes).

Replicates the real LAMOST low-resolution files of ../shared/data (hard links) to --files
files, then runs `run_preprocess` (read, preprocess, write HDF5 shards, index) with 1 worker and
with every available core, on the same shards, in the same run. Reports files/s, files/s per
core, the scaling efficiency (speed-up / workers) and peak memory of the worker processes.

    .venv/bin/python benchmarks/bench_ingest.py [--files 20000]

Writes benchmarks/results/ingest.json. Figures are for page-cached files on local disk.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hardware import hardware

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def lamost_lrs_files() -> list[Path]:
    """Real uncompressed LAMOST low-resolution 5-row files."""
    files = []
    for path in sorted(SHARED.rglob("spec-*.fits")):
        files.append(path)
    return files


def replicate(files: list[Path], count: int, target: Path) -> None:
    for i in range(count):
        source = files[i % len(files)]
        folder = target / f"plan{i // 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"spec-{i:07d}-{source.name}"
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)


def run(archive: Path, store: Path, workers: int, shards: int) -> dict[str, float]:
    from oraculum.ingest.pipeline import run_preprocess
    from oraculum.spectra.preprocessing import PreprocessingParameters
    from oraculum.settings import Settings

    def cpu_seconds() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    report = run_preprocess(
        str(archive), f"bench-{workers}", PreprocessingParameters(), Settings(store=str(store)),
        shards=shards, workers=workers,
    )
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert report.index is not None
    return {
        "workers": workers,
        "shards": shards,
        "files": report.files,
        "stored": report.index.count,
        "rejected": report.index.rejected,
        "seconds": seconds,
        "files_per_s": report.files / seconds,
        "files_per_s_per_core": report.files / seconds / workers,
        "cpu_s": cpu,
        "cpu_ms_per_file": 1000 * cpu / report.files,
        "load_average_1min": os.getloadavg()[0],
        "peak_rss_mb": max(peak_children, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024,
        "checksum": report.index.checksum,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000, help="files to replicate (default 20000)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    args = parser.parse_args()
    files = lamost_lrs_files()
    if not files:
        print(f"no LAMOST files under {SHARED}; nothing to measure", file=sys.stderr)
        return 1
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="oraculum-bench-") as tmp:
        archive = Path(tmp) / "archive"
        replicate(files, args.files, archive)
        for path in archive.rglob("*.fits"):  # page-cache the files
            path.read_bytes()
        shards = max(2, cores)
        rows = []
        for workers in sorted({1, cores}):
            rows.append(run(archive, Path(tmp) / f"store-{workers}", workers, shards))
    base = rows[0]
    for row in rows:
        row["speedup"] = row["files_per_s"] / base["files_per_s"]
        row["scaling_efficiency"] = row["speedup"] / row["workers"]
    identical = len({row["checksum"] for row in rows}) == 1
    print(f"ingestion of {args.files} real LAMOST files ({len(files)} distinct, replicated), "
          f"{shards} shards; {hardware()['cpu']}, {cores} cores")
    print(f"{'workers':>7} {'seconds':>8} {'files/s':>9} {'per core':>9} {'speed-up':>8} {'efficiency':>10} "
          f"{'CPU ms/file':>11} {'load':>5} {'peak MB':>8}")
    for row in rows:
        print(f"{row['workers']:>7} {row['seconds']:>8.2f} {row['files_per_s']:>9.0f} "
              f"{row['files_per_s_per_core']:>9.0f} {row['speedup']:>8.2f} {row['scaling_efficiency']:>10.2f} "
              f"{row['cpu_ms_per_file']:>11.3f} {row['load_average_1min']:>5.1f} {row['peak_rss_mb']:>8.0f}")
    print("CPU ms/file that stays flat as workers grow means the work splits without overhead; wall-clock")
    print("speed-up also needs idle cores (see the load average: other processes on this machine count).")
    print(f"datasets identical across worker counts: {identical}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"hardware": hardware(), "files": args.files, "runs": rows,
                                       "identical": identical}, indent=2))
    print(f"wrote {args.output}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
