"""The batch of an iteration: items with predictions (hidden for blind estimation items until
they are labelled), current labels and who is labelling what; the 2-D map; labelling progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from oraculum.learning.experiments import iteration_key, list_iterations

from ..bodies import SafeRoute
from ..deps import ExperimentName, Iteration, State, Viewer
from ..models import (
    BatchItemOut,
    BatchOut,
    CurrentLabelOut,
    IterationsOut,
    IterationSummary,
    MapOut,
    MapPoint,
    ProgressOut,
)
from ..ratelimit import LIMITED, limit
from ..state import UNSURE, AppState, finite

router = APIRouter(prefix="/experiments/{name}", tags=["batches"], route_class=SafeRoute)


def _static_items(batch: dict[str, Any]) -> dict[int, BatchItemOut]:
    """The batch's items as validated response models, made once per loaded batch.json and kept
    with it (AppState caches the document), as are the items last shown (``_shown``): a request
    only remakes the items whose label, claim or hidden prediction changed since."""
    items: dict[int, BatchItemOut] | None = batch.get("_items_out")
    if items is None:
        items = {index: BatchItemOut(
            index=index, id=str(item["id"]), set=item.get("set", "oracle"), reason=item.get("reason"),
            score=finite(item.get("score")), predicted=item.get("predicted"), probabilities=item.get("probabilities"),
            meta=item.get("meta") or {}) for index, item in batch["_by_index"].items()}
        batch["_items_out"] = items
    return items


def _item(static: BatchItemOut, entry: dict[str, Any] | None, lock: str | None,
          secret: dict[str, Any] | None) -> BatchItemOut:
    """One item as this request shows it: its label, who holds it, and a blind item's prediction
    (hidden until the item is labelled)."""
    update: dict[str, Any] = {}
    labelled = entry is not None and entry.get("label") is not None
    if labelled:
        assert entry is not None
        update["label"] = CurrentLabelOut(label=entry["label"], who=entry.get("who"), when=entry.get("when"),
                                          comment=entry.get("comment"), bulk=bool(entry.get("bulk")))
    if lock is not None:
        update["lock"] = lock
    if secret is not None and static.probabilities is None:
        if not labelled:
            update["prediction_hidden"] = True
        else:  # labelled: the hidden prediction may be shown now (validated: it comes from a file)
            return BatchItemOut.model_validate({
                **static.model_dump(exclude={"label", "lock"}), **update, "score": finite(secret.get("score")),
                "predicted": secret.get("predicted"), "probabilities": secret.get("probabilities")})
    return static.model_copy(update=update) if update else static


async def build_batch(state: AppState, name: str, iteration: int) -> BatchOut:
    resource, _ = await state.current_iteration(name)
    batch = await state.batch(name, iteration)
    labels, locks = await state.labels_and_claims(name, iteration)
    hidden = await state.hidden_predictions(name, iteration)
    shown: dict[int, tuple[tuple[Any, ...], BatchItemOut]] = batch.setdefault("_shown", {})
    items = []
    for index, static in _static_items(batch).items():
        entry, lock = labels.get(index), locks.get(index)
        secret = hidden.get(str(index)) if hidden else None
        # an item changes only with its label event (the version), its claim or a revealed prediction
        key = (entry.get("v") if entry is not None else None, lock, secret is not None)
        previous = shown.get(index)
        if previous is None or previous[0] != key:
            previous = shown[index] = (key, _item(static, entry, lock, secret))
        items.append(previous[1])
    classes = state.classes(resource, batch)
    progress = state.progress(name, iteration, batch, labels, await state.submitted(resource, iteration))
    totals = batch["_totals"]
    return BatchOut(
        experiment=name, iteration=iteration, dataset=str(batch.get("dataset", "")), strategy=batch.get("strategy"),
        cold_start=bool(batch.get("cold_start")), blind=bool(batch.get("blind", True)), classes=classes,
        labels=[c.get("name") for c in classes] + [UNSURE], size=len(items),
        oracle_size=totals.get("oracle", 0), estimation_size=totals.get("estimation", 0), created=batch.get("created"),
        items=items, progress=ProgressOut(**progress),
    )


@router.get("/batch", response_model=BatchOut, summary="The current iteration's batch")
async def current_batch(state: State, _: Viewer, name: ExperimentName) -> BatchOut:
    _, current = await state.current_iteration(name)
    return await build_batch(state, name, current)


@router.get("/iterations", response_model=IterationsOut, summary="Iterations that chose a batch, with their state")
async def iterations(state: State, _: Viewer, name: ExperimentName) -> IterationsOut:
    resource, current = await state.current_iteration(name)
    history = {int(h.get("iteration", -1)): h for h in (resource.status or {}).get("history") or []}
    out = []
    for k in await state.io(list_iterations, state.store, name):
        metrics = await state.read_json(iteration_key(name, k, "metrics"))
        batch = await state.batch(name, k)
        precision = (metrics or {}).get("target_precision") or {}
        entry = history.get(k, {})
        out.append(IterationSummary(
            iteration=k, size=len(batch["_by_index"]), evaluated=metrics is not None,
            labelled=(metrics or {}).get("batch_labelled"), submitted=await state.submitted(resource, k),
            estimate=finite(precision.get("estimate", entry.get("estimate"))),
            low=finite(precision.get("low", entry.get("low"))), high=finite(precision.get("high", entry.get("high"))),
        ))
    return IterationsOut(experiment=name, current=current, iterations=out)


@router.get("/iterations/{iteration}/batch", response_model=BatchOut, summary="The batch of one iteration")
async def batch(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> BatchOut:
    await state.experiment(name)
    return await build_batch(state, name, iteration)


@router.get("/iterations/{iteration}/map", response_model=MapOut, summary="2-D maps (PCA, t-SNE, UMAP) of the batch",
            dependencies=[limit("maps")], responses=LIMITED)
async def batch_map(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> MapOut:
    await state.experiment(name)
    document = await state.cached(f"map:{name}:{iteration}", 10.0,
                                  lambda: state.read_json(iteration_key(name, iteration, "map")))
    if document is None:
        raise HTTPException(404, f"experiment {name!r} has no map for iteration {iteration} (yet)")
    labels = await state.labels(name, iteration)
    methods = list(document.get("methods") or [])
    points = []
    for point in document.get("points") or []:
        index = int(point["index"])
        coordinates = {m: [finite(v) for v in point.get(m) or []] for m in methods}
        entry = labels.get(index) or {}
        points.append(MapPoint(index=index, id=str(point.get("id", "")), set=str(point.get("set", "")),
                               coordinates=coordinates, label=entry.get("label")))
    return MapOut(experiment=name, iteration=iteration, embedding=document.get("embedding"), methods=methods,
                  parameters=document.get("parameters") or {}, notes=list(document.get("notes") or []), points=points)


@router.get("/iterations/{iteration}/progress", response_model=ProgressOut,
            summary='Labelling progress, e.g. "37 / 100 oracle, 12 / 30 estimation"')
async def progress(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> ProgressOut:
    resource = await state.experiment(name)
    batch = await state.batch(name, iteration)
    labels = await state.labels(name, iteration)
    return ProgressOut(**state.progress(name, iteration, batch, labels, await state.submitted(resource, iteration)))
