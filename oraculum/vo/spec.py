"""The VO source strings: what ``oraculum preprocess``/``oraculum fetch`` and a Job's command say.

A source string names what to fetch and everything that changes the fetched bytes::

    votable:LOCATION[#OPTIONS]   a VOTable (SSAP/TAP answer, TOPCAT file) with access references
    urls:LOCATION[#OPTIONS]      a text file with one URL per line
    index:URL[#OPTIONS]          an HTML index page: every FITS file below it, recursively

``LOCATION`` is an ``http(s)://`` URL (e.g. an SSAP query), ``store:KEY`` (an object in the
``--store``, e.g. an uploaded VOTable), ``s3://bucket/key``, or a local path. ``OPTIONS`` are
``k=v`` pairs joined by ``&`` after a ``#`` (a URL fragment is never sent to a server, so it
cannot clash with the query of an SSAP URL): ``datalink=auto|this|cutout|none`` and
``band=LO-HI`` (the SODA cutout range in Å, vacuum) for VOTables; ``glob=*.fits,*.fits.gz`` for
index pages; and the execution knobs ``concurrency``, ``retries`` and ``timeout`` (seconds).

The files go to ``archive/vo/<kind>-<name>-<digest>/`` in the store, SODA cutouts to a
``cutout-<lo>-<hi>/`` folder inside it; ``digest`` identifies the source (kind, location, globs,
DataLink or not), never the execution knobs. This module is plain string handling, so the
manifests can build Job commands without importing anything heavy.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from oraculum.spectra.archive import FITS_PATTERNS

if TYPE_CHECKING:
    from oraculum.vo.fetch import FetchOptions

Kind = Literal["votable", "urls", "index"]
KINDS: tuple[Kind, ...] = ("votable", "urls", "index")
DATALINK_MODES = ("auto", "this", "cutout", "none")
#: Store-relative folder of all fetched archives.
ARCHIVE_ROOT = "archive/vo"
#: Default SODA cutout margin around the grid, Å: covers the 1.8 Å air/vacuum ambiguity of
#: services and the wings a Gaussian blur reaches into.
CUTOUT_MARGIN_A = 50.0
DEFAULTS = {"concurrency": 8, "retries": 4, "timeout": 60.0}
_OPTION_KEYS = {"datalink", "band", "glob", "concurrency", "retries", "timeout"}


class VOSourceError(ValueError):
    """A source string that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class VOSpec:
    """A parsed source string (see the module docstring)."""

    kind: Kind
    location: str
    datalink: str = "auto"
    band_A: tuple[float, float] | None = None
    globs: tuple[str, ...] | None = None
    concurrency: int = 8
    retries: int = 4
    timeout: float = 60.0

    def canonical(self) -> str:
        """The source string, options in a fixed order (what Jobs and the dataset index carry)."""
        options: dict[str, str] = {}
        if self.kind == "votable" and self.datalink != "auto":
            options["datalink"] = self.datalink
        if self.band_A is not None:
            options["band"] = f"{self.band_A[0]:.2f}-{self.band_A[1]:.2f}"
        if self.globs:
            options["glob"] = ",".join(self.globs)
        for name, default in DEFAULTS.items():
            value = getattr(self, name)
            if value != default:
                options[name] = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{self.kind}:{self.location}" + ("#" + urlencode(options, safe=",*:") if options else "")

    @property
    def cutouts(self) -> bool:
        return self.kind == "votable" and self.datalink in ("auto", "cutout") and self.band_A is not None

    @property
    def digest(self) -> str:
        """Identifies the source and so its plan: kind, location, globs, and whether DataLink is
        used at all. Not the band: cutouts of a band go to their own folder inside the archive
        (:attr:`cutout_folder`), so ``oraculum fetch`` without a band and ``oraculum preprocess``
        of a table without DataLink share the same files."""
        identity: dict[str, str] = {"kind": self.kind, "location": self.location}
        if self.kind == "votable" and self.datalink == "none":
            identity["datalink"] = "none"
        if self.globs:
            identity["glob"] = ",".join(self.globs)
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def cutout_folder(self) -> str | None:
        """The folder (inside the archive) of the SODA cutouts of this band, when cutouts are asked for."""
        return f"cutout-{self.band_A[0]:.2f}-{self.band_A[1]:.2f}" if self.cutouts else None  # type: ignore[index]

    @property
    def archive_prefix(self) -> str:
        """Where :func:`oraculum preprocess <oraculum.ingest.pipeline.run_preprocess>` keeps the files."""
        path = urlsplit(self.location).path if "://" in self.location else self.location.removeprefix("store:")
        stem = re.sub(r"[^a-z0-9]+", "-", posixpath.basename(path.rstrip("/")).lower()).strip("-")[:40].strip("-")
        return f"{ARCHIVE_ROOT}/{self.kind}-{stem or 'source'}-{self.digest}"

    @property
    def state_prefix(self) -> str:
        """Plan and reports, relative to the archive folder."""
        return f"_fetch/{self.digest}"

    def options(self) -> "FetchOptions":
        from oraculum.vo.fetch import FetchOptions

        band_m = (self.band_A[0] * 1e-10, self.band_A[1] * 1e-10) if self.cutouts else None  # type: ignore[index]
        return FetchOptions(concurrency=self.concurrency, retries=self.retries, timeout=self.timeout,
                            datalink=self.datalink, band_m=band_m)


