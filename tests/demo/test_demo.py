"""``oraculum demo`` as a person runs it: a real subprocess in a temporary store, starting the real
API (with the local runner, whose Jobs are real subprocesses running TensorFlow) and the real
dashboard, and stopped with real signals.

* headless: interrupted with SIGINT while iteration 1 trains, then run again: it resumes (the
  labels and iteration 0 stay as they were, nothing is labelled twice), finishes, and prints the
  performance table; no process of either run is left behind.
* interactive (what ``make demo`` runs): the printed token signs in to the printed dashboard, the
  batch is labelled through the dashboard's own API proxy as the labelling page does, submitted,
  and the loop ends; Ctrl-C stops it with status 0 and no orphans.

Every figure here comes from synthetic data. Nothing is mocked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner

from oraculum.cli.main import main
from oraculum.client.manifests import spec_differences
from oraculum.client.records import CURVE_COLUMNS, typed_table
from oraculum.demo.manifests import DEMO_MANIFESTS, load_plan
from oraculum.demo.performance import performance_rows, performance_table
from oraculum.demo.processes import ensure_tokens, free_port
from oraculum.demo.sources import der_snr, select_source
from oraculum.ingest.pipeline import run_preprocess
from oraculum.settings import Settings
from oraculum.spectra.datasets import Dataset
from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid
from oraculum.store import LocalStore
from tests.spectra.layouts import fits_bytes, lamost_lrs_image, lamost_wavelength_A, star_flux

ROOT = Path(__file__).resolve().parents[2]
MARKER = "ORACULUM_TEST_DEMO"


class DemoProcess:
    """`oraculum --store STORE demo ARGS` with its output in a file, and a marker in the environment
    of every process it starts (directly or through the API and its runner)."""

    def __init__(self, store: Path, output: Path, *args: str) -> None:
        self.store = store
        self.output = output
        self.marker = uuid.uuid4().hex
        env = {**os.environ, MARKER: self.marker, "TF_CPP_MIN_LOG_LEVEL": "3"}
        for name in ("ORACULUM_STORE", "ORACULUM_REDIS_URL", "ORACULUM_API_TOKENS", "ORACULUM_AUTH_FILE"):
            env.pop(name, None)
        with open(output, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "oraculum.cli.main", "--store", str(store), "demo", *args], cwd=str(ROOT), env=env,
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"the demo exited ({self.process.returncode}) before {what}:\n{self.text()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.text()[-4000:]}")

    def finish(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the demo did not finish within {timeout} s:\n{self.text()[-4000:]}") from None

    def kill(self) -> None:
        """Last resort for a failed test: kill the demo and everything it started."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid in processes_with(self.marker):
            os.kill(pid, signal.SIGKILL)


def processes_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment carries our marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{MARKER}={marker}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def command_lines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


