"""Labelling speed of the dashboard: the time from a key press to the next spectrum on screen.

Real parts, as in tests/dashboard/test_dashboard.py: the API (`oraculum serve api`) on a synthetic world
made by the real engine (tests/support/api_world.py: 240 synthetic LAMOST-format spectra, the tiny network,
a batch of 18 chosen by entropy with a blind estimation sample), the dashboard under gunicorn with
an ingress prefix, and Debian's headless Chromium (software rendering, no GPU) driven by selenium.

Measured in the page (``window.oraculum.perf``): from the keydown event to the frame after Plotly
has drawn the next spectrum (``plotly_afterplot``, then two animation frames, i.e. painted), for

* ``next``: the right arrow (moving on through the batch; the left arrow back),
* ``label``: a class key (the label is queued for the API and the next unlabelled spectrum shown),

and, for each label, the time until the API acknowledged it (written to the store). Also from
outside the page: selenium sends the key and polls until the shown spectrum changed (includes
WebDriver's own round trips, an upper bound).

    .venv/bin/python benchmarks/bench_dashboard.py [--rounds 3] [--world DIR]

Writes benchmarks/results/dashboard.json. All figures come from synthetic data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_MS = 150.0


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"n": len(values), "median_ms": round(statistics.median(values), 1), "p90_ms": pct(0.9),
            "p99_ms": pct(0.99), "max_ms": round(max(values), 1), "mean_ms": round(statistics.fmean(values), 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Passes through the batch with the arrow keys.")
    parser.add_argument("--world", type=Path, default=None,
                        help="A store made by tests/support/api_world.py (default: make one in a temporary folder).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dashboard.json")
    args = parser.parse_args(argv)

    import api_world
    from dashboard_harness import (
        Api,
        DashboardProcess,
        browser,
        find_chromium,
        shown_index,
        sign_in,
        start_api,
        wait_for,
    )
    from hardware import hardware
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _, _, why = find_chromium()
    if why:
        raise SystemExit(f"bench_dashboard: {why}")
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="oraculum-bench-dashboard-"))
    started = time.perf_counter()
    store = work / "store"
    if args.world:
        shutil.copytree(args.world, store)
    else:
        print("building the synthetic world with the real engine (about half a minute)...", flush=True)
        api_world.build(store)
    world_seconds = time.perf_counter() - started
    api = start_api(store, work / "api.log", run_jobs=False)
    dashboard = DashboardProcess(api.url, work / "dashboard.log").start()
    driver = browser(work / "downloads")
    result: dict[str, Any] = {}
    try:
        sign_in(driver, dashboard.url)
        driver.get(dashboard.url + f"e/{api_world.EXPERIMENT}/label")
        wait_for(driver, lambda d: shown_index(d) is not None, 30)
        items = Api(api.url).get(f"/experiments/{api_world.EXPERIMENT}/batch")["items"]
        time.sleep(1.0)  # the details and neighbours of the first spectrum settle

        def press(key: str) -> float:
            before = shown_index(driver)
            t0 = time.perf_counter()
            ActionChains(driver).send_keys(key).perform()
            wait_for(driver, lambda d: shown_index(d) != before, 10)
            return (time.perf_counter() - t0) * 1000

        def in_page() -> list[float]:
            return [float(x) for x in driver.execute_script("var s = window.oraculum.perf.samples.slice();"
                                                            "window.oraculum.perf.samples = []; return s;")]

        outside: dict[str, list[float]] = {"next": [], "label": []}
        inside: dict[str, list[float]] = {"next": [], "label": []}
        in_page()
        for _ in range(args.rounds):
            for key in [Keys.ARROW_RIGHT] * (len(items) - 1) + [Keys.ARROW_LEFT] * (len(items) - 1):
                outside["next"].append(press(key))
                time.sleep(0.05)
        time.sleep(0.3)
        inside["next"] = in_page()
        # label the batch: each class key saves through the API and shows the next unlabelled spectrum
        driver.get(dashboard.url + f"e/{api_world.EXPERIMENT}/label")
        wait_for(driver, lambda d: shown_index(d) is not None, 30)
        time.sleep(1.0)
        in_page()
        for position in range(len(items) - 1):
            outside["label"].append(press("123"[position % 3]))
            time.sleep(0.05)
        time.sleep(0.3)
        inside["label"] = in_page()
        wait_for(driver, lambda d: d.execute_script("return window.oraculum.outbox.size()") == 0, 30)
        saves = [float(x) for x in driver.execute_script("return window.oraculum.perf.saves")]
        labelled = len(Api(api.url).labels(api_world.EXPERIMENT, 1))
        trace = driver.execute_script("return window.oraculum.perf.trace")
        phases = {"dispatch (keydown to callback)": [r[0] for r in trace],
                  "state machine (callback)": [r[1] - r[0] for r in trace],
                  "Dash update + Plotly draw": [r[2] - r[1] for r in trace],
                  "paint (two frames)": [r[3] - r[2] for r in trace]}
        result = {
            "benchmark": "dashboard key press to next spectrum shown",
            "target_ms": TARGET_MS,
            "hardware": hardware(),
            "browser": driver.capabilities.get("browserVersion"),
            "chromium_flags": "headless, software rendering (no GPU)",
            "batch_size": len(items), "points_per_spectrum": 140, "rounds": args.rounds,
            "in_page": {kind: summary(values) for kind, values in inside.items()},
            "selenium_round_trip": {kind: summary(values) for kind, values in outside.items()},
            "label_saved_by_api": summary(saves),
            "label_saved_note": "the request leaves 80 ms after the key press (the label is in localStorage at once), "
                                "so that it never competes with drawing the next spectrum",
            "where_the_time_goes_median_ms": {name: round(statistics.median(v), 1) for name, v in phases.items() if v},
            "labels_in_api": labelled,
            "world_build_seconds": round(world_seconds, 1),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "load_note": "other processes on the 2 cores slow every figure; a high load average marks a contended run",
            "data": "synthetic (oraculum.spectra.synth via tests/support/api_world.py), not a real archive",
        }
    finally:
        driver.quit()
        dashboard.stop()
        api.stop()
        if not os.environ.get("ORACULUM_KEEP_BENCH"):
            shutil.rmtree(work, ignore_errors=True)

    rows = [("next spectrum (arrow key)", result["in_page"]["next"], result["selenium_round_trip"]["next"]),
            ("label + next (class key)", result["in_page"]["label"], result["selenium_round_trip"]["label"])]
    print(f"\nkey press -> next spectrum shown (target < {TARGET_MS:.0f} ms); Chromium {result['browser']} headless, "
          f"{result['hardware'].get('cpu')}")
    print(f"{'':28} {'n':>4} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}   {'selenium median':>16}")
    for name, inner, outer in rows:
        print(f"{name:28} {inner['n']:>4} {inner['median_ms']:>7.1f}  {inner['p90_ms']:>7.1f}  {inner['p99_ms']:>7.1f}  "
              f"{inner['max_ms']:>7.1f}   {outer['median_ms']:>15.1f}")
    saved = result["label_saved_by_api"]
    print(f"{'label stored (API ack)':28} {saved['n']:>4} {saved['median_ms']:>7.1f}  {saved['p90_ms']:>7.1f}  "
          f"{saved['p99_ms']:>7.1f}  {saved['max_ms']:>7.1f}")
    print("where the time goes (median ms): " + ", ".join(f"{k} {v}" for k, v in
                                                          result["where_the_time_goes_median_ms"].items()))
    print("(all figures in ms; synthetic data)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
