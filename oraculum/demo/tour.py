"""``oraculum demo``: the whole loop on one machine, through the same doors a cluster has.

On the embedded default (a local folder as the object store, in-process live state instead of
Redis, the local runner instead of Kubernetes) the demo

1. makes (first run) or reuses the API tokens in ``<store>/demo/auth.yaml`` (mode 0600);
2. starts ``oraculum serve api --run-jobs`` and ``oraculum serve dashboard`` on localhost;
3. applies the demo's manifests (``examples/demo.yaml``: a PreprocessingJob and an
   ActiveLearningExperiment with a human oracle) through the API, as ``kubectl`` would;
4. follows both resources through the API and says what happens at each step, until the oracle
   (a person in the dashboard, or with ``--headless`` a simulated oracle that labels through the
   API exactly as the dashboard does) has labelled the last batch and the stopping rule ends the
   experiment; then prints the performance table and where the candidates are.

Ctrl-C (SIGINT) or SIGTERM stops the servers in order and every Job they started (see
:mod:`oraculum.demo.processes`); nothing is half-written because every store write is atomic and
an interrupted Job is simply run again. Running the same command again resumes: the store keeps the
registered resources with their status, the labels and every finished iteration.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from oraculum.client.errors import ClientError
from oraculum.client.records import Resource
from oraculum.client.rest import Client
from oraculum.demo.manifests import DemoPlan, load_plan
from oraculum.demo.performance import performance_rows, performance_table
from oraculum.demo.processes import (
    RUN_MARKER,
    ChildServer,
    DemoError,
    DemoTokens,
    ensure_tokens,
    free_port,
    port_is_free,
    stop_marked,
)
from oraculum.manifests import ManifestError

__all__ = ["DemoOptions", "run_demo"]

PPJ = "PreprocessingJob"
ALE = "ActiveLearningExperiment"
#: Exit status of a headless run stopped by a signal before it finished (128 + SIGINT).
INTERRUPTED = 130


@dataclass
class DemoOptions:
    """What ``oraculum demo`` was asked to do (see the CLI's help for each option)."""

    store: Path
    headless: bool = False
    #: None: the built-in ones (:data:`oraculum.demo.manifests.DEMO_MANIFESTS`).
    manifests: Path | None = None
    count: int | None = None
    seed: int | None = None
    source: Path | None = None
    #: ``--source`` only: spectra below this S/N are left out (None: :data:`~oraculum.demo.sources.DEFAULT_MIN_SNR`).
    min_snr: float | None = None
    #: ``--source`` only: put spectra of several resolutions on one grid instead of refusing.
    mix_instruments: bool = False
    labels: str | None = None
    iterations: int | None = None
    experiment: str | None = None
    api_port: int | None = None
    port: int | None = None
    dashboard: bool | None = None
    timeout: float | None = None
    poll: float = 1.0

    @property
    def with_dashboard(self) -> bool:
        return (not self.headless) if self.dashboard is None else self.dashboard


Echo = Callable[[str], None]


@contextlib.contextmanager
def _signals(stop: threading.Event, hurry: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a second one sets ``hurry``: shorter grace periods)."""
    def handle(number: int, _frame: Any) -> None:
        (hurry if stop.is_set() else stop).set()

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _store_lock(folder: Path) -> Iterator[None]:
    """One demo per store: two local runners on the same resources would run every Job twice."""
    folder.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(folder / "demo.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held while running
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            raise DemoError(f"another `oraculum demo` runs on the store {folder.parent} (pid {handle.read().strip() or '?'}): "
                            "stop it first, or give this one another --store") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


class Demo:
    """One run of the demo; :meth:`run` returns the exit status."""

    def __init__(self, options: DemoOptions, echo: Echo) -> None:
        self.options = options
        self.root = options.store.resolve()
        self.say = echo
        self.run_id = uuid.uuid4().hex
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.servers: list[ChildServer] = []
        self.api: Client | None = None
        self.oracle_api: Client | None = None
        self.dashboard_url: str | None = None
        self._truth: Any = None
        self._shown: dict[str, Any] = {}

    def echo(self, message: str) -> None:
        self.say(f"{time.strftime('%H:%M:%S')} {message}")

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> int:
        with _signals(self.stop, self.hurry):
            try:
                with _store_lock(self.root / "demo"):
                    try:
                        status = self._steps()
                    finally:
                        self._shutdown()
            except DemoError as error:
                self.say(f"error: {error}")
                return 1
        if status is not None:
            return status
        self.echo(f"stopped. Run the same command again to resume: the datasets, labels, iterations and models are "
                  f"kept in {self.root}")
        return INTERRUPTED if self.options.headless else 0

    def _steps(self) -> int | None:
        """Everything between start and shutdown; None when a signal stopped it."""
        plan = self._plan()
        tokens = ensure_tokens(self.root / "demo")
        try:
            self._start(plan, tokens)
            if self.stop.is_set():
                return None
            return self._follow(plan)
        except ClientError as error:
            self._check_servers()  # a server that died says more than the call it failed
            raise DemoError(f"the API refused a call: {error}" if error.status else str(error)) from None

    def _plan(self, selection: Path | None = None) -> DemoPlan:
        o = self.options
        try:
            plan = load_plan(o.manifests, count=o.count, seed=o.seed, source=o.source, labels=o.labels,
                             iterations=o.iterations, headless=o.headless, experiment=o.experiment,
                             selection=selection)
        except ManifestError as error:
            raise DemoError(str(error)) from None
        if o.headless and plan.truth is None:
            raise DemoError(f"--headless needs the true labels of the pool for its simulated oracle: give --labels CSV "
                            f"(columns id or filename, and label), or put labels.csv into {o.source}")
        if o.source is not None and selection is None:
            selection = self._check_source(plan)
            if selection is not None:
                return self._plan(selection)
        self.echo(f"oraculum demo{' --headless' if o.headless else ''}: the whole loop on this machine, with a local "
                  f"folder as the object store ({self.root}), in-process live state (no Redis) and the local runner "
                  "(no Kubernetes)")
        self.echo(f"pool: {plan.pool} -> dataset {plan.dataset!r}; experiment {plan.experiment_name!r} "
                  f"({'a simulated oracle labels through the API' if o.headless else 'you label each batch'})")
        return plan

    def _check_source(self, plan: DemoPlan) -> Path | None:
        """Formats, resolutions and S/N of the --source files (see :mod:`oraculum.demo.sources`): the
        selection to preprocess instead of the folder, or None to take the folder as it is."""
        from oraculum.demo.sources import DEFAULT_MIN_SNR, select_source
        from oraculum.manifests import parse_manifest

        assert self.options.source is not None
        spec = parse_manifest(plan.preprocessing, "the demo's PreprocessingJob").spec  # type: ignore[union-attr]
        self.echo(f"reading the files in {self.options.source.resolve()}: formats, resolutions, S/N")
        min_snr = DEFAULT_MIN_SNR if self.options.min_snr is None else self.options.min_snr
        return select_source(self.options.source, spec.parameters().grid, self.root, patterns=spec.source.patterns,
                             min_snr=min_snr, mix=self.options.mix_instruments, echo=self.echo)

    def _env(self, tokens: DemoTokens, api_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ORACULUM_STORE": str(self.root), "ORACULUM_AUTH_FILE": str(tokens.path), "ORACULUM_API_TOKENS": "",
            "ORACULUM_API_BACKEND": "local", "ORACULUM_API_RUN_JOBS": "1", "ORACULUM_REDIS_URL": "",
            "ORACULUM_ROOT_PATH": "", "ORACULUM_API_URL": api_url,
            "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            RUN_MARKER: self.run_id,
        })
        return env

    @staticmethod
    def _port(given: int | None, preferred: int, what: str, option: str) -> int:
        if given is not None:
            if not port_is_free(given):
                raise DemoError(f"port {given} on 127.0.0.1 is in use: give the {what} another {option}")
            return given
        return preferred if port_is_free(preferred) else free_port()

    def _start(self, plan: DemoPlan, tokens: DemoTokens) -> None:
        o = self.options
        self.echo(("made the API tokens in " if tokens.created else "reusing the API tokens in ")
                  + f"{tokens.path} (mode 0600)")
        api_port = self._port(o.api_port, 8000, "API", "--api-port")
        api_url = f"http://127.0.0.1:{api_port}"
        env = self._env(tokens, api_url)
        logs = self.root / "demo" / "logs"
        api = ChildServer("API", ["serve", "api", "--host", "127.0.0.1", "--port", str(api_port), "--backend", "local",
                                  "--run-jobs", "--log-level", "info"], env, logs / "api.log", api_url, "/readyz")
        self.servers.append(api.start())
        self.echo(f"starting the API on {api_url} with its local runner (log: {api.log})")
        api.wait_ready(120, self.stop.is_set)
        if self.stop.is_set():
            return
        self.echo(f"the API is ready: {api_url}/docs (OpenAPI); Job logs go to {self.root / 'local' / 'logs'}")
        if o.with_dashboard:
            port = self._port(o.port, 8050, "dashboard", "--port")
            url = f"http://127.0.0.1:{port}/"
            dashboard = ChildServer("dashboard", ["serve", "dashboard", "--host", "127.0.0.1", "--port", str(port),
                                                  "--api-url", api_url, "--workers", "1", "--threads", "16",
                                                  "--log-level", "warning"], env, logs / "dashboard.log", url, "/healthz")
            self.servers.append(dashboard.start())
            self.echo(f"starting the dashboard on {url} (log: {dashboard.log})")
            dashboard.wait_ready(120, self.stop.is_set)
            if self.stop.is_set():
                return
            self.dashboard_url = url
        self.api = Client(api_url, tokens.person, timeout=30.0)
        if o.headless:
            self.oracle_api = Client(api_url, tokens.oracle, timeout=30.0)
        self._welcome(plan, tokens, api_url)
        for document in (plan.preprocessing, plan.experiment):
            what = f"{document['kind']} {document['metadata']['name']!r}"
            try:
                outcome, _ = self.api.apply(document)
            except ClientError as error:
                if not (error.status == 409 and isinstance(error.detail, dict) and "differences" in error.detail):
                    raise
                raise DemoError(
                    f"{what} exists already in this store with another spec "
                    f"({'; '.join(error.detail['differences'][:6])}). Run the demo with the options it was started "
                    "with to resume it, or start afresh with another --store (or --experiment NAME for a new "
                    "experiment on the same pool).") from None
            self.echo(f"applied {what}: " + ("created" if outcome == "created"
                                              else "it exists with the same spec: resuming where it stopped"))

    def _welcome(self, plan: DemoPlan, tokens: DemoTokens, api_url: str) -> None:
        keys = ", ".join(f"{c['hotkey']} {c['name']}" for c in plan.classes if c.get("hotkey"))
        lines = ["", "=" * 78]
        if self.dashboard_url:
            lines += [f"  Dashboard:  {self.dashboard_url}",
                      f"  Sign in with this token (user astronomer, role admin): {tokens.person}"]
        else:
            lines += [f"  API:        {api_url}/api/v1  (Authorization: Bearer {tokens.person})"]
        lines += [f"  The token is kept in {tokens.path}; the same token works after a restart."]
        if not self.options.headless:
            lines += [f"  Label each batch of {plan.experiment_name!r} with the keys {keys}, u unsure, z undo "
                      "(? lists them all),", "  then submit it: the next iteration starts."]
        lines += ["  Ctrl-C stops everything; run the same command again to resume.", "=" * 78, ""]
        for line in lines:
            self.say(line)

    # -- following the resources -----------------------------------------------------------------

    def _changed(self, key: str, value: Any) -> bool:
        if self._shown.get(key) == value:
            return False
        self._shown[key] = value
        return True

    def _report(self, label: str, resource: Resource) -> None:
        phase, message = resource.phase, resource.message
        if self._changed(f"{label}:state", (phase, message)):
            self.echo(f"{label}: {phase}" + (f": {message}" if message else ""))
        now = time.monotonic()
        for report in resource.progress:
            done, total = report.get("done"), report.get("total")
            key = f"{label}:progress:{report.get('job')}"
            value = (report.get("step"), done, total)
            finished = done is not None and total is not None and done >= total
            last = self._shown.get(key + ":at", 0.0)
            if self._shown.get(key) != value and (finished or now - last >= 5.0):
                self._shown[key], self._shown[key + ":at"] = value, now
                message = report.get("message") or ""
                amount = f"{done:,.0f}/{total:,.0f}" if done is not None and total and "/" not in message else ""
                self.echo(f"  {report.get('job')}: " + " ".join(p for p in (report.get("step"), amount, message) if p))

    def _report_history(self, resource: Resource) -> None:
        for entry in resource.history:
            k = int(entry.get("iteration", -1))
            if not self._changed(f"history:{k}", True):
                continue
            estimate = entry.get("estimate")
            predicted = entry.get("predicted_targets", entry.get("predictedTargets"))
            precision = (f"precision {estimate:.3f} [{entry.get('low'):.3f}, {entry.get('high'):.3f}]"
                         if estimate is not None else "precision not estimable yet (" + (
                             "no model in a cold start)" if predicted is None else "no estimation spectrum was labelled)"))
            self.echo(f"iteration {k} evaluated: {entry.get('labels', 0)} labels so far, {precision}"
                      + (f", {predicted} predicted targets in the pool" if predicted is not None else ""))

    def _check_servers(self) -> None:
        for server in self.servers:
            gone = server.failure()
            if gone:
                raise DemoError(gone)

    def _follow(self, plan: DemoPlan) -> int | None:
        assert self.api is not None
        started = time.monotonic()
        name = plan.experiment_name
        for experiment in self.api.follow(name, ALE, poll=self.options.poll, wait=self.stop.wait):
            if self.stop.is_set():
                break
            self._check_servers()
            ppj = self.api.resource(plan.ppj_name, PPJ)
            self._report(f"preprocessing {plan.ppj_name}", ppj)
            if ppj.phase == "Failed":
                raise DemoError(f"the PreprocessingJob failed: {ppj.message}; the Job logs are in "
                                f"{self.root / 'local' / 'logs'}")
            if ppj.phase == "Succeeded" and self._changed("ppj:done", True):
                self.echo(f"dataset {plan.dataset!r}: {ppj.status.get('processed', 0)} spectra stored, "
                          f"{ppj.status.get('rejected', 0)} files rejected (see `oraculum dataset info {plan.dataset} --rejected`)")
            self._report(f"experiment {name}", experiment)
            self._report_history(experiment)
            if experiment.phase == "Failed":
                raise DemoError(f"the experiment failed: {experiment.message}; the Job logs are in "
                                f"{self.root / 'local' / 'logs'}")
            if experiment.phase == "Succeeded":
                self._results(plan, experiment)
                if self.options.headless:
                    return 0
                self.echo(f"the experiment has finished; the dashboard stays up at {self.dashboard_url} until Ctrl-C")
                self.stop.wait()
                return 0
            if experiment.phase == "AwaitingLabels":
                self._awaiting(plan, experiment)
            if self.options.timeout is not None and time.monotonic() - started > self.options.timeout:
                raise DemoError(f"the experiment did not finish within --timeout {self.options.timeout:.0f} s "
                                f"(it is {experiment.phase}: {experiment.message}); run again to resume")
        return None

    def _awaiting(self, plan: DemoPlan, experiment: Resource) -> None:
        k = int(experiment.iteration or 0)
        batch = experiment.status.get("batch") or {}
        if self.options.headless:
            if self._changed(f"answered:{k}", True):
                self._answer(plan, k)
            return
        if self._changed(f"asked:{k}", True):
            where = (f"at {self.dashboard_url}e/{plan.experiment_name}/label" if self.dashboard_url else
                     f"through the API (PUT /api/v1/experiments/{plan.experiment_name}/iterations/{k}/labels/INDEX)")
            self.echo(f"iteration {k}: a batch of {batch.get('size', '?')} spectra is waiting for you: label it {where}, "
                      "then submit it")
        labelled = batch.get("labelled")
        last = self._shown.get(f"labelled:{k}:at", 0.0)
        if labelled and time.monotonic() - last >= 10 and self._changed(f"labelled:{k}", labelled):
            self._shown[f"labelled:{k}:at"] = time.monotonic()
            self.echo(f"iteration {k}: {labelled}/{batch.get('size', '?')} labelled")

    # -- the headless oracle ---------------------------------------------------------------------

    def _oracle(self, plan: DemoPlan) -> Any:
        """The simulated oracle's knowledge: the pool's true labels (read when first needed: a
        synthetic archive's labels.csv exists only once its PreprocessingJob made it)."""
        if self._truth is None:
            from oraculum.learning.experiments import ExperimentError, read_reference
            from oraculum.learning.labels import read_label_csv
            from oraculum.learning.oracle import SimulatedOracle
            from oraculum.store import LocalStore

            assert plan.truth is not None
            try:
                mapping = read_label_csv(read_reference(LocalStore(self.root), plan.truth, "--labels"), plan.truth)
            except (ExperimentError, ValueError) as error:
                raise DemoError(f"the simulated oracle cannot read the true labels: {error}") from None
            names = [c["name"] for c in plan.classes]
            oracle = SimulatedOracle(mapping, names)
            targets = {c["name"] for c in plan.classes if c.get("target")}
            total = sum(1 for key in mapping if oracle.label_of(key) in targets)
            self._truth = (oracle, targets, total)
        return self._truth

    def _answer(self, plan: DemoPlan, k: int) -> None:
        """Label iteration ``k``'s batch through the API, one PUT per spectrum, then submit."""
        assert self.oracle_api is not None
        oracle, _, _ = self._oracle(plan)
        done = self.oracle_api.label_batch(plan.experiment_name, lambda item: oracle.label_of(str(item["id"])), k,
                                           stop=self.stop.is_set)
        if not done.finished:
            self._shown.pop(f"answered:{k}", None)
            return
        if not done.submitted:
            return
        self.echo(f"iteration {k}: the simulated oracle labelled {done.count} spectra through the API "
                  f"({', '.join(f'{n} {label}' for label, n in sorted(done.written.items())) or 'none needed'}"
                  + (f"; {done.kept} were labelled before" if done.kept else "") + ") and submitted the batch")

    # -- the end ---------------------------------------------------------------------------------

    def _candidate_ids(self, name: str, k: int) -> list[str] | None:
        """The ids of iteration ``k``'s candidates, or None when it has no catalogue (a cold start)."""
        assert self.api is not None
        try:
            return [str(i) for i in self.api.candidates(name, k)["id"]]
        except ClientError as error:
            if error.status == 404:
                return None
            raise

    def _results(self, plan: DemoPlan, experiment: Resource) -> None:
        assert self.api is not None
        name = plan.experiment_name
        curve = self.api.metrics(name)
        truth: dict[int, tuple[float, float]] = {}
        last_with_candidates = None
        for point in curve:
            k = int(point["iteration"])
            ids = self._candidate_ids(name, k) if point["predicted_targets"] >= 0 else None
            if ids is None:
                continue
            last_with_candidates = k
            if plan.truth is not None:
                oracle, targets, total = self._oracle(plan)
                hits = sum(1 for i in ids if oracle.label_of(i) in targets)
                truth[k] = (hits / len(ids) if ids else float("nan"), hits / total if total else float("nan"))
        confidence = float((experiment.spec.get("estimation") or {}).get("confidence", 0.95))
        table = performance_table(performance_rows(curve, experiment.history, truth), confidence, with_truth=bool(truth))
        self.echo(f"experiment {name!r} finished: {experiment.message}")
        self.say("")
        self.say(table)
        if truth:
            self.say("* true precision and recall of the candidates, from the pool's known labels ("
                     + ("synthetic data" if plan.truth and plan.truth.startswith("archive/synthetic-") else plan.truth)
                     + "): the check the estimate cannot see")
        self.say("")
        if last_with_candidates is not None:
            k = last_with_candidates
            self.echo(f"candidates of iteration {k}: {self.api.candidates_url(name, k)} (CSV) and "
                      f"{self.api.candidates_url(name, k, 'vot')} (VOTable), with a token; in the store: "
                      f"{self.root / 'experiments' / name / 'iterations' / str(k)}/candidates.csv and candidates.vot")

    def _shutdown(self) -> None:
        for client in (self.api, self.oracle_api):
            if client is not None:
                client.close()
        if not self.servers:
            return
        self.echo(f"stopping the {' and the '.join(s.title for s in reversed(self.servers))} "
                  "(the API stops its running Jobs first)")
        for server in reversed(self.servers):  # the dashboard first: it holds event streams of the API open
            if not server.stop(timeout=90 if server.title == "API" else 20, hurry=self.hurry.is_set):
                self.echo(f"the {server.title} did not stop in time and was killed")
        self.servers.clear()
        leftovers = stop_marked(self.run_id, timeout=3 if self.hurry.is_set() else 10)
        if leftovers:
            self.echo(f"stopped {leftovers} process(es) left over from this run")


def run_demo(options: DemoOptions, echo: Echo = print) -> int:
    """Run the demo; returns the exit status (0 done, 1 failed, 130 a headless run interrupted)."""
    return Demo(options, echo).run()
