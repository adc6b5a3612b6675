"""Backtests across seeds: does uncertainty sampling beat random here, and do the intervals cover?

For each seed: a fresh synthetic pool (``oraculum.spectra.synth``, rare targets), the built-in backtest
spec (tiny network), and every strategy run for --iterations iterations with the simulated
oracle (:func:`oraculum.learning.backtest.run_backtest`). Reports per seed the labels each strategy needed
to reach the goal (real pool precision and recall), how often each strategy got there first, the
mean learning curves, and the coverage of the precision intervals pooled over all seeds,
strategies and iterations (with a binomial interval on the coverage rate itself).

    .venv/bin/python benchmarks/bench_backtest.py [--count 3000] [--seeds 0,1,2] [--iterations 6]

Writes benchmarks/results/<name>.json and <name>.png (--name, default backtest). All figures
come from synthetic data.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from hardware import hardware

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="synthetic spectra per pool")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (one pool each)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--strategies", default="entropy,random")
    parser.add_argument("--precision", type=float, default=0.9)
    parser.add_argument("--recall", type=float, default=0.7)
    parser.add_argument("--fractions", default=None,
                        help="label shares, e.g. absorption=0.93,emission=0.03,double-peak=0.02,bad=0.02 "
                        "(default: the backtest's rare-target mix)")
    parser.add_argument("--name", default="backtest", help="stem of the result files")
    parser.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    from oraculum.learning.backtest import SYNTHETIC_FRACTIONS, SYNTHETIC_NOTE, default_spec, format_table, prepare_synthetic, run_backtest
    from oraculum.learning.intervals import binomial_interval
    from oraculum.settings import Settings
    from oraculum.store import LocalStore

    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = None
    if args.fractions:
        fractions = {k: float(v) for k, v in (item.split("=") for item in args.fractions.split(","))}
    strategies = [s.strip() for s in args.strategies.split(",")]
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="oraculum-bench-backtest-"))
    store, settings = LocalStore(root), Settings(store=str(root))
    runs = {}
    started = time.perf_counter()
    for seed in seeds:
        dataset, labels = prepare_synthetic(store, settings, args.count, seed, echo=print, fractions=fractions)
        spec = default_spec(dataset, labels, seed=seed)
        result = run_backtest(spec, strategies, args.iterations, store, settings, root / f"out-{seed}",
                              name_prefix=f"bench-s{seed}", synthetic=True, precision=args.precision,
                              recall=args.recall, echo=print)
        print(format_table(result.document))
        runs[seed] = result.document
    elapsed = time.perf_counter() - started

    reach = {s: {seed: runs[seed]["labels_to_reach"][s] for seed in seeds} for s in strategies}
    inf = float("inf")

    def first(seed: int) -> list[str]:
        values = {s: reach[s][seed] if reach[s][seed] is not None else inf for s in strategies}
        best = min(values.values())
        return [s for s, v in values.items() if v == best] if best < inf else []

    wins = {s: sum(1 for seed in seeds if first(seed) == [s]) for s in strategies}
    covered = sum(d["coverage"]["covered"] for d in runs.values())
    intervals = sum(d["coverage"]["intervals"] for d in runs.values())
    census = sum(d["coverage"]["census_points"] for d in runs.values())
    rate_low, rate_high = binomial_interval(covered, intervals, 0.95, "wilson")[1:] if intervals else (None, None)
    mean_curves = {}
    for s in strategies:
        by_labels: dict[int, list[dict]] = {}
        for d in runs.values():
            for p in d["strategies"][s]:
                by_labels.setdefault(p["labels"], []).append(p)
        mean_curves[s] = [
            {"labels": n,
             "precision_pool": _mean([p["precision_pool"] for p in ps]),
             "recall_pool": _mean([p["recall_pool"] for p in ps]),
             "runs": len(ps)}
            for n, ps in sorted(by_labels.items())
        ]
    summary = {
        "note": SYNTHETIC_NOTE,
        "hardware": hardware(),
        "count": args.count,
        "fractions": fractions or SYNTHETIC_FRACTIONS,
        "seeds": seeds,
        "iterations": args.iterations,
        "goal": {"precision": args.precision, "recall": args.recall},
        "labels_to_reach": reach,
        "first_to_reach": wins,
        "coverage": {"confidence": runs[seeds[0]]["coverage"]["confidence"], "covered": covered, "intervals": intervals,
                     "rate": covered / intervals if intervals else None, "rate_interval_95": [rate_low, rate_high],
                     "census_points": census},
        "mean_curves": mean_curves,
        "seconds": round(elapsed, 1),
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(summary, out / f"{args.name}.png")
    print()
    print(SYNTHETIC_NOTE)
    print(f"{args.count} spectra per pool, seeds {seeds}, {args.iterations} iterations, goal: pool precision >= "
          f"{args.precision} and recall >= {args.recall}")
    print(f"{'strategy':<16}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds) + f"{'first':>8}")
    for s in strategies:
        print(f"{s:<16}" + "".join(f"{str(reach[s][seed]) if reach[s][seed] is not None else '-':>10}" for seed in seeds)
              + f"{wins[s]:>8}")
    if intervals:
        print(f"coverage of the {summary['coverage']['confidence']:.0%} precision intervals: {covered}/{intervals} = "
              f"{covered / intervals:.2f} [{rate_low:.2f}, {rate_high:.2f}], plus {census} census points")
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.png')} ({elapsed:.0f} s)")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for s, points in summary["mean_curves"].items():
        x = [p["labels"] for p in points]
        line = ax.plot(x, [p["precision_pool"] for p in points], "-o", label=f"{s}: precision")[0]
        ax.plot(x, [p["recall_pool"] for p in points], "--s", color=line.get_color(), label=f"{s}: recall")
    ax.axhline(summary["goal"]["precision"], color="grey", lw=0.8, ls=":")
    ax.axhline(summary["goal"]["recall"], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="training labels", ylabel="whole pool (mean over seeds)", ylim=(-0.02, 1.02),
           title=f"backtest, {len(summary['seeds'])} seeds x {summary['count']} spectra (synthetic data)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
