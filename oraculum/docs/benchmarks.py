"""``docs/benchmarks.md``: every result in ``benchmarks/results/*.json`` as a table, with its baseline,
hardware, load average, the command that reproduces it, and its targets, met or not.

Each benchmark writes its own JSON shape, so each has a small summariser here that picks the key
figures; a results file no summariser knows is still listed, with its top-level numbers, rather
than silently left out. Nothing is measured here: every figure is read from a results file, and
a page that no longer matches those files fails ``oraculum docs --check``.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oraculum.docs.page import banner, table

__all__ = ["Summary", "Target", "benchmark_page", "summarise"]


@dataclass(frozen=True)
class Target:
    """A goal a benchmark is judged against: what, the bound, what was measured, whether it was met."""

    what: str
    bound: str
    measured: str
    met: bool | None


@dataclass
class Summary:
    """What the page shows of one results file."""

    title: str
    header: Sequence[str]
    rows: list[Sequence[object]]
    ratios: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str = ""


def benchmark_page(results_dir: Path, root: Path) -> str:
    """The whole page, one section per results file (sorted by name)."""
    files = sorted(results_dir.glob("*.json"))
    parts = [
        banner("benchmarks/results/*.json"),
        "# Benchmark results\n",
        "Every figure below is read from a results file in [benchmarks/results/](../benchmarks/results/), "
        "written by the benchmark scripts in [benchmarks/](../benchmarks/); each file records the hardware "
        "it ran on and, where the script measures it, the load average (the machine's other work slows "
        "every figure: a load above the core count marks a contended run). Figures marked synthetic come "
        "from synthetic spectra (`oraculum.spectra.synth`), not from a real archive. To refresh a result, run "
        "its command, then `oraculum docs` to rewrite this page.\n",
    ]
    loaded = [(path, _load_results(path)) for path in files]
    summaries = [(path, summarise(path.stem, data, root), data) for path, data in loaded]
    parts.append("## Targets\n")
    target_rows = [(f"[{path.stem}](#{_anchor(path.stem)})", t.what, t.bound, t.measured, _verdict(t.met))
                   for path, summary, _ in summaries for t in summary.targets]
    if target_rows:
        parts.append(table(["results", "target", "bound", "measured", "met"], target_rows))
    missed = sum(1 for _, summary, _ in summaries for t in summary.targets if t.met is False)
    parts.append((f"{missed} of {len(target_rows)} targets missed (in bold)." if missed else "Every target is met.")
                 + " Results without a row here have no target recorded; they are measured against a "
                 "baseline in the same run.\n")
    for path, summary, data in summaries:
        parts.append(_section(path, summary, data))
    return "\n".join(parts)


def _load_results(path: Path) -> dict[str, Any]:
    """One results file as a JSON object; anything else is a ValueError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON results file ({error}); rerun its benchmark or remove it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a results file must hold a JSON object, not {type(data).__name__}")
    return data


def _section(path: Path, summary: Summary, data: dict[str, Any]) -> str:
    out = [f"## {path.stem}\n", f"{summary.title} ([{path.name}](../benchmarks/results/{path.name}))\n"]
    out.append(table(summary.header, summary.rows))
    for line in summary.ratios:
        out.append(f"- {line}")
    if summary.ratios:
        out.append("")
    image = path.with_suffix(".png")
    if image.is_file():
        out.append(f"![{path.stem}](../benchmarks/results/{image.name})\n")
    for note in summary.notes:
        out.append(f"{note}\n")
    out.append(f"Hardware: {_hardware(data.get('hardware'))}." + _load(data) + _when(data) + "\n")
    if summary.command:
        out.append(f"Reproduce: `{summary.command}`\n")
    return "\n".join(out)


# --- shared pieces ------------------------------------------------------------------------------


def _anchor(stem: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", stem.lower()).replace(" ", "-")


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "not measured"}[met]


