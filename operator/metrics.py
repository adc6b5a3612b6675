"""Prometheus metrics of the operator (``GET /metrics`` on ``ORACULUM_OPERATOR_METRICS_PORT``).

What a cluster operator alerts on and plots: reconciles and how they ended, reconciles that
raised (by error type), the child Jobs' outcomes, how long iterations take, how many resources
are in each phase, and looks that found the object store unreachable. Counted by the reconciler
after a decision's status is stored (like its Events), so a reconcile that lost a race and ran
again counts once. Label values are bounded: kinds, phases, purposes, outcomes, step names and
exception class names, never resource names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from oraculum.control.decision import Decision

__all__ = ["OperatorMetrics"]

_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ITERATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0)


class OperatorMetrics:
    """The operator's metrics in a registry of their own (one per operator, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "oraculum_operator_reconciles", "Reconciles of a resource, by how they ended (ok, conflict: ran again "
            "on a newer version, gone: the resource was deleted, error: raised).", ["kind", "result"], registry=r)
        self.errors = Counter("oraculum_operator_reconcile_errors", "Reconciles that raised, by exception type.",
                              ["kind", "error"], registry=r)
        self.reconcile_seconds = Histogram("oraculum_operator_reconcile_seconds", "Time of one reconcile.", ["kind"],
                                           buckets=_RECONCILE_BUCKETS, registry=r)
        self.job_outcomes = Counter(
            "oraculum_operator_job_outcomes", "Child Job steps that ended: succeeded, failed, vanished (deleted "
            "before finishing) or rejected (refused by the API server).", ["kind", "purpose", "outcome"], registry=r)
        self.iteration_seconds = Histogram(
            "oraculum_operator_iteration_duration_seconds", "Duration of an evaluated iteration's steps, from its "
            "run.json (step: train, score, ...; total: all steps of the iteration Job).", ["step"],
            buckets=_ITERATION_BUCKETS, registry=r)
        self.store_unreachable = Counter("oraculum_operator_store_unreachable",
                                         "Reconciles that could not read the object store.", ["kind"], registry=r)
        self.resources = Gauge("oraculum_operator_resources", "Resources by their phase, as last reconciled.",
                               ["kind", "phase"], registry=r)
        self._phases: dict[tuple[str, str, str], tuple[str, str]] = {}  # key -> (kind, phase)
        self._server: Any = None
        self.port: int | None = None  # where /metrics is served, once it is

    # -- recording ------------------------------------------------------------------------------

    def reconciled(self, kind: str, result: str, seconds: float | None = None) -> None:
        self.reconciles.labels(kind, result).inc()
        if seconds is not None:
            self.reconcile_seconds.labels(kind).observe(seconds)

    def failed(self, kind: str, error: BaseException) -> None:
        self.reconciles.labels(kind, "error").inc()
        self.errors.labels(kind, type(error).__name__).inc()

    def decided(self, key: tuple[str, str, str], old_status: Mapping[str, Any], decision: Decision) -> None:
        """What a stored decision tells: Job outcomes, newly evaluated iterations, the phase."""
        kind = key[0]
        for outcome in decision.outcomes:
            self.job_outcomes.labels(kind, outcome.purpose, outcome.outcome).inc()
        known = {entry.get("iteration") for entry in old_status.get("history") or []}
        for entry in decision.status.get("history") or []:
            if entry.get("iteration") in known:
                continue
            durations = {str(k): float(v) for k, v in (entry.get("durations") or {}).items()}
            for step, seconds in durations.items():
                self.iteration_seconds.labels(step).observe(seconds)
            if durations:
                self.iteration_seconds.labels("total").observe(sum(durations.values()))
        if any(c.get("type") == "StoreReachable" and c.get("status") == "False"
               for c in decision.status.get("conditions") or []):
            self.store_unreachable.labels(kind).inc()
        self._set_phase(key, str(decision.status.get("phase") or "Pending"))

    def forget(self, key: tuple[str, str, str]) -> None:
        self._set_phase(key, None)

    def _set_phase(self, key: tuple[str, str, str], phase: str | None) -> None:
        before = self._phases.pop(key, None)
        if phase is not None:
            self._phases[key] = (key[0], phase)
        for kind, name in {before, self._phases.get(key)} - {None}:  # type: ignore[misc]
            self.resources.labels(kind, name).set(sum(1 for value in self._phases.values() if value == (kind, name)))

    # -- serving --------------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` over HTTP from a thread of its own (Prometheus scrapes it); the port."""
        server, _thread = start_http_server(port, address, registry=self.registry)
        self._server = server
        self.port = int(server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
