"""The demo's side of the API: apply manifests, follow resources, label as the dashboard does,
and read the results, over HTTP with a bearer token like any other client.

The demo never reads the store for anything the API serves: what it shows is what a person (or
CI) would see through the public interface. Label writes use the dashboard's own calls:
``PUT /experiments/{name}/iterations/{k}/labels/{index}`` with ``{"label", "comment"}``, then
``POST .../submit``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from oraculum.demo.manifests import spec_differences
from oraculum.client.errors import response_error
from oraculum.demo.processes import DemoError
from oraculum.progress import COLLECTIONS

__all__ = ["DemoApi", "IterationRow", "performance_rows", "performance_table"]

class DemoApi:
    """Calls of the API gateway at ``url`` (no ``/api/v1``) with ``token``."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=httpx.Timeout(timeout, connect=5.0),
                                 headers={"Authorization": f"Bearer {token}", "User-Agent": "oraculum-demo"})

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise DemoError(f"the API at {self.url} cannot be reached ({method} {path}): {error}") from None
        if response.status_code not in ok:
            message, _ = response_error(response, limit=300)
            raise DemoError(f"the API refused {method} {path}: HTTP {response.status_code}: {message}")
        return response

    # -- resources -------------------------------------------------------------------------------

    def apply(self, document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create the resource (as ``kubectl create -f`` would, YAML body); an existing one with the
        same spec is kept (a resumed demo). Returns ("created" or "unchanged", the resource)."""
        kind, name = document["kind"], document["metadata"]["name"]
        plural = COLLECTIONS[kind]
        body = yaml.safe_dump(document, sort_keys=False).encode()
        response = self._call("POST", f"/{plural}", ok=(201, 409), content=body,
                              headers={"Content-Type": "application/yaml"})
        if response.status_code == 201:
            return "created", response.json()
        existing = self.resource(kind, name)
        changes = spec_differences(document, existing.get("spec") or {})
        if changes:
            raise DemoError(
                f"{kind} {name!r} exists already in this store with another spec ({'; '.join(changes[:6])}). "
                "Run the demo with the options it was started with to resume it, or start afresh with another "
                "--store (or --experiment NAME for a new experiment on the same pool).")
        return "unchanged", existing

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/{COLLECTIONS[kind]}/{name}").json()  # type: ignore[no-any-return]

    # -- labelling -------------------------------------------------------------------------------

    def batch(self, experiment: str, iteration: int) -> dict[str, Any]:
        return self._call("GET", f"/experiments/{experiment}/iterations/{iteration}/batch").json()  # type: ignore[no-any-return]

    def put_label(self, experiment: str, iteration: int, index: int, label: str, comment: str | None = None,
                  attempts: int = 5) -> dict[str, Any]:
        """One label, the request the dashboard's labelling page sends for a key press; tried again
        for a few seconds on a 409 (the API may not have seen the new iteration for a moment, or
        someone holds the item briefly), where a person would simply press the key again."""
        path = f"/experiments/{experiment}/iterations/{iteration}/labels/{index}"
        for _ in range(attempts - 1):
            response = self._call("PUT", path, ok=(201, 409), json={"label": label, "comment": comment})
            if response.status_code == 201:
                return response.json()  # type: ignore[no-any-return]
            time.sleep(1.0)
        return self._call("PUT", path, ok=(201,), json={"label": label, "comment": comment}).json()  # type: ignore[no-any-return]

    def submit(self, experiment: str, iteration: int) -> dict[str, Any]:
        return self._call("POST", f"/experiments/{experiment}/iterations/{iteration}/submit", ok=(202,)).json()  # type: ignore[no-any-return]

    # -- results -----------------------------------------------------------------------------------

    def curves(self, experiment: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/experiments/{experiment}/curves").json().get("points") or [])

    def candidates_csv(self, experiment: str, iteration: int) -> list[dict[str, str]] | None:
        """The candidate catalogue of an iteration, or None when it has none (a cold start)."""
        response = self._call("GET", f"/experiments/{experiment}/iterations/{iteration}/candidates.csv", ok=(200, 404))
        if response.status_code == 404:
            return None
        return list(csv.DictReader(io.StringIO(response.text)))

    def candidates_url(self, experiment: str, iteration: int, kind: str = "csv") -> str:
        return f"{self.url}/api/v1/experiments/{experiment}/iterations/{iteration}/candidates.{kind}"


@dataclass(frozen=True)
class IterationRow:
    """One line of the performance table."""

    iteration: int
    labels: int | None
    estimate: float | None
    low: float | None
    high: float | None
    predicted: int | None
    estimated: float | None
    estimated_low: float | None
    estimated_high: float | None
    seconds: float | None
    true_precision: float | None = None
    true_recall: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def performance_rows(curves: list[dict[str, Any]], history: list[dict[str, Any]],
                     truth: dict[int, tuple[float, float]] | None = None) -> list[IterationRow]:
    """Rows from the API's ``/curves`` points and the resource's ``status.history`` (durations),
    plus, when known, the true precision and recall of each iteration's candidates."""
    seconds = {int(h["iteration"]): sum(float(v) for v in (h.get("durations") or {}).values())
               for h in history if "iteration" in h}
    rows = []
    for point in sorted(curves, key=lambda p: int(p["iteration"])):
        k = int(point["iteration"])
        true = (truth or {}).get(k)
        rows.append(IterationRow(
            iteration=k, labels=point.get("labels_total"), estimate=_number(point.get("estimate")),
            low=_number(point.get("low")), high=_number(point.get("high")), predicted=point.get("predicted_targets"),
            estimated=_number(point.get("estimated_targets")), estimated_low=_number(point.get("estimated_targets_low")),
            estimated_high=_number(point.get("estimated_targets_high")), seconds=seconds.get(k) or None,
            true_precision=true[0] if true else None, true_recall=true[1] if true else None,
        ))
    return rows


def performance_table(rows: list[IterationRow], confidence: float, with_truth: bool) -> str:
    """The table the demo prints at the end: one line per evaluated iteration."""
    level = f"{confidence:.0%}"
    header = ["iteration", "labels", f"precision [{level} interval]", "predicted targets",
              f"true targets, estimated [{level}]", "iteration s"]
    if with_truth:
        header += ["true precision*", "true recall*"]
    lines = []
    for row in rows:
        precision = "n/a (no model yet)" if row.predicted is None and row.estimate is None else (
            "n/a" if row.estimate is None else f"{row.estimate:.3f} [{row.low:.3f}, {row.high:.3f}]")
        estimated = "n/a" if row.estimated is None else (
            f"{row.estimated:.0f} [{row.estimated_low:.0f}, {row.estimated_high:.0f}]"
            if row.estimated_low is not None and row.estimated_high is not None else f"{row.estimated:.0f}")
        cells = [str(row.iteration), "n/a" if row.labels is None else str(row.labels), precision,
                 "n/a" if row.predicted is None else str(row.predicted), estimated,
                 "n/a" if row.seconds is None else f"{row.seconds:.1f}"]
        if with_truth:
            cells += ["n/a" if row.true_precision is None else f"{row.true_precision:.3f}",
                      "n/a" if row.true_recall is None else f"{row.true_recall:.3f}"]
        lines.append(cells)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)
