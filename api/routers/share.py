"""Sharing with SAMP tools: signed links to a spectrum or a candidate table, and the message that loads it.

Two kinds of routes (see :mod:`oraculum.api.links` for the signature):

* ``GET .../share`` (viewer): a link valid for a few minutes, plus the complete ``samp.params``
  of the SAMP message that makes SPLAT load the spectrum (``spectrum.load.ssa-generic``, with
  its SSA ``meta``) or TOPCAT load the table (``table.load.votable``). The dashboard's browser
  side and :mod:`oraculum.client.samp` only forward that message to the SAMP hub.
* ``GET /shared/...`` (no token; the link's signature instead): the object itself, a FITS or
  VOTable spectrum (wavelength in Å, in the medium the spectrum is in) or the candidates VOTable.

The content is what the token-protected routes serve (the spectra and results routers are called
for it), so a tool sees exactly the spectrum and table the API shows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from oraculum.learning.experiments import iteration_key
from oraculum.client.samp import SPECTRUM_MTYPE, TABLE_MTYPE
from oraculum.vo.export import MIME, SpectrumDocument, ssa_meta, to_fits, to_votable

from ..auth import Principal
from ..bodies import SafeRoute
from ..deps import DatasetName, ExperimentName, Index, Iteration, State, Viewer, get_state
from ..links import MAX_SECONDS, LinkRefused, LinkSigner
from . import results, spectra

router = APIRouter(tags=["share"], route_class=SafeRoute)

Variant = Literal["preprocessed", "raw"]
FileFormat = Literal["fits", "votable"]
EXTENSION: dict[str, str] = {"fits": "fits", "votable": "vot"}
FORMAT_OF: dict[str, FileFormat] = {"fits": "fits", "vot": "votable"}
FILENAME_PATTERN = r"^(preprocessed|raw)\.(fits|vot)$"
SPECTRUM_SCOPE = "/shared/spectra/{dataset}/{index}/{filename}"
CANDIDATES_SCOPE = "/shared/experiments/{name}/iterations/{iteration}/candidates.vot"
#: Who reads through a signed link, for the routers whose content is reused here.
SIGNED = Principal(name="signed-link", role="viewer")
Seconds = Annotated[int | None, Query(ge=10, le=MAX_SECONDS, description="Lifetime of the link in seconds "
                                                                            "(default ORACULUM_API_SHARE_SECONDS).")]


class ShareOut(BaseModel):
    """A signed link and the SAMP message that loads what it points at."""

    model_config = ConfigDict(extra="forbid")

    mtype: Literal["spectrum.load.ssa-generic", "table.load.votable"] = Field(description="The SAMP MType to send.")
    url: str = Field(description="The signed link on this API (no token needed until it expires).")
    path: str = Field(description="The same link below /api/v1/, for a proxy that serves it under its own "
                                  "address (the dashboard's <prefix>_oraculum/shared/...).")
    expires: int = Field(description="When the link stops working (Unix seconds).")
    expires_at: datetime = Field(description="The same, as a date (UTC).")
    params: dict[str, str | dict[str, str]] = Field(
        description="samp.params of the message: url, and meta/spectrum-id/name (spectra) or table-id/name "
                    "(tables); every value a string, as SAMP requires.")


def link_signer(request: Request) -> LinkSigner:
    """The application's signer, made on first use from its settings."""
    app_state = request.app.state
    found: LinkSigner | None = getattr(app_state, "oraculum_links", None)
    if found is None:
        found = app_state.oraculum_links = LinkSigner.from_settings(get_state(request).settings)
    return found


def signed(template: str) -> Callable[..., Awaitable[str]]:
    """A dependency that lets a request through only with a valid signature for its own path."""

    async def dependency(request: Request,
                         expires: Annotated[str | None, Query(max_length=20, description="Unix seconds.")] = None,
                         signature: Annotated[str | None, Query(max_length=100, description="HMAC of the link.")] = None,
                         ) -> str:
        scope = template.format(**request.path_params)
        try:
            link_signer(request).verify(scope, expires, signature)
        except LinkRefused as error:
            raise HTTPException(error.status, error.message) from None
        return scope

    # the API reference reads a route's role from its require_* dependencies (oraculum.api.reference)
    dependency.__name__ = "require_signature"
    return dependency


def _document(result: Any) -> dict[str, Any]:
    """A route's answer as a dict, whether it returned its model or an already encoded JSON response."""
    if isinstance(result, Response):
        return dict(json.loads(bytes(result.body)))
    return dict(result.model_dump())


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


async def _spectrum(state: Any, dataset: str, index: int, variant: Variant) -> SpectrumDocument:
    info = _document(await spectra.info(state, SIGNED, dataset, index))
    meta = info["meta"]
    if variant == "raw":
        data = _document(await spectra.raw(state, SIGNED, dataset, index, max_points=None))
        note = f"as in the archive file {data['source_key']} ({data['format']})"
    else:
        data = _document(await spectra.flux(state, SIGNED, dataset, index))
        note = f"preprocessed on the dataset's grid, normalisation {data['normalisation'] or 'none'}"
    target = meta.get("designation") or meta.get("object_name") or None
    return SpectrumDocument(
        wavelength_A=_floats(data["wavelength"]), flux=_floats(data["flux"]), medium=data["medium"],
        identifier=f"oraculum:{dataset}/{index}/{variant}", title=f"{dataset} #{index} {info['id']} ({variant})",
        flux_note=note, target=target, ra_deg=meta.get("ra"), dec_deg=meta.get("dec"),
        keywords={"DATASET": dataset, "INDEX": index, "VARIANT": variant})


