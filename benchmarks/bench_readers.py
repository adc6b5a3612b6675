"""Reading + preprocessing speed per core: oraculum's fast path against the earlier approach.

Replicates the real LAMOST low-resolution 5-row files of ../shared/data (hard links, so the page
cache holds each distinct file once) to --files files, then times, on one pinned core, with the
files page-cached (each read once before timing):

* NAIVE - the earlier systems' approach: ``astropy.io.fits.open``, read all rows
  (``hdul[0].data``), wavelength from the WCS, ``numpy.interp`` onto the default grid, min-max
  scaling;
* OURS  - ``open(...).read()``, :func:`oraculum.spectra.readers.read_spectrum` (header-card scan +
  ``numpy.frombuffer``) and :func:`oraculum.spectra.preprocessing.preprocess`.

Each approach runs in its own subprocess, so peak memory (``ru_maxrss``, dominated by the
imports both share) is its own; the peak memory allocated while processing one file
(tracemalloc, measured after the timing) shows the per-file difference. Before
timing, it checks on the real files that OURS is bit-identical to the astropy reference path
(``read_spectrum_reference`` + ``preprocess``) and within 1e-5 of NAIVE. Throughput is given
per CPU second of the worker (files/s per core, robust to other load on the machine) and per
wall-clock second.

    .venv/bin/python benchmarks/bench_readers.py [--files 20000]

Writes benchmarks/results/readers.json (figures, hardware, library versions, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hardware import hardware

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "readers.json"


# --- the two approaches ---------------------------------------------------------------------------


def naive(path: Path, grid_A, np, fits):  # noqa: ANN001 - modules passed in to keep imports lazy
    """The earlier systems' reading + preprocessing of one LAMOST LRS file."""
    with fits.open(path) as hdul:
        header = hdul[0].header
        data = hdul[0].data  # all five rows
        n = header["NAXIS1"]
        wavelength = 10 ** (header["CRVAL1"] + header["CD1_1"] * (np.arange(n) + 1 - header["CRPIX1"]))
        flux = np.interp(grid_A, wavelength, data[0])
    low, high = flux.min(), flux.max()
    return (2.0 * (flux - low) / (high - low) - 1.0).astype(np.float32)


def ours(path: Path, params, read_spectrum, preprocess):  # noqa: ANN001
    """oraculum: bytes -> read_spectrum (fast path) -> preprocess."""
    with open(path, "rb") as handle:
        data = handle.read()
    return preprocess(read_spectrum(data, path.name), params)


# --- worker: one approach, one core, its own process ---------------------------------------------


def worker(approach: str, list_file: Path) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    paths = [Path(line) for line in list_file.read_text().splitlines() if line]
    for path in paths:  # page cache: every file read once before timing
        path.read_bytes()
    import numpy as np

    from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
    from oraculum.spectra.readers import read_spectrum

    params = PreprocessingParameters()
    if approach == "naive":
        from astropy.io import fits

        grid = params.grid.wavelengths

        def one(path: Path):  # noqa: ANN202
            return naive(path, grid, np, fits)
    else:

        def one(path: Path):  # noqa: ANN202
            return ours(path, params, read_spectrum, preprocess)

    for path in paths[:50]:  # warm-up: imports, caches, first-call costs
        one(path)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for path in paths:
        one(path)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Peak memory allocated while processing one file (numpy arrays, astropy objects), traced
    # after the timing so that tracemalloc's overhead does not distort it.
    import tracemalloc

    tracemalloc.start()
    per_file_peak = 0
    for path in paths[:200]:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        one(path)
        per_file_peak = max(per_file_peak, tracemalloc.get_traced_memory()[1] - base)
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "approach": approach,
                "files": len(paths),
                "cpu_s": cpu,
                "wall_s": wall,
                "files_per_cpu_s": len(paths) / cpu,
                "files_per_wall_s": len(paths) / wall,
                "peak_rss_mb": peak_rss_mb,
                "peak_traced_kb_per_file": per_file_peak / 1024,
                "rss_after_imports_mb": rss_before_kb / 1024,
            }
        )
    )


# --- orchestration --------------------------------------------------------------------------------


def lamost_lrs_files() -> list[Path]:
    """Real, uncompressed LAMOST low-resolution files with a (5, N) primary image."""
    from astropy.io import fits

    files = []
    for path in sorted(SHARED.rglob("*.fits")):
        header = fits.getheader(path)
        if header.get("NAXIS") == 2 and header.get("NAXIS2") == 5:
            files.append(path)
    return files