def num(value: Any, digits: int = 3) -> str:
    """A figure as people read it: thousands separated, about ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits - 1}g}"
    return str(value)


def _sentence(text: object) -> str:
    """``text`` with its first letter upper case (unlike ``str.capitalize``, the rest is kept)."""
    text = str(text)
    return text[:1].upper() + text[1:]


def _hardware(info: Any) -> str:
    if not isinstance(info, dict):
        return "not recorded"
    cores = info.get("cores", info.get("logical_cpus"))
    text = f"{info.get('cpu', 'unknown CPU')}, {cores} cores ({info.get('cores_available', '?')} available)"
    versions = [f"{name} {info[key]}" for key, name in (("python", "Python"), ("numpy", "numpy"), ("astropy", "astropy"),
                                                        ("h5py", "h5py"), ("tensorflow-cpu", "tensorflow-cpu"),
                                                        ("tensorflow", "tensorflow")) if key in info]
    return text + (", " + ", ".join(versions) if versions else "")


def _load(data: dict[str, Any]) -> str:
    found = []
    for key, value in data.items():
        if not key.startswith("load_average"):
            continue
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            what = key.removeprefix("load_average").strip("_").replace("_", " ") or "1, 5, 15 min"
            if key == "load_average_before_after":
                what = "1 min, before and after"
            found.append(f"{what}: {', '.join(f'{v:.2f}' for v in value)}")
    runs = data.get("runs")
    if isinstance(runs, list):
        per_run = [r["load_average_1min"] for r in runs if isinstance(r, dict) and "load_average_1min" in r]
        if per_run:
            found.append("1 min, per run: " + ", ".join(f"{v:.2f}" for v in per_run))
    return " Load average (" + "; ".join(found) + ")." if found else " Load average not recorded."


def _when(data: dict[str, Any]) -> str:
    when = data.get("when") or data.get("date")
    return f" Run {when}." if when else ""


def _usage(script: Path) -> str:
    """The command line given in a benchmark script's docstring, optional parts left out."""
    try:
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError):
        return ""
    for line in doc.splitlines():
        line = line.strip()
        if line.startswith(".venv/bin/python benchmarks/"):
            return re.sub(r"\s*\[[^\]]*\]", "", line).strip()
    return f".venv/bin/python benchmarks/{script.name}" if script.is_file() else ""


def _with(command: str, options: Sequence[tuple[str, Any]]) -> str:
    return " ".join([command, *(f"{flag} {value}" for flag, value in options if value is not None)]).strip()


# --- one summariser per benchmark ------------------------------------------------------------


