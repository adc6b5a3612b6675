"""Datasets: list, the index, and the rejected files."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from oraculum.spectra.datasets import list_datasets

from ..bodies import SafeRoute
from ..deps import DatasetName, State, Viewer
from ..models import DatasetDetail, DatasetSummary, RejectedFile, RejectedPage

router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=SafeRoute)


@router.get("", response_model=list[DatasetSummary], summary="List finished datasets")
async def list_all(state: State, _: Viewer) -> list[DatasetSummary]:
    out = []
    for name in await state.io(list_datasets, state.store):
        try:
            index = (await state.dataset(name)).index
        except Exception:  # noqa: BLE001 - a broken index hides one dataset, not the list
            continue
        out.append(DatasetSummary(name=name, count=index.count, rejected=index.rejected, shards=len(index.shards),
                                  grid=index.grid.model_dump(mode="json"), source=index.source.url))
    return out


@router.get("/{dataset}", response_model=DatasetDetail, summary="A dataset's index (grid, shards, source, checksums)")
async def get(state: State, _: Viewer, dataset: DatasetName) -> DatasetDetail:
    return DatasetDetail(name=dataset, index=(await state.dataset(dataset)).index.model_dump(mode="json"))


@router.get("/{dataset}/rejected", response_model=RejectedPage, summary="Files rejected by preprocessing, with reasons")
async def rejected(state: State, _: Viewer, dataset: DatasetName,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> RejectedPage:
    data = await state.dataset(dataset)
    rows: list[dict[str, Any]] = await state.cached(f"rejected:{dataset}", 60.0, lambda: state.io(data.rejected))
    page = [RejectedFile(**{k: (str(v) if v is not None else None) for k, v in row.items()
                            if k in RejectedFile.model_fields}) for row in rows[offset:offset + limit]]
    return RejectedPage(dataset=dataset, total=len(rows), offset=offset, items=page)