def _share(request: Request, route: str, scope: str, seconds: int | None, **path: Any) -> tuple[str, str, int]:
    """(absolute url, path below /api/v1/, expiry) of a signed link to ``scope``."""
    query, expires = link_signer(request).sign(scope, seconds)
    url = f"{request.url_for(route, **{k: str(v) for k, v in path.items()})}?{query}"
    return url, f"{scope.lstrip('/')}?{query}", expires


def _when(expires: int) -> datetime:
    return datetime.fromtimestamp(expires, tz=timezone.utc)


@router.get("/datasets/{dataset}/spectra/{index}/share", response_model=ShareOut,
            summary="A signed link to the spectrum for SAMP tools (SPLAT), with its spectrum.load.ssa-generic message")
async def share_spectrum(request: Request, state: State, _: Viewer, dataset: DatasetName, index: Index,
                         variant: Annotated[Variant, Query(description="preprocessed: on the dataset's grid; raw: "
                                                                       "the archive file's full range.")] = "preprocessed",
                         format: Annotated[FileFormat, Query(description="File the link serves.")] = "fits",
                         seconds: Seconds = None) -> ShareOut:
    document = await _spectrum(state, dataset, index, variant)  # 404/422/503 now, not later in the tool
    filename = f"{variant}.{EXTENSION[format]}"
    scope = SPECTRUM_SCOPE.format(dataset=dataset, index=index, filename=filename)
    url, path, expires = _share(request, "shared_spectrum", scope, seconds, dataset=dataset, index=index, filename=filename)
    params: dict[str, str | dict[str, str]] = {"url": url, "meta": ssa_meta(document, url, format),
                                               "spectrum-id": document.identifier, "name": document.title}
    return ShareOut(mtype=SPECTRUM_MTYPE, url=url, path=path, expires=expires, expires_at=_when(expires), params=params)


@router.get("/experiments/{name}/iterations/{iteration}/candidates/share", response_model=ShareOut,
            summary="A signed link to the candidates VOTable for SAMP tools (TOPCAT), with its table.load.votable message")
async def share_candidates(request: Request, state: State, _: Viewer, name: ExperimentName, iteration: Iteration,
                           seconds: Seconds = None) -> ShareOut:
    await state.experiment(name)
    if not await state.io(state.store.exists, iteration_key(name, iteration, "candidates_vot")):
        raise HTTPException(404, f"iteration {iteration} of experiment {name!r} has no candidates (a cold start has "
                                 "no model, or the iteration has not run)")
    scope = CANDIDATES_SCOPE.format(name=name, iteration=iteration)
    url, path, expires = _share(request, "shared_candidates", scope, seconds, name=name, iteration=iteration)
    params: dict[str, str | dict[str, str]] = {"url": url, "table-id": f"oraculum:{name}/{iteration}/candidates",
                                               "name": f"{name} iteration {iteration} candidates"}
    return ShareOut(mtype=TABLE_MTYPE, url=url, path=path, expires=expires, expires_at=_when(expires), params=params)


_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"description": "no signature, or one that does not match this address"},
    410: {"description": "the link expired: ask for a new one"},
}


@router.get("/shared/spectra/{dataset}/{index}/{filename}", response_class=Response,
            summary="A spectrum as FITS or VOTable through a signed link (no token)",
            responses={200: {"content": {MIME["fits"]: {}, MIME["votable"]: {}}}, **_REFUSALS})
async def shared_spectrum(state: State, _: Annotated[str, Depends(signed(SPECTRUM_SCOPE))], dataset: DatasetName,
                          index: Index, filename: Annotated[str, Path(pattern=FILENAME_PATTERN,
                                                                      description="preprocessed|raw . fits|vot")],
                          ) -> Response:
    variant, extension = filename.split(".")
    file_format = FORMAT_OF[extension]
    document = await _spectrum(state, dataset, index, variant)  # type: ignore[arg-type]
    content = await state.io(to_fits if file_format == "fits" else to_votable, document, pool="archive")
    return Response(content, media_type=MIME[file_format], headers={
        "Content-Disposition": f'inline; filename="{dataset}-{index}-{filename}"', "Cache-Control": "no-store"})


@router.get("/shared/experiments/{name}/iterations/{iteration}/candidates.vot", response_class=Response,
            summary="The candidates VOTable through a signed link (no token)",
            responses={200: {"content": {MIME["votable"]: {}}}, **_REFUSALS})
async def shared_candidates(state: State, _: Annotated[str, Depends(signed(CANDIDATES_SCOPE))], name: ExperimentName,
                            iteration: Iteration) -> Response:
    response = await results.candidates_vot(state, SIGNED, name, iteration)
    response.headers["Cache-Control"] = "no-store"
    return response
