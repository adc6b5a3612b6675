"""Labels: set, change or clear one spectrum's label (with a comment), label many at once (a
lasso selection, recorded as bulk), claim an item while labelling it, and submit the batch.

Every change is a label event written to the object store before the answer (see
:meth:`oraculum.api.state.AppState.write_labels`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from ..bodies import SafeRoute
from ..deps import ExperimentName, Index, Iteration, Oracle, State, Viewer
from ..live import LiveUnavailable
from ..models import (
    BulkLabelIn,
    CurrentLabelOut,
    LabelAck,
    LabelEventOut,
    LabelEventsPage,
    LabelIn,
    LabelsOut,
    LockOut,
    LocksOut,
    SubmitOut,
)
from ..ratelimit import LIMITED, limit

router = APIRouter(prefix="/experiments/{name}/iterations/{iteration}", tags=["labels"], route_class=SafeRoute)

_CONFLICT = {409: {"description": "someone else is labelling the item, or the iteration is not the current one"}}


@router.get("/labels", response_model=LabelsOut, summary="Current labels of the iteration")
async def current(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> LabelsOut:
    await state.experiment(name)
    labels = await state.labels(name, iteration)
    return LabelsOut(experiment=name, iteration=iteration, labels={
        index: CurrentLabelOut(label=e["label"], who=e.get("who"), when=e.get("when"), comment=e.get("comment"),
                               bulk=bool(e.get("bulk")))
        for index, e in sorted(labels.items()) if e.get("label") is not None})


@router.get("/labels/events", response_model=LabelEventsPage, summary="The label events of the iteration, oldest first",
            dependencies=[limit("logs")], responses=LIMITED)
async def events(state: State, _: Viewer, name: ExperimentName, iteration: Iteration,
                 offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> LabelEventsPage:
    await state.experiment(name)
    keys = await state.event_keys(name, iteration, pool="logs")
    out = [LabelEventOut(key=key, who=event.who, when=event.when.isoformat(), iteration=event.iteration,
                         action=event.action, set=event.set, bulk=event.bulk, comment=event.comment,
                         items=[item.model_dump(mode="json") for item in event.items])
           for key, event in await state.read_events(keys[offset:offset + limit], pool="logs")]
    return LabelEventsPage(experiment=name, iteration=iteration, total=len(keys), offset=offset, events=out)


@router.put("/labels/{index}", response_model=LabelAck, status_code=201, responses=_CONFLICT,
            summary="Set or change the label of one spectrum")
async def set_label(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration, index: Index,
                    body: LabelIn) -> LabelAck:
    return LabelAck(**await state.write_labels(principal, name, iteration, [index], body.label, body.comment, False))


@router.delete("/labels/{index}", response_model=LabelAck, status_code=201, responses=_CONFLICT,
               summary="Clear the label of one spectrum (an event too)")
async def clear_label(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration, index: Index,
                      comment: Annotated[str | None, Query(max_length=2000)] = None) -> LabelAck:
    return LabelAck(**await state.write_labels(principal, name, iteration, [index], None, comment, False))


@router.post("/labels/bulk", response_model=LabelAck, status_code=201, responses=_CONFLICT,
             summary="Label (or clear) many spectra at once, e.g. a lasso selection on the map")
async def bulk(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration, body: BulkLabelIn) -> LabelAck:
    return LabelAck(**await state.write_labels(principal, name, iteration, body.indices, body.label, body.comment, True))


@router.get("/locks", response_model=LocksOut, summary="Who is labelling which item right now")
async def locks(state: State, _: Viewer, name: ExperimentName, iteration: Iteration) -> LocksOut:
    await state.experiment(name)
    try:
        held = await state.live.holders(state.lock_prefix(name, iteration))
    except LiveUnavailable as error:
        raise HTTPException(503, f"live state unavailable: {error}", headers={"Retry-After": "1"}) from None
    return LocksOut(experiment=name, iteration=iteration, locks=[
        LockOut(experiment=name, iteration=iteration, index=state.lock_index(key), holder=who,
                seconds_left=round(left, 1))
        for key, (who, left) in sorted(held.items())])


@router.post("/locks/{index}", response_model=LockOut, responses=_CONFLICT,
             summary="Claim an item while labelling it (renews the caller's claim; 409 names the holder)")
async def claim(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration, index: Index) -> LockOut:
    _, batch = await state.open_iteration(name, iteration)
    if index not in batch["_by_index"]:
        raise HTTPException(404, f"spectrum {index} is not in the batch of iteration {iteration}")
    await state.claim(principal, name, iteration, [index])
    await state.publish(name, {"type": "lock", "iteration": iteration, "index": index, "who": principal.name})
    return LockOut(experiment=name, iteration=iteration, index=index, holder=principal.name,
                   seconds_left=state.settings.api_lock_seconds)


@router.delete("/locks/{index}", status_code=204, summary="Release the caller's claim on an item")
async def release(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration, index: Index) -> None:
    await state.experiment(name)
    await state.release(principal, name, iteration, [index])
    await state.publish(name, {"type": "unlock", "iteration": iteration, "index": index, "who": principal.name})


@router.post("/submit", response_model=SubmitOut, status_code=202,
             responses={409: {"description": "the batch is incomplete (the count is in the answer)"}},
             summary="Submit the iteration's labels when the batch is complete: signals the operator")
async def submit(state: State, principal: Oracle, name: ExperimentName, iteration: Iteration) -> SubmitOut:
    return SubmitOut(**await state.submit(principal, name, iteration))
