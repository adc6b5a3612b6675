"""Spectrum helpers of the dashboard: line markers in the right medium, compact flux for the
browser, the nearest already-labelled spectra of each class, and small comparison plots."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from oraculum.spectra.wavelength import LINES_VACUUM_A, vacuum_to_air

from .client import ApiClient

CLASS_COLOURS = ["#1b3a6b", "#c0392b", "#7a4fb5", "#1e7d4f", "#b8860b", "#2c7fb8", "#d95f02", "#666666"]


def line_markers() -> dict[str, list[dict[str, Any]]]:
    """The marked lines (H-alpha, [N II] 6548/6583, He I 6678) in vacuum and in air (Å)."""
    vacuum = [{"name": name, "x": round(float(value), 3)} for name, value in LINES_VACUUM_A.items()]
    air = [{"name": name, "x": round(float(vacuum_to_air(value)), 3)} for name, value in LINES_VACUUM_A.items()]
    return {"lines_vacuum": vacuum, "lines_air": air}


def compact(values: list[float | None], digits: int = 5) -> list[float | None]:
    """Flux for the browser: rounded (a third of the JSON), gaps kept as null."""
    return [None if v is None or not math.isfinite(v) else round(v, digits) for v in values]


def class_colour(classes: list[str], name: str | None, other: str = "#999999") -> str:
    """The colour of class ``name`` (by its place among ``classes``), ``other`` for anything else."""
    if name in classes:
        return CLASS_COLOURS[classes.index(name) % len(CLASS_COLOURS)]
    return other


class Neighbours:
    """The nearest already-labelled spectrum of each class to a given one.

    The labelled spectra are the current labels of every iteration of the experiment (through
    ``/experiments/{name}/iterations/{k}/labels``, refreshed every ``ttl`` seconds), compared on
    the preprocessed grid by the root-mean-square difference of the flux. At most ``cap`` spectra
    per class are compared (the most recent ones), so that the first look at a large campaign
    stays quick; their flux is cached by :class:`ApiClient`.
    """

    def __init__(self, client: ApiClient, ttl: float = 20.0, cap: int = 400) -> None:
        self.client = client
        self.ttl = ttl
        self.cap = cap
        self._labels: dict[str, tuple[float, dict[int, str]]] = {}
        self._lock = threading.Lock()

    def labelled(self, token: str, experiment: str) -> dict[int, str]:
        with self._lock:
            hit = self._labels.get(experiment)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        iterations = self.client.get(f"/experiments/{experiment}/iterations", token).get("iterations") or []
        ks = sorted(int(entry["iteration"]) for entry in iterations)
        documents = list(self.client.pool.map(
            lambda k: self.client.get(f"/experiments/{experiment}/iterations/{k}/labels", token), ks))
        labels: dict[int, str] = {}
        for document in documents:
            for index, entry in (document.get("labels") or {}).items():
                labels.pop(int(index), None)  # keep the latest iteration's order
                labels[int(index)] = entry.get("label")
        with self._lock:
            self._labels[experiment] = (time.monotonic() + self.ttl, labels)
        return labels

    def nearest(self, token: str, experiment: str, dataset: str, index: int, classes: list[str]
                ) -> tuple[dict[str, Any], dict[str, dict[str, Any] | None]]:
        """(the spectrum's flux document, class -> {index, rms, flux document} or None)."""
        labels = self.labelled(token, experiment)
        by_class = {c: [i for i, label in labels.items() if label == c and i != index][-self.cap:] for c in classes}
        wanted = [index] + [i for indices in by_class.values() for i in indices]
        fluxes = self.client.fluxes(token, dataset, wanted)
        this = np.asarray(fluxes[index]["flux"], dtype=np.float64)  # JSON null (a gap) becomes NaN
        out: dict[str, dict[str, Any] | None] = {}
        for name, indices in by_class.items():
            if not indices:
                out[name] = None
                continue
            rows = [fluxes[i]["flux"] for i in indices]
            if any(len(row) != this.size for row in rows):
                out[name] = None
                continue
            matrix = np.asarray(rows, dtype=np.float64)
            with np.errstate(all="ignore"):
                rms = np.sqrt(np.nanmean((matrix - this) ** 2, axis=1))
            if not np.isfinite(rms).any():
                out[name] = None
                continue
            best = int(np.nanargmin(rms))
            out[name] = {"index": indices[best], "rms": float(rms[best]), "doc": fluxes[indices[best]],
                         "labelled": len(indices)}
        return fluxes[index], out


def neighbours_figure(this: dict[str, Any], found: dict[str, dict[str, Any] | None], classes: list[str]) -> go.Figure:
    names = list(found)
    titles = []
    for name in names:
        hit = found[name]
        titles.append(f"{name}: #{hit['index']} (rms {hit['rms']:.3f})" if hit else f"{name}: none labelled yet")
    figure = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=titles, shared_yaxes=True,
                           horizontal_spacing=0.03)
    for column, name in enumerate(names, start=1):
        figure.add_trace(go.Scatter(x=this["wavelength"], y=this["flux"], mode="lines", name="this spectrum",
                                      line={"color": "#b5bcc9", "width": 1.2}, showlegend=column == 1,
                                      hovertemplate="%{x:.1f} Å: %{y:.3f}<extra>this</extra>"), row=1, col=column)
        hit = found[name]
        if hit:
            figure.add_trace(go.Scatter(x=hit["doc"]["wavelength"], y=hit["doc"]["flux"], mode="lines",
                                          name=f"#{hit['index']}", line={"color": class_colour(classes, name), "width": 1.5},
                                          showlegend=False,
                                          hovertemplate=f"%{{x:.1f}} Å: %{{y:.3f}}<extra>{name} #{hit['index']}</extra>"),
                             row=1, col=column)
    figure.update_layout(height=210, margin={"l": 40, "r": 10, "t": 34, "b": 30}, plot_bgcolor="#fff",
                         paper_bgcolor="#fff", legend={"orientation": "h", "x": 0, "y": -0.25}, hovermode="x",
                         font={"size": 11})
    figure.update_annotations(font_size=12)
    figure.update_xaxes(showgrid=False)
    figure.update_yaxes(showgrid=True, gridcolor="#eef0f4")
    return figure


def thumbnails(docs: list[tuple[dict[str, Any], str]], columns: int = 3) -> go.Figure:
    """Small multiples of spectra (flux documents with a title each): the lasso preview."""
    rows = max(1, math.ceil(len(docs) / columns))
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[title for _, title in docs],
                           horizontal_spacing=0.04, vertical_spacing=0.12 if rows > 1 else 0.0)
    for position, (doc, _) in enumerate(docs):
        figure.add_trace(go.Scatter(x=doc["wavelength"], y=doc["flux"], mode="lines", showlegend=False,
                                      line={"color": "#1b3a6b", "width": 1.2},
                                      hovertemplate="%{x:.1f} Å: %{y:.3f}<extra></extra>"),
                         row=position // columns + 1, col=position % columns + 1)
    medium = docs[0][0].get("medium", "vacuum") if docs else "vacuum"
    for line in line_markers()["lines_air" if medium == "air" else "lines_vacuum"]:
        figure.add_vline(x=line["x"], line={"color": "#7a6a9a", "width": 1, "dash": "dot"})
    figure.update_layout(height=190 * rows + 30, margin={"l": 30, "r": 10, "t": 34, "b": 20}, plot_bgcolor="#fff",
                         paper_bgcolor="#fff", font={"size": 11})
    figure.update_annotations(font_size=11)
    figure.update_xaxes(showgrid=False)
    figure.update_yaxes(showgrid=True, gridcolor="#eef0f4")
    return figure