def assert_no_orphans(demo: DemoProcess) -> None:
    deadline = time.monotonic() + 5
    while processes_with(demo.marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_with(demo.marker)
    assert not left, f"processes left behind: {command_lines(left)}"


def table(text: str) -> list[list[str]]:
    """The rows of the performance table the demo printed last."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("iteration  labels"))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip() or not line[0].isdigit():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def label_events(store: Path, experiment: str, iteration: int) -> dict[str, dict[str, Any]]:
    folder = store / "experiments" / experiment / "labels" / f"{iteration:05d}"
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def stat(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """examples/demo.yaml as it is, but for 4 epochs (test time; what `make demo` runs is checked below)."""
    documents = [d for d in yaml.safe_load_all(DEMO_MANIFESTS) if d]
    for document in documents:
        if document["kind"] == "ActiveLearningExperiment":
            document["spec"]["model"]["epochs"] = 4
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def job_running(demo: "DemoProcess", *words: str) -> bool:
    return any(all(word in line for word in words) for line in command_lines(processes_with(demo.marker)))


def test_headless_demo_is_interrupted_resumes_and_prints_the_table(tmp_path: Path, manifests: Path) -> None:
    store = tmp_path / "store"
    experiment, dataset = "demo-emission-synthetic-300-headless", "demo-synthetic-300"
    args = ["--headless", "--count", "300", "--iterations", "2", "--api-port", str(free_port()), "--timeout", "400",
            "--manifests", str(manifests)]
    iteration = store / "experiments" / experiment / "iterations"
    first = DemoProcess(store, tmp_path / "first.log", *args)
    try:
        # interrupt while a Job of the runner runs after the first batch was submitted: iteration 0's
        # evaluation, or iteration 1 training (TensorFlow), each a subprocess of the API's runner
        first.wait_for(lambda: (store / "experiments" / experiment / "signals" / "labels-submitted-0.json").exists()
                       and (job_running(first, " evaluate ", "--iteration 0")
                            or job_running(first, " iterate ", "--iteration 1")),
                       240, "a Job after the first batch")
        assert "iteration 0: the simulated oracle labelled 40 spectra through the API" in first.text()
        run0 = stat(iteration / "0" / "run.json")
        events0 = label_events(store, experiment, 0)
        assert sum(len(e["items"]) for e in events0.values()) == 40
        assert {e["who"] for e in events0.values()} == {"simulated-oracle"}
        first.process.send_signal(signal.SIGINT)
        assert first.finish(120) == 130, first.text()[-3000:]
        assert "stopped. Run the same command again to resume" in first.text()
        assert_no_orphans(first)
        assert not (iteration / "1" / "run.json").exists(), "iteration 1 finished before the interrupt"
    finally:
        first.kill()

    second = DemoProcess(store, tmp_path / "second.log", *args)
    try:
        assert second.finish(420) == 0, second.text()[-4000:]
        assert_no_orphans(second)
    finally:
        second.kill()
    out = second.text()
    assert "reusing the API tokens" in out
    assert f"applied ActiveLearningExperiment '{experiment}': it exists with the same spec: resuming" in out
    # iteration 0 was neither run nor labelled again; iteration 1 was labelled once, item by item
    assert stat(iteration / "0" / "run.json") == run0
    assert label_events(store, experiment, 0) == events0
    batch1 = json.loads((iteration / "1" / "batch.json").read_text())
    items1 = [item["index"] for e in label_events(store, experiment, 1).values() for item in e["items"]]
    assert sorted(items1) == sorted(item["index"] for item in batch1["items"])
    # the table: one row per iteration, labels as the API counted them, the cold start without a model
    rows = table(out)
    assert [row[0] for row in rows] == ["0", "1"]
    assert rows[0][1] == "40" and rows[0][2] == "n/a (no model yet)"
    assert int(rows[1][1]) == 40 + len(batch1["items"])
    metrics1 = json.loads((iteration / "1" / "metrics.json").read_text())
    assert rows[1][3] == str(metrics1["predicted_target_count"])
    candidates = list(csv.DictReader(io.StringIO((iteration / "1" / "candidates.csv").read_text())))
    assert len(candidates) == metrics1["predicted_target_count"]
    assert "true precision*" in out and "(synthetic data)" in out
    assert f"/api/v1/experiments/{experiment}/iterations/1/candidates.csv" in out
    # the store: the dataset, the finished experiment's artifacts and status, the private token file
    index = json.loads((store / "datasets" / dataset / "index.json").read_text())
    assert index["count"] + index["rejected"] == 300
    for artifact in ("model.keras", "candidates.vot", "metrics.json", "map.json"):
        assert (iteration / "1" / artifact).is_file(), artifact
    status = json.loads((store / "local" / "activelearningexperiments" / experiment / "status.json").read_text())
    assert status["status"]["phase"] == "Succeeded" and status["status"]["iteration"] == 1
    assert (store / "demo" / "auth.yaml").stat().st_mode & 0o777 == 0o600


def test_interactive_demo_labels_through_the_dashboard_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """What `make demo` runs (examples/demo.yaml as it is), on a smaller pool."""
    store = tmp_path / "store"
    experiment = "demo-emission-synthetic-200"
    demo = DemoProcess(store, tmp_path / "demo.log", "--count", "200", "--iterations", "1",
                       "--api-port", str(free_port()), "--port", str(free_port()))
    try:
        found = demo.wait_for(lambda: re.search(r"Dashboard:\s+(\S+).*?Sign in with this token[^:]*: (\S+)",
                                                demo.text(), re.S), 120, "the dashboard's address and token")
        url, token = found.group(1), found.group(2)
        demo.wait_for(lambda: "is waiting for you" in demo.text(), 180, "the first batch")
        assert f"{url}e/{experiment}/label" in demo.text()
        with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as browser:
            refused = browser.post("_oraculum/login", data={"token": "not-the-token-0123456789"})
            assert "error=" in refused.headers["location"]
            signed_in = browser.post("_oraculum/login", data={"token": token, "next": "/"})
            assert signed_in.status_code == 303 and "oraculum_session=" in signed_in.headers["set-cookie"]
            assert browser.get("").status_code == 200
            proxy = "_oraculum/api/v1"
            assert browser.get(f"{proxy}/whoami").json() == {"name": "astronomer", "role": "admin"}
            batch = browser.get(f"{proxy}/experiments/{experiment}/batch").json()
            assert batch["iteration"] == 0 and batch["size"] == 40
            for item in batch["items"]:  # as the labelling page saves a key press
                saved = browser.put(f"{proxy}/experiments/{experiment}/iterations/0/labels/{item['index']}",
                                    json={"label": "absorption", "comment": None},
                                    headers={"X-Oraculum-Request": "1"})
                assert saved.status_code == 201, saved.text
            submitted = browser.post(f"{proxy}/experiments/{experiment}/iterations/0/submit",
                                     headers={"X-Oraculum-Request": "1"})
            assert submitted.status_code == 202, submitted.text
        demo.wait_for(lambda: "the dashboard stays up" in demo.text(), 120, "the experiment to finish")
        out = demo.text()
        assert "iteration 0 evaluated: 40 labels so far" in out
        assert table(out)[0][:2] == ["0", "40"]
        demo.process.send_signal(signal.SIGINT)
        assert demo.finish(120) == 0, demo.text()[-3000:]
        assert_no_orphans(demo)
    finally:
        demo.kill()
    events = label_events(store, experiment, 0)
    assert {e["who"] for e in events.values()} == {"astronomer"}
    assert sum(len(e["items"]) for e in events.values()) == 40


# -- the parts, without servers --------------------------------------------------------------------


def test_the_demo_manifests_are_retargeted_not_rewritten(tmp_path: Path) -> None:
    plan = load_plan()
    assert (plan.ppj_name, plan.dataset, plan.experiment_name) == ("demo-synthetic-3000", "demo-synthetic-3000",
                                                                   "demo-emission")
    assert plan.experiment["spec"]["oracle"] == {"type": "human"}
    assert plan.truth == "archive/synthetic-3000-s0/labels.csv"
    other = load_plan(count=500, seed=2, iterations=3, headless=True)
    assert other.dataset == "demo-synthetic-500-s2" and other.experiment["spec"]["dataset"] == other.dataset
    assert other.experiment_name == "demo-emission-synthetic-500-s2-headless"
    assert other.experiment["spec"]["stopping"]["maxIterations"] == 3
    assert other.preprocessing["spec"]["source"]["synthetic"] == {"count": 500, "seed": 2}
    # a folder of real files: its own names, its labels.csv as the headless oracle's truth
    folder = tmp_path / "My Archive"
    folder.mkdir()
    (folder / "labels.csv").write_text("filename,label\nspec-1.fits,emission\n")
    real = load_plan(source=folder)
    assert real.preprocessing["spec"]["source"] == {"url": str(folder.resolve())}
    assert re.fullmatch(r"demo-my-archive-[0-9a-f]{6}", real.dataset) and real.truth == str(folder.resolve() / "labels.csv")
    # only real spec changes count as a conflict (defaults filled in on both sides)
    assert spec_differences(plan.experiment, dict(plan.experiment["spec"], suspend=False)) == []
    assert spec_differences(plan.experiment, other.experiment["spec"]) == [
        "spec.dataset: 'demo-synthetic-500-s2' -> 'demo-synthetic-3000'",
        "spec.stopping.maxIterations: 3 -> 5"]
    with pytest.raises(ValueError, match="metadata.name"):
        load_plan(experiment="Not A Name")


def test_the_performance_table_reads_the_learning_curve_as_the_client_gives_it() -> None:
    # what Client.metrics makes of the API's points: -1 for a missing count, NaN for a missing number
    curve = typed_table([
        {"iteration": 1, "labels_total": 58, "estimate": 0.9, "low": 0.8, "high": 0.95, "predicted_targets": 12,
         "estimated_targets": 10.8, "estimated_targets_low": 9.6, "estimated_targets_high": 11.4},
        {"iteration": 0, "labels_total": 40}], CURVE_COLUMNS)
    history = [{"iteration": 0, "durations": {"iterate": 1.5, "evaluate": 0.25}}, {"iteration": 1}]
    rows = performance_rows(curve, history, {1: (0.75, 0.5)})
    assert [(r.iteration, r.labels, r.predicted, r.estimate, r.seconds) for r in rows] == [
        (0, 40, None, None, 1.75), (1, 58, 12, 0.9, None)]
    lines = performance_table(rows, 0.95, with_truth=True).splitlines()
    assert lines[0].split("  ")[0] == "iteration" and "precision [95% interval]" in lines[0]
    assert re.split(r"\s{2,}", lines[2].strip()) == ["0", "40", "n/a (no model yet)", "n/a", "n/a", "1.8", "n/a", "n/a"]
    assert re.split(r"\s{2,}", lines[3].strip()) == ["1", "58", "0.900 [0.800, 0.950]", "12", "11 [10, 11]", "n/a",
                                                     "0.750", "0.500"]


def test_demo_manifests_are_built_in_and_the_same_as_the_example() -> None:
    """`oraculum demo` needs no checkout (a wheel has no examples/): the default plan comes from the
    package, and examples/demo.yaml (for kubectl, written by `oraculum docs`) holds the same manifests."""
    built_in, checkout = load_plan(), load_plan(ROOT / "examples" / "demo.yaml")
    assert (built_in.preprocessing, built_in.experiment) == (checkout.preprocessing, checkout.experiment)
    assert built_in.truth == "archive/synthetic-3000-s0/labels.csv"


def test_demo_manifests_file_errors_name_the_file(tmp_path: Path) -> None:
    only = tmp_path / "one.yaml"
    documents = list(yaml.safe_load_all(DEMO_MANIFESTS))
    only.write_text(yaml.safe_dump(documents[1]))
    with pytest.raises(ValueError, match=r"one.yaml: the demo needs exactly one PreprocessingJob and one"):
        load_plan(only)
    with pytest.raises(ValueError, match=r"missing.yaml: cannot read the demo's manifests.*--manifests"):
        load_plan(tmp_path / "missing.yaml")


def test_tokens_are_made_once_private_and_reused(tmp_path: Path) -> None:
    first = ensure_tokens(tmp_path / "demo")
    assert first.created and first.path.stat().st_mode & 0o777 == 0o600
    assert first.person != first.oracle
    first.path.chmod(0o644)
    again = ensure_tokens(tmp_path / "demo")
    assert not again.created and (again.person, again.oracle) == (first.person, first.oracle)
    assert again.path.stat().st_mode & 0o777 == 0o600
    entries = yaml.safe_load(first.path.read_text())
    assert {(e["name"], e["role"]) for e in entries} == {("astronomer", "admin"), ("simulated-oracle", "oracle")}


def test_demo_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    runner = CliRunner()
    answer = runner.invoke(main, ["--store", "s3://bucket", "demo"])
    assert answer.exit_code != 0 and "local folder" in answer.output
    answer = runner.invoke(main, ["--store", str(tmp_path / "s"), "demo", "--source", str(tmp_path), "--count", "50"])
    assert answer.exit_code != 0 and "either --source or --count" in answer.output
    answer = runner.invoke(main, ["--store", str(tmp_path / "s"), "demo", "--headless", "--source", str(tmp_path)])
    assert answer.exit_code == 1 and "--headless needs the true labels" in answer.output
    assert not any((tmp_path / "s").glob("demo/logs/*")), "no server was started"


# -- --source: one resolution on the grid, and a minimum S/N ------------------------------------------


def _lamost(snr: float, depth: float = -0.4) -> bytes:
    """A LAMOST low-resolution file (pixels of λ/Δλ ≈ 4,343) whose header states S/N ``snr``."""
    return lamost_lrs_image(star_flux(lamost_wavelength_A(), line=depth).astype(np.float32), SNRR=snr)


def _high_resolution(noise: float, seed: int = 0) -> bytes:
    """An Ondřejov-like 1-D image in air, 0.25 Å pixels (λ/Δλ ≈ 26,000), no S/N in its header:
    Gaussian noise of ``noise`` times the continuum (S/N about 1/noise)."""
    wavelength = 6400.0 + 0.25 * np.arange(1600)
    flux = star_flux(wavelength) * (1 + np.random.default_rng(seed).normal(0, noise, wavelength.size))
    hdu = fits.PrimaryHDU(flux.astype(np.float32))
    hdu.header.update({"CRVAL1": 6400.0, "CDELT1": 0.25, "CRPIX1": 1, "CTYPE1": "LINEAR", "AIRORVAC": "air"})
    return fits_bytes(hdu)


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


LAMOST_FILES = {"lamost/spec-1.fits": _lamost(40.0), "lamost/spec-2.fits": _lamost(25.0, 0.5),
                "lamost/spec-3.fits": _lamost(90.0), "lamost/spec-faint.fits": _lamost(1.0),
                "broken.fits": b"SIMPLE  = T" + b" " * 100}
HIGH_RESOLUTION_FILES = {"ondrejov/clean.fits": _high_resolution(0.005), "ondrejov/noisy.fits": _high_resolution(1.0, 1)}


def test_source_of_several_resolutions_is_refused_unless_mixing_is_asked_for(tmp_path: Path) -> None:
    """LAMOST low-resolution and Ondřejov-like spectra in one folder: before, the demo put them on
    one grid without a word."""
    folder = _folder(tmp_path / "mixed", {**LAMOST_FILES, **HIGH_RESOLUTION_FILES})
    store = tmp_path / "store"
    answer = CliRunner().invoke(main, ["demo", "--source", str(folder), "--store", str(store)])
    assert answer.exit_code == 1, answer.output
    assert "2 different resolutions" in answer.output and "--mix-instruments" in answer.output
    assert "lamost-lrs-image (3 files" in answer.output and "fits-image-1d (1 file" in answer.output
    assert "λ/Δλ ≈ 4,343" in answer.output
    assert not (store / "demo" / "logs").exists(), "no server was started"

    said: list[str] = []
    selection = select_source(folder, WavelengthGrid(), store, mix=True, echo=said.append)
    assert any(line.startswith("warning: mixing 2 resolutions") for line in said), said
    assert selection is not None and (selection / "ondrejov" / "clean.fits").is_file()
    assert not (selection / "ondrejov" / "noisy.fits").exists() and not (selection / "lamost" / "spec-faint.fits").exists()


def test_source_spectra_below_the_minimum_snr_are_left_out(tmp_path: Path) -> None:
    """S/N from the header (LAMOST SNRR) or, where none is given, estimated from the flux (DER_SNR);
    unreadable files stay, for ingestion to reject with the reason."""
    folder = _folder(tmp_path / "lamost-pool", LAMOST_FILES)
    store = tmp_path / "store"
    said: list[str] = []
    selection = select_source(folder, WavelengthGrid(), store, echo=said.append)
    assert selection is not None and selection.is_relative_to(store / "archive")
    assert sorted(p.relative_to(selection).as_posix() for p in selection.rglob("*.fits")) == [
        "broken.fits", "lamost/spec-1.fits", "lamost/spec-2.fits", "lamost/spec-3.fits"]
    assert "leaving out 1 spectrum below S/N 5" in said[1] and "lamost/spec-faint.fits (S/N 1.0, header)" in said[1]
    assert "1 unreadable" in said[0]
    record = json.loads((selection / "selection.json").read_text())
    assert record["left_out"] == [{"key": "lamost/spec-faint.fits", "snr": 1.0, "snr_from": "header"}]
    assert select_source(folder, WavelengthGrid(), store, echo=said.append) == selection  # made once, reused
    assert select_source(folder, WavelengthGrid(), store, min_snr=0, echo=said.append) is None  # the folder as it is

    # the PreprocessingJob reads the selection, under names of its own; ids keep their relative paths
    plan, whole = load_plan(source=folder, selection=selection), load_plan(source=folder)
    assert plan.preprocessing["spec"]["source"] == {"url": str(selection.resolve())}
    assert plan.dataset != whole.dataset and plan.dataset.startswith("demo-lamost-pool-")
    report = run_preprocess(str(selection), "picked", PreprocessingParameters(), Settings(store=str(store)))
    ids = [sid for batch in Dataset.open(LocalStore(store), "picked").iter_batches(flux=False, meta=False)
           for sid in batch.ids]
    assert ids == ["lamost/spec-1", "lamost/spec-2", "lamost/spec-3"] and report.reasons == {"truncated": 1}

    estimated = _folder(tmp_path / "ondrejov-pool", HIGH_RESOLUTION_FILES)
    said.clear()
    chosen = select_source(estimated, WavelengthGrid(), store, echo=said.append)
    assert chosen is not None and [p.name for p in chosen.rglob("*.fits")] == ["clean.fits"]
    assert re.search(r"ondrejov/noisy\.fits \(S/N [01]\.\d, estimated\)", said[1]), said


def test_der_snr_estimates_the_noise_of_a_spectrum() -> None:
    flux = 1 + np.random.default_rng(2).normal(0, 0.01, 5000)
    assert 90 < (der_snr(flux) or 0) < 110
    assert der_snr(np.ones(3)) is None


def test_source_checks_need_a_source(tmp_path: Path) -> None:
    answer = CliRunner().invoke(main, ["--store", str(tmp_path / "s"), "demo", "--min-snr", "3"])
    assert answer.exit_code != 0 and "give --source DIR" in answer.output
