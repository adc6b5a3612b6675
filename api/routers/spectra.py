"""Spectra of a dataset: metadata and links, the preprocessed flux on the grid, and the raw
spectrum read again from the archive (full wavelength range; min/max decimation on request)."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from oraculum.spectra.readers import read_spectrum
from oraculum.spectra.spectrum import SpectrumRejected
from oraculum.store import KeyNotFound, StoreError

from ..bodies import SafeRoute
from ..deps import DatasetName, Index, State, Viewer
from ..models import FluxOut, RawSpectrumOut, SpectrumInfo, SpectrumLinks, SpectrumMetaOut
from ..ratelimit import LIMITED, limit
from ..state import AppState, finite

router = APIRouter(prefix="/datasets/{dataset}/spectra", tags=["spectra"], route_class=SafeRoute)


def _values(array: np.ndarray) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in np.asarray(array, dtype=np.float64).tolist()]


def decimate(wavelength: np.ndarray, flux: np.ndarray, max_points: int | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """At most ``max_points`` points for display, keeping each bucket's minimum and maximum (so
    narrow emission and absorption lines survive), in wavelength order. Vectorised: a sort by
    (bucket, value) puts each bucket's extremes at its ends."""
    n = wavelength.size
    if max_points is None or n <= max_points:
        return wavelength, flux, False
    buckets = max(1, max_points // 2)
    bucket = (np.arange(n, dtype=np.int64) * buckets) // n
    finite = np.isfinite(flux)
    low_key = np.where(finite, flux, np.inf)
    high_key = np.where(finite, flux, -np.inf)
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])  # start of each bucket
    lows = np.lexsort((low_key, bucket))[first]
    highs = np.lexsort((-high_key, bucket))[first]
    chosen = np.unique(np.concatenate([lows, highs]))
    return wavelength[chosen], flux[chosen], True


async def _row(state: AppState, dataset: str, index: int, flux: bool) -> Any:
    data = await state.dataset(dataset)
    if index >= len(data):
        raise HTTPException(404, f"dataset {dataset!r} has {len(data)} spectra: no index {index}")
    if state.shards.is_open(data, index):  # microseconds: no thread hop
        return data, state.shards.row(data, index, flux)
    return data, await state.io(state.shards.row, data, index, flux)


def _meta(row: Any) -> dict[str, Any]:
    meta = row.meta
    obsid = int(meta.get("obsid", -1))
    text = {k: (str(meta.get(k)) or None) for k in ("designation", "header_class", "subclass", "object_name",
                                                     "source_key", "format")}
    return {"ra": finite(meta.get("ra_deg")), "dec": finite(meta.get("dec_deg")), "obsid": obsid if obsid >= 0 else None,
            "snr": finite(meta.get("snr")), "mjd": finite(meta.get("mjd")), **text}


def links(state: AppState, meta: dict[str, Any]) -> SpectrumLinks:
    archive = simbad = None
    if meta.get("obsid") is not None:
        try:
            archive = state.settings.archive_url_template.format(obsid=meta["obsid"])
        except (KeyError, IndexError, ValueError):
            archive = None
    if meta.get("ra") is not None and meta.get("dec") is not None:
        coord = quote(f"{meta['ra']:.6f} {meta['dec']:+.6f}")
        simbad = f"https://simbad.cds.unistra.fr/simbad/sim-coo?Coord={coord}&CooFrame=ICRS&Radius=5&Radius.unit=arcsec"
    return SpectrumLinks(archive=archive, simbad=simbad)


@router.get("/{index}", response_model=SpectrumInfo, summary="Metadata (ra, dec, obsid, header class) and links")
async def info(state: State, _: Viewer, dataset: DatasetName, index: Index) -> SpectrumInfo:
    _, row = await _row(state, dataset, index, flux=False)
    meta = _meta(row)
    return SpectrumInfo(dataset=dataset, index=index, id=row.id, meta=SpectrumMetaOut(**meta),
                        links=links(state, meta))


@router.get("/{index}/flux", response_model=FluxOut, summary="The preprocessed flux on the dataset's grid")
async def flux(state: State, _: Viewer, dataset: DatasetName, index: Index) -> FluxOut:
    data, row = await _row(state, dataset, index, flux=True)
    grid = data.grid
    wavelengths = await state.cached(f"grid:{dataset}", 300.0, _grid_loader(grid))
    return FluxOut(dataset=dataset, index=index, id=row.id, wavelength=wavelengths,
                   flux=_values(row.flux), medium=grid.medium, normalisation=data.index.parameters.normalisation)


def _grid_loader(grid: Any) -> Any:
    async def load() -> list[float]:
        return [float(x) for x in np.asarray(grid.wavelengths, dtype=np.float64).tolist()]

    return load


@router.get("/{index}/raw", response_model=RawSpectrumOut,
            summary="The raw spectrum from the archive file (full range), optionally decimated for display",
            dependencies=[limit("raw")], responses=LIMITED)
async def raw(state: State, _: Viewer, dataset: DatasetName, index: Index,
              max_points: Annotated[int | None, Query(ge=2, le=1_000_000,
                                                      description="Decimate (min/max per bucket) to at most this many points.")] = None,
              ) -> RawSpectrumOut:
    data, row = await _row(state, dataset, index, flux=False)
    meta = _meta(row)
    key = meta.get("source_key")
    if not key:
        raise HTTPException(404, f"spectrum {index} of dataset {dataset!r} records no source file")

    def load() -> Any:
        archive = state.archive(data.index.source.url)
        return read_spectrum(archive.get_bytes(key), key)

    try:
        spectrum = await state.io(load, pool="archive")
    except KeyNotFound:
        raise HTTPException(404, f"the archive file {key!r} of spectrum {index} is no longer in "
                                 f"{data.index.source.url}") from None
    except SpectrumRejected as error:
        raise HTTPException(422, f"the archive file {key!r} cannot be read: {error.message}") from None
    except (StoreError, ValueError) as error:
        raise HTTPException(503, f"the archive {data.index.source.url} cannot be read: {error}") from None
    wavelength = np.asarray(spectrum.wavelength_A, dtype=np.float64)
    values = np.asarray(spectrum.flux, dtype=np.float64)
    shown_w, shown_f, decimated = decimate(wavelength, values, max_points)
    return RawSpectrumOut(dataset=dataset, index=index, id=row.id, source_key=key, format=spectrum.format,
                          medium=spectrum.medium, points=int(wavelength.size), decimated=decimated,
                          wavelength=_values(shown_w), flux=_values(shown_f))
