"""Results: metrics of an iteration, the learning curve over iterations, candidate catalogues."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from oraculum.learning.experiments import iteration_key, list_iterations
from oraculum.store import KeyNotFound

from ..bodies import SafeRoute
from ..deps import ExperimentName, Iteration, State, Viewer
from ..models import CurvePoint, CurvesOut, MetricsOut
from ..ratelimit import LIMITED, limit
from ..state import finite

router = APIRouter(prefix="/experiments/{name}", tags=["results"], route_class=SafeRoute)


@router.get("/iterations/{iteration}/metrics", response_model=MetricsOut,
            summary="Estimates with intervals of an evaluated iteration (metrics.json)")
async def metrics(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> MetricsOut:
    await state.experiment(name)
    document = await state.read_json(iteration_key(name, iteration, "metrics"))
    if document is None:
        raise HTTPException(404, f"iteration {iteration} of experiment {name!r} is not evaluated (yet)")
    return MetricsOut(experiment=name, iteration=iteration, metrics=document)


@router.get("/curves", response_model=CurvesOut, summary="Precision estimate with interval and labels, per iteration")
async def curves(state: State, _: Viewer, name: ExperimentName) -> CurvesOut:
    await state.experiment(name)
    points = []
    for k in await state.io(list_iterations, state.store, name):
        document = await state.read_json(iteration_key(name, k, "metrics"))
        if document is None:
            continue
        precision = document.get("target_precision") or {}
        targets = document.get("estimated_target_count") or {}
        predicted = document.get("predicted_target_count")
        points.append(CurvePoint(
            iteration=k, labels_total=document.get("labels_total"), estimate=finite(precision.get("estimate")),
            low=finite(precision.get("low")), high=finite(precision.get("high")),
            predicted_targets=int(predicted) if isinstance(predicted, (int, float)) else None,
            estimated_targets=finite(targets.get("estimate")) if isinstance(targets, dict) else None,
            estimated_targets_low=finite(targets.get("low")) if isinstance(targets, dict) else None,
            estimated_targets_high=finite(targets.get("high")) if isinstance(targets, dict) else None,
        ))
    return CurvesOut(experiment=name, points=points)


async def _download(state: State, name: str, iteration: int, artifact: str, media_type: str) -> Response:
    await state.experiment(name)
    key = iteration_key(name, iteration, artifact)
    try:
        data = await state.io(state.store.get_bytes, key)
    except KeyNotFound:
        raise HTTPException(404, f"iteration {iteration} of experiment {name!r} has no candidates (a cold start "
                                 "has no model, or the iteration has not run)") from None
    filename = f"{name}-iteration-{iteration}-candidates.{'csv' if artifact.endswith('csv') else 'vot'}"
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/iterations/{iteration}/candidates.csv", response_class=Response, summary="Candidates as CSV",
            dependencies=[limit("exports")], responses={200: {"content": {"text/csv": {}}}, **LIMITED})
async def candidates_csv(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> Response:
    return await _download(state, name, iteration, "candidates_csv", "text/csv; charset=utf-8")


@router.get("/iterations/{iteration}/candidates.vot", response_class=Response, summary="Candidates as a VOTable (TOPCAT)",
            dependencies=[limit("exports")], responses={200: {"content": {"application/x-votable+xml": {}}}, **LIMITED})
async def candidates_vot(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> Response:
    return await _download(state, name, iteration, "candidates_vot", "application/x-votable+xml")
