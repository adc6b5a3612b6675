"""Scoring throughput, MC-dropout cost and streaming memory of the paper's network, on this CPU.

Measured side by side in one run:

1. the machine's achievable float32 FLOP/s (a large numpy matmul, best of several), and from it
   the floating-point bound on scoring: ``FLOP/s / FLOP per spectrum``;
2. scoring throughput (spectra/s) of the ``podsztavek2020`` network at 140 points through
   :class:`oraculum.learning.scoring.Scorer`, for a few chunk sizes, and its ratio to that bound;
3. MC dropout with T = 20: the cached path (conv features once, head T times) against running the
   whole network T times, and the FLOP-count prediction of the ratio;
4. peak resident memory while streaming a pool of ``--pool`` spectra (default 1,000,000) through
   scoring *and* writing a Parquet score file, against the pool's size in float32.

All spectra are synthetic (random float32 rows generated per batch); the network's cost does not
depend on the values. Other processes on the machine slow every figure down: the load average
before and after is recorded so a contended run can be recognised.

    .venv/bin/python benchmarks/bench_scoring.py [--pool 1000000]

Writes benchmarks/results/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POINTS = 140
CLASSES = ("continuum", "emission", "absorption")


def hardware() -> dict[str, object]:
    """CPU model and core counts from /proc/cpuinfo (and the cores this process may use)."""
    model, physical = "unknown", set()
    try:
        block: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            if not line.strip():
                if block:
                    physical.add((block.get("physical id"), block.get("core id")))
                    model = block.get("model name", model)
                block = {}
                continue
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "cores_available": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def rss_mib() -> float:
    """Current resident set size of this process (MiB, from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRSS:
    """Samples VmRSS every ``interval`` seconds in a thread and keeps the maximum."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def matmul_flops(size: int = 4096, repeats: int = 5) -> float:
    """Best achieved float32 FLOP/s of a size x size numpy matmul (2 n^3 FLOP each)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def synthetic(count: int, seed: int) -> np.ndarray:
    """Random spectra in [-1, 1] (the range of min-max-normalised spectra)."""
    return np.tanh(np.random.default_rng(seed).standard_normal((count, POINTS), dtype=np.float32))


def timed(fn: Callable[[], object], repeats: int = 2) -> float:
    """Best wall time of ``repeats`` calls (the first call elsewhere is a warm-up)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def pool_batches(pool: int, batch_size: int) -> Iterator[object]:
    """Synthetic pool batches generated on the fly, so the pool itself never exists in memory."""
    from oraculum.learning.scoring import ArrayBatch

    for number, start in enumerate(range(0, pool, batch_size)):
        rows = min(batch_size, pool - start)
        yield ArrayBatch(index=np.arange(start, start + rows, dtype=np.int64), flux=synthetic(rows, number))


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=1_000_000, help="spectra streamed for the memory test")
    parser.add_argument("--sample", type=int, default=20_000, help="spectra per throughput measurement")
    parser.add_argument("--mc-samples", type=int, default=20, help="T for the MC-dropout comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scoring.json")
    args = parser.parse_args(argv)

    from oraculum.learning.model import build_model, flops_by_layer, flops_per_spectrum
    from oraculum.learning.scores import write_scores
    from oraculum.learning.scoring import DEFAULT_CHUNK, Scorer, mc_probs_uncached

    import keras
    import tensorflow as tf

    result: dict[str, object] = {"hardware": hardware(), "load_average_before": load_average(), "synthetic_data": True}
    result["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}
    print(f"CPU: {result['hardware']['cpu']}, {result['hardware']['cores_available']} cores available "  # type: ignore[index]
          f"(load average {result['load_average_before']})", flush=True)

    cores = int(result["hardware"]["cores_available"])  # type: ignore[index]
    if result["load_average_before"][0] > 0.5 * cores:  # type: ignore[index]
        print(f"WARNING: the machine is busy (load average {result['load_average_before']} on {cores} cores): "
              "the figures below are lower bounds", flush=True)

    flops_s = matmul_flops()
    model = build_model("podsztavek2020", POINTS, len(CLASSES), seed=0)
    flops = flops_per_spectrum(model)
    # FLOPs before the first dropout (computed once under MC caching) and after it (T times).
    suffix = sum(v for name, v in flops_by_layer(model).items() if name in ("hidden_2", "probs"))
    bound = flops_s / flops
    result.update(matmul_gflop_s=flops_s / 1e9, flops_per_spectrum=flops, bound_spectra_s=bound)

    x = synthetic(args.sample, seed=123)
    throughput: dict[str, float] = {}
    for chunk in sorted({256, DEFAULT_CHUNK, 1024, 4096}):
        scorer = Scorer(model, embed=False, chunk_size=chunk)
        scorer.score(x[: 2 * chunk])  # trace and warm up
        throughput[str(chunk)] = args.sample / timed(lambda: scorer.score(x))
        print(f"  chunk {chunk:5d}: {throughput[str(chunk)]:8.0f} spectra/s", flush=True)
    scorer = Scorer(model, embed=True)
    scorer.score(x[:2048])
    with_embedding = args.sample / timed(lambda: scorer.score(x))
    best_rate = throughput[str(DEFAULT_CHUNK)]
    result.update(throughput_by_chunk=throughput, throughput_spectra_s=best_rate,
                  throughput_with_embedding_spectra_s=with_embedding, fraction_of_bound=best_rate / bound)

    t = args.mc_samples
    mc_x = x[: max(2048, args.sample // 4)]
    cached = Scorer(model, mc_samples=t, embed=False)
    cached.score(mc_x[:1024])
    cached_s = timed(lambda: cached.score(mc_x)) / mc_x.shape[0]
    mc_probs_uncached(model, mc_x[:1024], t)
    uncached_s = timed(lambda: mc_probs_uncached(model, mc_x, t), repeats=1) / mc_x.shape[0]
    predicted = t * flops / (flops - suffix + t * suffix)
    result["mc_dropout"] = {
        "samples": t,
        "cached_spectra_s": 1 / cached_s,
        "uncached_spectra_s": 1 / uncached_s,
        "speedup": uncached_s / cached_s,
        "speedup_predicted_from_flops": predicted,
        "cached_cost_vs_plain_scoring": cached_s * best_rate,
    }

    def entropy(scored) -> np.ndarray:  # type: ignore[no-untyped-def]
        p = np.clip(scored.probs, 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=1)

    streamer = Scorer(model, embed=False)
    streamer.score(x[:4096])
    baseline = rss_mib()
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as peak:
        start = time.perf_counter()
        rows = write_scores(streamer.score_batches(pool_batches(args.pool, 4096)), Path(tmp) / "scores.parquet",
                            CLASSES, {"entropy": entropy})
        elapsed = time.perf_counter() - start
        file_mib = (Path(tmp) / "scores.parquet").stat().st_size / 2**20
    assert rows == args.pool
    pool_mib = args.pool * POINTS * 4 / 2**20
    result["stream"] = {
        "pool_spectra": args.pool,
        "pool_float32_mib": pool_mib,
        "seconds": elapsed,
        "spectra_s": args.pool / elapsed,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": peak.peak,
        "rss_growth_mib": peak.peak - baseline,
        "score_file_mib": file_mib,
    }
    result["load_average_after"] = load_average()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return result


def print_table(r: dict) -> None:  # type: ignore[type-arg]
    mc, st = r["mc_dropout"], r["stream"]
    rows = [
        ("CPU", f"{r['hardware']['cpu']} ({r['hardware']['cores_available']} cores available)"),
        ("load average before / after", f"{r['load_average_before']} / {r['load_average_after']}"),
        ("TensorFlow / Keras", f"{r['versions']['tensorflow']} / {r['versions']['keras']}"),
        ("numpy float32 matmul", f"{r['matmul_gflop_s']:.1f} GFLOP/s"),
        ("network cost", f"{r['flops_per_spectrum'] / 1e6:.2f} MFLOP/spectrum (podsztavek2020, 140 points)"),
        ("floating-point bound", f"{r['bound_spectra_s']:,.0f} spectra/s"),
        ("scoring throughput", f"{r['throughput_spectra_s']:,.0f} spectra/s  "
                               f"({r['fraction_of_bound']:.0%} of bound)"),
        ("  by chunk size", ", ".join(f"{k}: {v:,.0f}" for k, v in r["throughput_by_chunk"].items())),
        ("  with 512-d embedding", f"{r['throughput_with_embedding_spectra_s']:,.0f} spectra/s"),
        (f"MC dropout T={mc['samples']}, cached", f"{mc['cached_spectra_s']:,.0f} spectra/s "
                                                  f"({mc['cached_cost_vs_plain_scoring']:.2f}x plain scoring cost)"),
        (f"MC dropout T={mc['samples']}, uncached", f"{mc['uncached_spectra_s']:,.0f} spectra/s"),
        ("  caching speed-up", f"{mc['speedup']:.1f}x (FLOP count predicts {mc['speedup_predicted_from_flops']:.1f}x)"),
        ("streamed pool (synthetic)", f"{st['pool_spectra']:,} spectra in {st['seconds']:.0f} s = "
                                      f"{st['spectra_s']:,.0f} spectra/s, scores + Parquet file ({st['score_file_mib']:.1f} MiB)"),
        ("  peak RSS", f"{st['rss_peak_mib']:.0f} MiB (baseline {st['rss_baseline_mib']:.0f} MiB, growth "
                       f"{st['rss_growth_mib']:.0f} MiB) vs the pool's {st['pool_float32_mib']:.0f} MiB of float32"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