def _api(stem: str, data: dict[str, Any], usage: str) -> Summary:
    header = ["scenario", "clients", "seconds", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    rows = [(name, r.get("clients"), num(r.get("seconds")), num(r.get("requests")), num(r.get("throughput_per_s")),
             sum((r.get("errors") or {}).values()), num(r.get("p50_ms")), num(r.get("p95_ms")), num(r.get("p99_ms")),
             num(r.get("max_ms")))
            for name, r in (data.get("results") or {}).items() if isinstance(r, dict)]
    clients = data.get("clients")
    summary = Summary(data.get("description", "API gateway under load."), header, rows,
                      targets=_verdict_targets(data, clients),
                      ratios=_recorded_ratios(data),
                      command=_with(usage, [("--clients", clients if clients != 50 else None),
                                            ("--out", f"benchmarks/results/{stem}.json" if stem != "api" else None)]))
    if clients is not None:
        summary.title = summary.title.replace("50 concurrent clients", f"{clients} concurrent clients")
    if data.get("synthetic_data"):
        summary.notes.append("Synthetic data (a synthetic pool and a cold-start batch).")
    if data.get("s3_server"):
        memory = f" (resident memory at the end: {num(data['moto_rss_mib'])} MiB)" if data.get("moto_rss_mib") else ""
        summary.notes.append(f"S3 server: {data['s3_server']}{memory}.")
    paced_floor = (data.get("floor") or {}).get("bare S3 PUT (paced)") or {}
    if paced_floor.get("p99_ms") is not None:
        summary.notes.append(f"Floor of a durable label write, in the same run: bare {paced_floor.get('bytes', '')} B S3 PUTs "
                             f"paced like the oracles, p50 {num(paced_floor.get('p50_ms'))} ms, "
                             f"p99 {num(paced_floor.get('p99_ms'))} ms.")
    return summary


def _verdict_targets(data: dict[str, Any], clients: Any) -> list[Target]:
    """Targets in the ``targets`` + ``verdict`` convention: ``verdict[<name>_target_met]``."""
    targets, verdict = data.get("targets") or {}, data.get("verdict") or {}
    out = []
    for name, bound in targets.items():
        keys = [k for k in verdict if k.endswith("_target_met") and name.startswith(k[: -len("_target_met")])]
        met_key = max(keys, key=len) if keys else None  # the most specific verdict of this target
        what = name.replace("_", " ") + (f" ({clients} clients)" if clients else "")
        out.append(Target(what, f"< {num(bound)}", num(verdict.get(name), 4), verdict.get(met_key) if met_key else None))
    return out


def _recorded_ratios(data: dict[str, Any]) -> list[str]:
    """Ratios a results file states itself (keys naming a speed-up, ratio or baseline)."""
    out = []
    for key, value in data.items():
        if re.search(r"speedup|ratio|baseline|vs_", key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(f"{key.replace('_', ' ')}: {num(value)}")
        elif key == "baseline" and isinstance(value, dict):
            out.append("baseline: " + ", ".join(f"{k.replace('_', ' ')} {num(v)}" for k, v in value.items()
                                                  if isinstance(v, (int, float, str))))
    return out


def _backtest(stem: str, data: dict[str, Any], usage: str) -> Summary:
    curves: dict[str, list[dict[str, Any]]] = data.get("mean_curves") or {}
    strategies = list(curves)
    goal = data.get("goal") or {}
    header = ["labels", *(f"{s}: precision / recall" for s in strategies)]
    points = sorted({p["labels"] for s in strategies for p in curves[s]})
    by = {s: {p["labels"]: p for p in curves[s]} for s in strategies}
    rows = [(n, *(f"{num(by[s][n]['precision_pool'])} / {num(by[s][n]['recall_pool'])}" if n in by[s] else "–"
                  for s in strategies)) for n in points]
    reach = data.get("labels_to_reach") or {}
    seeds = data.get("seeds") or []
    summary = Summary(
        f"Learning curves with a simulated oracle: {num(data.get('count'))} spectra per pool, seeds "
        f"{', '.join(map(str, seeds))}, {data.get('iterations')} iterations; mean real precision and recall of "
        "the predicted targets over the whole pool, by labels spent.",
        header, rows,
        notes=[data.get("note", "")] if data.get("note") else [],
        command=_with(usage, [("--count", data.get("count")), ("--seeds", ",".join(map(str, seeds)) or None),
                              ("--iterations", data.get("iterations")), ("--strategies", ",".join(strategies) or None),
                              ("--precision", goal.get("precision")), ("--recall", goal.get("recall")),
                              ("--fractions", ",".join(f"{k}={v:g}" for k, v in (data.get("fractions") or {}).items()) or None),
                              ("--name", stem)]))
    goal_text = f"precision ≥ {goal.get('precision')} and recall ≥ {goal.get('recall')}"
    for s in strategies:
        got = [reach.get(s, {}).get(str(seed)) for seed in seeds]
        summary.ratios.append(f"labels {s} needed to reach {goal_text}, per seed: "
                              + ", ".join("not reached" if v is None else str(v) for v in got))
    baseline = "random" if "random" in strategies else None
    for s in strategies:
        if baseline is None or s == baseline:
            continue
        both = [(reach[s][str(seed)], reach[baseline][str(seed)]) for seed in seeds
                if reach.get(s, {}).get(str(seed)) is not None and reach.get(baseline, {}).get(str(seed)) is not None]
        if both:
            ratio = sum(b for _, b in both) / sum(a for a, _ in both)
            summary.ratios.append(f"{baseline} (the baseline) needed {ratio:.2f}x the labels of {s} on the "
                                  f"{len(both)} seed(s) where both reached the goal")
        wins = data.get("first_to_reach") or {}
        summary.targets.append(Target(f"{s} reaches the goal with fewer labels than {baseline} (seeds won outright)",
                                      f"> {baseline}'s {wins.get(baseline, 0)}", f"{wins.get(s, 0)} of {len(seeds)}",
                                      wins.get(s, 0) > wins.get(baseline, 0)))
    coverage = data.get("coverage") or {}
    if coverage.get("intervals"):
        low, high = (coverage.get("rate_interval_95") or [None, None])[:2]
        summary.ratios.append(f"precision intervals ({num(coverage.get('confidence'))} confidence) covered the true pool "
                              f"precision {coverage.get('covered')} of {coverage.get('intervals')} times "
                              f"(rate {num(coverage.get('rate'))}, 95 % interval of the rate {num(low)}-{num(high)})")
        summary.targets.append(Target("precision intervals cover the true pool precision at the nominal rate "
                                      "(nominal not above the rate's 95 % interval)",
                                      f"≥ {num(coverage.get('confidence'))}",
                                      f"{coverage.get('covered')}/{coverage.get('intervals')}",
                                      None if high is None else high >= coverage.get("confidence", 1)))
    return summary


def _dashboard(stem: str, data: dict[str, Any], usage: str) -> Summary:
    header = ["key press to next spectrum painted", "n", "median ms", "p90 ms", "p99 ms", "max ms"]
    rows = []
    for where, label in (("in_page", "in the page"), ("selenium_round_trip", "WebDriver round trip (upper bound)")):
        for key, stats in (data.get(where) or {}).items():
            rows.append((f"{key} ({label})", stats.get("n"), num(stats.get("median_ms")), num(stats.get("p90_ms")),
                         num(stats.get("p99_ms")), num(stats.get("max_ms"))))
    saved = data.get("label_saved_by_api")
    if isinstance(saved, dict):
        rows.append(("label acknowledged by the API", saved.get("n"), num(saved.get("median_ms")), num(saved.get("p90_ms")),
                     num(saved.get("p99_ms")), num(saved.get("max_ms"))))
    summary = Summary(_sentence(data.get("benchmark", "dashboard"))
                      + f": headless Chromium {data.get('browser', '')} ({data.get('chromium_flags', '')}), "
                      f"batch of {data.get('batch_size')}, {data.get('points_per_spectrum')} points per spectrum.",
                      header, rows, command=_with(usage, [("--rounds", data.get("rounds"))]))
    parts = data.get("where_the_time_goes_median_ms") or {}
    if parts:
        summary.ratios.append("where the median goes: " + ", ".join(f"{k} {num(v)} ms" for k, v in parts.items()))
    bound = data.get("target_ms")
    if bound is not None:
        for key, stats in (data.get("in_page") or {}).items():
            p99 = stats.get("p99_ms")
            summary.targets.append(Target(f"key press to next spectrum, `{key}`, p99 in the page", f"< {num(bound)} ms",
                                          f"{num(p99, 4)} ms", None if p99 is None else p99 < bound))
    if data.get("data"):
        summary.notes.append(f"Data: {data['data']}.")
    if data.get("load_note"):
        summary.notes.append(_sentence(data["load_note"]) + ".")
    return summary


def _ingest(stem: str, data: dict[str, Any], usage: str) -> Summary:
    header = ["spectra", "workers", "pool start method", "files", "seconds", "files/s", "speed-up over 1 worker",
              "CPU ms per file", "load (1 min) before", "after"]
    runs = [r for r in data.get("runs") or [] if isinstance(r, dict)]
    rows = [(r.get("data", "real LAMOST"), r.get("workers"), r.get("method", "–"), num(r.get("files")),
             num(r.get("seconds")), num(r.get("files_per_s")), num(r.get("speedup")), num(r.get("cpu_ms_per_file")),
             num(r.get("load_average_1min")), num(r.get("load_average_after"))) for r in runs]
    summary = Summary("End-to-end ingestion (read, preprocess, write the HDF5 shard and the index; one shard) with 1 "
                      "worker (the baseline) and with 2 workers in each pool start method, each run a fresh process, "
                      "on real spectra of every format in ../shared/data replicated by hard links, and on synthetic "
                      "LAMOST-format files; page-cached.", header, rows,
                      command=_with(usage, [("--real-files", (data.get("real") or {}).get("files")),
                                            ("--synthetic", (data.get("synthetic") or {}).get("files"))]))
    target = data.get("target_speedup_2_workers")
    for name, speedup in (data.get("speedup_2_workers_fork") or {}).items():
        best = (data.get("best_method_2_workers") or {}).get(name)
        summary.ratios.append(f"{name}: 2 workers (fork, what auto picks) / 1 worker: {num(speedup)}x; fastest "
                              f"start method with 2 workers: {best}")
        if target is not None:
            summary.targets.append(Target(f"ingestion speed-up with 2 workers over 1, {name} spectra "
                                          "(2 idle cores)", f"≥ {num(target)}x", f"{num(speedup)}x",
                                          speedup >= target))
    identical = data.get("identical")
    if isinstance(identical, dict):
        summary.ratios.append("datasets of all runs identical (same checksum): "
                              + ", ".join(f"{name} {num(bool(same))}" for name, same in identical.items()))
    elif identical is not None:
        summary.ratios.append("datasets of all runs identical (same checksum): " + num(bool(identical)))
    it = data.get("iterator") or {}
    if it.get("median_seconds"):
        seconds = it["median_seconds"]
        summary.ratios.append(f"iterating over {num(it.get('spectra'))} spectra ({it.get('points')} points): ids, metadata "
                              f"and flux (the old `iter_batches()`, the baseline) {num(seconds.get('full', 0) * 1000)} ms, "
                              f"flux only (`ids=False, meta=False`) {num(seconds.get('flux_only', 0) * 1000)} ms: "
                              f"{num(it.get('full_vs_flux_only'))}x; ids only {num(seconds.get('ids_only', 0) * 1000)} ms "
                              f"(median of {it.get('repeats')})")
    if data.get("real"):
        summary.notes.append(f"Real spectra: the {data['real'].get('distinct_files')} FITS files of ../shared/data, "
                             f"replicated to {num(data['real'].get('files'))}. Synthetic spectra: "
                             f"{(data.get('synthetic') or {}).get('source', '')}.")
    if data.get("load_note"):
        summary.notes.append(_sentence(data["load_note"]) + ".")
    return summary


def _readers(stem: str, data: dict[str, Any], usage: str) -> Summary:
    header = ["approach", "files", "files per CPU second", "files per wall second", "peak RSS MB", "traced kB per file"]
    rows = [(name, num(r.get("files")), num(r.get("files_per_cpu_s")), num(r.get("files_per_wall_s")),
             num(r.get("peak_rss_mb")), num(r.get("peak_traced_kb_per_file")))
            for name in ("naive", "ours") if isinstance((r := data.get(name)), dict)]
    summary = Summary(f"{_sentence(data.get('description', 'reading'))}: oraculum's reader (ours) against "
                      "the earlier systems' astropy approach (naive, the baseline).", header, rows,
                      command=_with(usage, [("--files", data.get("files"))]))
    if "speedup_per_core_cpu_time" in data:
        summary.ratios.append(f"ours / naive: {num(data['speedup_per_core_cpu_time'])}x per core (CPU time), "
                              f"{num(data.get('speedup_wall_clock'))}x wall clock")
    checks = data.get("checks") or {}
    if checks:
        summary.ratios.append(f"on {checks.get('real_files')} real files: bit-identical to the astropy reference path "
                              f"{checks.get('bit_identical_to_reference')}, within 1e-5 of naive "
                              f"{checks.get('allclose_1e-5_to_naive')}, largest difference "
                              f"{num(checks.get('max_abs_difference_to_naive'))}")
    if data.get("distinct_real_files"):
        summary.notes.append(f"{data['distinct_real_files']} distinct real LAMOST files, replicated.")
    return summary


def _scoring(stem: str, data: dict[str, Any], usage: str) -> Summary:
    header = ["figure", "value"]
    rows: list[Sequence[object]] = [
        ("float32 matmul, GFLOP/s (this CPU's bound)", num(data.get("matmul_gflop_s"))),
        ("network cost, MFLOP per spectrum", num((data.get("flops_per_spectrum") or 0) / 1e6)),
        ("floating-point bound, spectra/s", num(data.get("bound_spectra_s"))),
    ]
    rows += [(f"scoring, chunks of {chunk}, spectra/s", num(value)) for chunk, value in (data.get("throughput_by_chunk") or {}).items()]
    rows.append(("scoring with the embedding, spectra/s", num(data.get("throughput_with_embedding_spectra_s"))))
    mc = data.get("mc_dropout") or {}
    if mc:
        rows += [(f"MC dropout T={mc.get('samples')}, cached features, spectra/s", num(mc.get("cached_spectra_s"))),
                 (f"MC dropout T={mc.get('samples')}, whole network each pass, spectra/s", num(mc.get("uncached_spectra_s")))]
    stream = data.get("stream") or {}
    if stream:
        rows += [(f"streaming {num(stream.get('pool_spectra'))} spectra ({num(stream.get('pool_float32_mib'))} MiB "
                  "as float32) with a Parquet score file, spectra/s", num(stream.get("spectra_s"))),
                 ("  peak resident memory growth while streaming, MiB", num(stream.get("rss_growth_mib")))]
    summary = Summary("Scoring throughput of the published network (`podsztavek2020`, 140 points) on this CPU, "
                      "MC-dropout cost and streaming memory.", header, rows,
                      command=_with(usage, [("--pool", stream.get("pool_spectra"))]))
    if data.get("fraction_of_bound") is not None:
        summary.ratios.append(f"best scoring throughput / floating-point bound (the baseline): {num(data['fraction_of_bound'])}")
    if mc:
        summary.ratios.append(f"MC dropout, cached / uncached: {num(mc.get('speedup'))}x (the FLOP count predicts "
                              f"{num(mc.get('speedup_predicted_from_flops'))}x); cached costs "
                              f"{num(mc.get('cached_cost_vs_plain_scoring'))}x plain scoring")
    if stream:
        summary.ratios.append(f"memory growth / pool size: {num(stream['rss_growth_mib'] / stream['pool_float32_mib'])} "
                              "(scoring streams shards; the pool is never held in memory)")
    if data.get("synthetic_data"):
        summary.notes.append("Synthetic data (random float32 rows; the network's cost does not depend on the values).")
    return summary


def _generic(stem: str, data: dict[str, Any], usage: str) -> Summary:
    rows = [(key.replace("_", " "), num(value)) for key, value in data.items()
            if isinstance(value, (int, float, str)) and not isinstance(value, bool) and key not in ("when", "date")]
    return Summary(str(data.get("description") or data.get("benchmark") or stem),
                   ["figure", "value"], rows, ratios=_recorded_ratios(data), targets=_verdict_targets(data, None),
                   notes=["(No summary is written for this benchmark yet: its top-level figures are shown as they are.)"],
                   command=usage)


_SUMMARISERS: dict[str, Callable[[str, dict[str, Any], str], Summary]] = {
    "api": _api, "backtest": _backtest, "dashboard": _dashboard, "ingest": _ingest, "readers": _readers,
    "scoring": _scoring,
}


def summarise(stem: str, data: dict[str, Any], root: Path) -> Summary:
    """The summary of results file ``<stem>.json``; its benchmark is the stem's first word
    (``api-light`` comes from ``benchmarks/bench_api.py``)."""
    name = stem.split("-")[0]
    usage = _usage(root / "benchmarks" / f"bench_{name}.py")
    return _SUMMARISERS.get(name, _generic)(stem, data, usage)