def replicate(files: list[Path], count: int, target: Path) -> list[Path]:
    """``count`` hard links (copies where linking is impossible) cycling through ``files``."""
    paths = []
    for i in range(count):
        source = files[i % len(files)]
        folder = target / f"plan{i // 1000:04d}"
        folder.mkdir(exist_ok=True)
        path = folder / f"{i:07d}-{source.name}"
        try:
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)
        paths.append(path)
    return paths


def check_outputs(files: list[Path]) -> dict[str, object]:
    """OURS bit-identical to the astropy reference path, and close to NAIVE, on real files."""
    import numpy as np
    from astropy.io import fits

    from oraculum.spectra.preprocessing import PreprocessingParameters, preprocess
    from oraculum.spectra.readers import read_spectrum, read_spectrum_reference

    params = PreprocessingParameters()
    identical = close = 0
    worst = 0.0
    for path in files:
        fast = ours(path, params, read_spectrum, preprocess)
        reference = preprocess(read_spectrum_reference(path.read_bytes(), path.name), params)
        earlier = naive(path, params.grid.wavelengths, np, fits)
        identical += fast.tobytes() == reference.tobytes()
        close += bool(np.allclose(fast, earlier, rtol=0, atol=1e-5))
        worst = max(worst, float(np.abs(fast.astype(np.float64) - earlier).max()))
    return {
        "real_files": len(files),
        "bit_identical_to_reference": identical,
        "allclose_1e-5_to_naive": close,
        "max_abs_difference_to_naive": worst,
    }


def run_worker(approach: str, list_file: Path) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", approach, "--list", str(list_file)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000, help="files to time (default 20000)")
    parser.add_argument("--worker", choices=["naive", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--list", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.list)
        return 0
    if not SHARED.is_dir():
        print(f"no real spectra: {SHARED} is absent", file=sys.stderr)
        return 1
    files = lamost_lrs_files()
    print(f"{len(files)} real LAMOST LRS files; replicating to {args.files} ...", flush=True)
    checks = check_outputs(files)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-readers-") as folder:
        paths = replicate(files, args.files, Path(folder))
        list_file = Path(folder) / "files.txt"
        list_file.write_text("\n".join(str(p) for p in paths))
        results = {}
        for approach in ("ours", "naive"):
            print(f"timing {approach} ...", flush=True)
            results[approach] = run_worker(approach, list_file)
    load_after = os.getloadavg()
    ratio_cpu = results["ours"]["files_per_cpu_s"] / results["naive"]["files_per_cpu_s"]
    ratio_wall = results["ours"]["files_per_wall_s"] / results["naive"]["files_per_wall_s"]

    print()
    print(f"{'approach':<8} {'files':>7} {'files/s per core':>17} {'files/s wall':>13} "
          f"{'ms/file':>8} {'peak RSS MB':>12} {'peak KB/file':>13}")  # fmt: skip
    for approach, label in (("naive", "NAIVE"), ("ours", "OURS")):
        r = results[approach]
        print(
            f"{label:<8} {r['files']:>7} {r['files_per_cpu_s']:>17.0f} {r['files_per_wall_s']:>13.0f} "
            f"{1000 / r['files_per_cpu_s']:>8.3f} {r['peak_rss_mb']:>12.1f} "
            f"{r['peak_traced_kb_per_file']:>13.0f}"
        )
    print(f"OURS / NAIVE: {ratio_cpu:.1f}x per core (CPU time), {ratio_wall:.1f}x wall clock")
    print(
        f"outputs on {checks['real_files']} real files: {checks['bit_identical_to_reference']} "
        f"bit-identical to the astropy reference path, {checks['allclose_1e-5_to_naive']} within "
        f"1e-5 of NAIVE (max |diff| {checks['max_abs_difference_to_naive']:.2e})"
    )
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "readers",
                "description": "read + preprocess one LAMOST LRS file, one core, page-cached",
                "files": args.files,
                "distinct_real_files": len(files),
                "naive": results["naive"],
                "ours": results["ours"],
                "speedup_per_core_cpu_time": ratio_cpu,
                "speedup_wall_clock": ratio_wall,
                "checks": checks,
                "load_average_before_after": [load_before[0], load_after[0]],
                "hardware": hardware(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = (
        checks["bit_identical_to_reference"] == checks["real_files"]
        and checks["allclose_1e-5_to_naive"] == checks["real_files"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