def _number(text: str, name: str, spec: str, kind: type, low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise VOSourceError(f"source {spec!r}: {name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise VOSourceError(f"source {spec!r}: {name}={text} is outside {low:g}..{high:g}")
    return value


def _band(text: str, spec: str) -> tuple[float, float]:
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*-\s*([0-9.eE+]+)\s*", text)
    try:
        low, high = float(match.group(1)), float(match.group(2))  # type: ignore[union-attr]
    except (AttributeError, ValueError):  # no match, or e.g. 1.2.3
        raise VOSourceError(f"source {spec!r}: band={text!r} is not LO-HI in Å, e.g. band=6469-6782") from None
    if not 0 < low < high:
        raise VOSourceError(f"source {spec!r}: band={text!r} needs 0 < LO < HI (Å)")
    return low, high


def parse_vo_spec(spec: str) -> VOSpec | None:
    """The :class:`VOSpec` of a ``votable:``/``urls:``/``index:`` string; None for anything else."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        return None
    location, _, fragment = rest.rpartition("#") if "#" in rest else (rest, "", "")
    location = location.strip()
    if not location:
        raise VOSourceError(f"source {spec!r}: nothing after {kind}: (give a URL, store:KEY or a path)")
    options = parse_qs(fragment, keep_blank_values=True)
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise VOSourceError(f"source {spec!r}: unknown option(s) {unknown}; known: {sorted(_OPTION_KEYS)}")
    value = {name: values[-1] for name, values in options.items()}
    if kind == "index" and not location.startswith(("http://", "https://")):
        raise VOSourceError(f"source {spec!r}: an index page must be an http(s):// URL")
    datalink = value.get("datalink", "auto")
    if datalink not in DATALINK_MODES:
        raise VOSourceError(f"source {spec!r}: datalink={datalink!r}; use one of {', '.join(DATALINK_MODES)}")
    if kind != "votable" and ("datalink" in value or "band" in value):
        raise VOSourceError(f"source {spec!r}: datalink and band apply to votable: sources only")
    if "glob" in value and kind != "index":
        raise VOSourceError(f"source {spec!r}: glob applies to index: sources only")
    band = _band(value["band"], spec) if "band" in value else None
    if datalink == "cutout" and band is None:
        raise VOSourceError(f"source {spec!r}: datalink=cutout needs band=LO-HI (Å, vacuum), e.g. the grid plus a margin")
    if not location.startswith(("http://", "https://", "s3://", "store:")):
        location = str(Path(location.removeprefix("file://")).expanduser().resolve())
    return VOSpec(
        kind=kind, location=location, datalink=datalink, band_A=band,
        globs=tuple(g for g in value["glob"].split(",") if g) if value.get("glob") else None,
        concurrency=_number(value.get("concurrency", "8"), "concurrency", spec, int, 1, 256),
        retries=_number(value.get("retries", "4"), "retries", spec, int, 0, 20),
        timeout=_number(value.get("timeout", "60"), "timeout", spec, float, 1, 3600),
    )




def override(spec: VOSpec, *, datalink: str | None = None, band: str | None = None, concurrency: int | None = None,
             retries: int | None = None, timeout: float | None = None) -> VOSpec:
    """``spec`` with the given options replaced (command-line flags win over the string's own
    options); the result is validated like a parsed string (e.g. cutout needs a band)."""
    changes: dict[str, Any] = {name: value for name, value in
                               (("datalink", datalink), ("concurrency", concurrency), ("retries", retries))
                               if value is not None}
    if timeout is not None:
        changes["timeout"] = float(timeout)
    if band is not None:
        changes["band_A"] = _band(band, spec.canonical())
    updated = replace(spec, **changes)
    return parse_vo_spec(updated.canonical()) or updated


def banded(spec: VOSpec, grid: Any, margin_A: float = CUTOUT_MARGIN_A) -> VOSpec:
    """``spec`` with the SODA band of ``grid`` (start/end in Å, medium air or vacuum) plus
    ``margin_A`` on each side, when it is a VOTable source that may use cutouts and has no band
    yet; else ``spec`` itself. Cutouts are requested in vacuum wavelengths."""
    if spec.kind != "votable" or spec.datalink in ("this", "none") or spec.band_A is not None:
        return spec
    from oraculum.spectra.wavelength import air_to_vacuum

    start, end = float(grid.start), float(grid.end)
    if getattr(grid, "medium", "vacuum") == "air":
        start, end = float(air_to_vacuum(start)), float(air_to_vacuum(end))
    return replace(spec, band_A=(max(start - margin_A, 1.0), end + margin_A))


def fetch_spec_string(kind: Kind, location: str, concurrency: int = 8, retries: int = 4, timeout: float = 60.0, *,
                      datalink: str = "auto", grid: Any = None, margin_A: float = CUTOUT_MARGIN_A,
                      patterns: tuple[str, ...] | None = None) -> str:
    """The canonical source string for a manifest's fetch source (a Job's SOURCE argument)."""
    globs = tuple(patterns) if patterns and tuple(patterns) != FITS_PATTERNS else None
    spec = VOSpec(kind, location, datalink if kind == "votable" else "auto", None, globs,
                  concurrency, retries, float(timeout))
    return (banded(spec, grid, margin_A) if grid is not None else spec).canonical()
