"""What ``oraculum demo --source DIR`` checks in a folder of real spectra before it uses them.

One grid for spectra of very different resolutions (LAMOST low resolution, R about 1,800; its
medium resolution, R about 7,500; Ondřejov CCD700, R about 13,000) hands the network instrument
differences to learn instead of line profiles, and a spectrum at S/N 1 is noise. So the demo
reads every file once, with the readers' own format detection, and

* groups the spectra by format and by resolution: the pixel resolving power λ/Δλ of the native
  sampling at the grid's centre, groups within a factor :data:`SAME_RESOLUTION` of each other
  being one resolution (pixel sizes differ a little between set-ups of one instrument);
* refuses spectra of more than one resolution unless ``--mix-instruments`` says to mix them (and
  then says what it mixes); several formats at one resolution (LAMOST images and tables,
  Ondřejov tables and 1-D images) are named, not refused;
* leaves out the spectra below ``--min-snr`` (default :data:`DEFAULT_MIN_SNR`): the S/N the header
  gives (LAMOST ``SNRR``, the medium-resolution arm's S/N), else an estimate from the flux inside
  the grid (DER_SNR, Stoehr et al. 2008). A file that cannot be read is kept: ingestion rejects
  it with its reason.

When it leaves files out, the demo preprocesses a selection: hard links (copies across file
systems) to the files it keeps, under ``archive/demo-sources/`` in the store, at the same
relative paths, so spectrum ids and a ``labels.csv`` by id or file name still match. The
selection's ``selection.json`` lists what was left out and why.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oraculum.demo.processes import DemoError
from oraculum.spectra.preprocessing import WavelengthGrid
from oraculum.spectra.spectrum import Spectrum

__all__ = ["DEFAULT_MIN_SNR", "SAME_RESOLUTION", "Group", "SourceFile", "der_snr", "select_source", "survey_source"]

#: Spectra below this S/N are left out unless ``--min-snr`` says otherwise.
DEFAULT_MIN_SNR = 5.0
#: Pixel resolving powers within this factor of each other count as one resolution.
SAME_RESOLUTION = 1.4
#: Where the selections live in the store.
SELECTIONS = "archive/demo-sources"
_LISTED = 5  # files named per reason in a message


@dataclass(frozen=True)
class SourceFile:
    """One file of the folder as the demo sees it."""

    key: str
    #: The reader's format name; None when the file cannot be read.
    format: str | None = None
    #: λ/Δλ of the native pixels at the grid's centre.
    resolving: float | None = None
    snr: float | None = None
    #: Where :attr:`snr` comes from: ``header`` or ``estimated`` (DER_SNR).
    snr_from: str = ""
    problem: str = ""


@dataclass(frozen=True)
class Group:
    """Readable files of one format and resolution."""

    format: str
    resolving: float
    keys: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.format} ({len(self.keys)} file{'s' if len(self.keys) != 1 else ''}, e.g. {self.keys[0]})"


@dataclass
class Survey:
    """The files of a source folder, by format and resolution."""

    folder: Path
    files: list[SourceFile]
    #: The groups of each resolution, lowest resolution first.
    resolutions: list[list[Group]] = field(default_factory=list)


def der_snr(flux: np.ndarray) -> float | None:
    """The DER_SNR estimate of a spectrum's S/N (Stoehr et al. 2008): median flux over the noise
    that the second differences of pixels two apart give; None with fewer than 5 pixels."""
    flux = np.asarray(flux, dtype=np.float64)
    if flux.size < 5:
        return None
    noise = 1.482602 / math.sqrt(6.0) * float(np.median(np.abs(2.0 * flux[2:-2] - flux[:-4] - flux[4:])))
    signal = float(np.median(flux))
    if noise <= 0:
        return math.inf if signal > 0 else 0.0
    return signal / noise


def _inspect(key: str, spectrum: Spectrum, grid: WavelengthGrid) -> SourceFile:
    wavelength = np.asarray(spectrum.wavelength_A, dtype=np.float64)
    low, high = grid.range_in(spectrum.medium)
    centre = int(np.clip(np.searchsorted(wavelength, (low + high) / 2), 1, wavelength.size - 1))
    steps = np.diff(wavelength[max(0, centre - 3): centre + 3])
    resolving = float(wavelength[centre] / np.median(steps)) if steps.size and np.median(steps) > 0 else None
    snr, origin = spectrum.meta.snr, "header"
    if snr is None or not math.isfinite(snr) or snr < 0:  # none given, or a missing-value marker
        good = (wavelength >= low) & (wavelength <= high) & np.isfinite(spectrum.flux)
        if spectrum.mask is not None:
            good &= ~np.asarray(spectrum.mask, dtype=bool)
        snr, origin = der_snr(np.asarray(spectrum.flux)[good]), "estimated"
    return SourceFile(key, spectrum.format, resolving, snr, origin if snr is not None else "")


def _by_resolution(files: Sequence[SourceFile]) -> list[list[Group]]:
    """Groups of (format, resolution), gathered by resolution, lowest first."""
    readable = sorted((f for f in files if f.format is not None and f.resolving), key=lambda f: f.resolving or 0.0)
    clusters: list[list[SourceFile]] = []
    for item in readable:
        if clusters and (item.resolving or 0.0) <= (clusters[-1][-1].resolving or 0.0) * SAME_RESOLUTION:
            clusters[-1].append(item)
        else:
            clusters.append([item])
    out = []
    for cluster in clusters:
        formats: dict[str, list[SourceFile]] = {}
        for item in cluster:
            formats.setdefault(item.format or "", []).append(item)
        out.append([Group(name, float(np.median([f.resolving or 0.0 for f in members])),
                          tuple(sorted(f.key for f in members)))
                    for name, members in sorted(formats.items(), key=lambda kv: (-len(kv[1]), kv[0]))])
    return out


def survey_source(folder: Path, grid: WavelengthGrid, patterns: Sequence[str] | None = None) -> Survey:
    """Read every file of ``folder`` that ``patterns`` select (default: FITS files)."""
    from oraculum.ingest.sources import open_source
    from oraculum.spectra.readers import read_spectrum
    from oraculum.spectra.spectrum import SpectrumRejected

    source = open_source(str(folder), tuple(patterns) if patterns else None)
    files = []
    for info in source.list():
        try:
            spectrum = read_spectrum(source.store.get_bytes(info.key), info.key, grid=grid)
        except SpectrumRejected as rejection:
            files.append(SourceFile(info.key, problem=f"{rejection.reason.value}: {rejection.message}"))
            continue
        files.append(_inspect(info.key, spectrum, grid))
    return Survey(folder, files, _by_resolution(files))


def _resolution(groups: list[Group]) -> str:
    return f"pixels of λ/Δλ ≈ {groups[0].resolving:,.0f}: " + ", ".join(g.describe() for g in groups)


def _snr_text(item: SourceFile) -> str:
    return f"{item.key} (S/N {item.snr:.1f}, {item.snr_from})" if item.snr is not None else item.key


def select_source(folder: Path, grid: WavelengthGrid, store_root: Path, *, patterns: Sequence[str] | None = None,
                  min_snr: float = DEFAULT_MIN_SNR, mix: bool = False,
                  echo: Callable[[str], None] = print) -> Path | None:
    """Check the spectra of ``folder`` (see the module docstring) and say what was found.

    Returns None when the folder is to be used as it is, or the selection folder in the store
    the demo is to preprocess instead. Raises :class:`DemoError` for spectra of several
    resolutions without ``mix``, and when no spectrum reaches ``min_snr``.
    """
    folder = folder.resolve()
    everything = survey_source(folder, grid, patterns)
    unreadable = [f for f in everything.files if f.format is None]
    low = [f for f in everything.files if f.format is not None and f.snr is not None and f.snr < min_snr]
    dropped = {f.key for f in low}
    kept = Survey(folder, [f for f in everything.files if f.key not in dropped])
    kept.resolutions = _by_resolution(kept.files)
    echo(f"source {folder}: {len(everything.files)} files, "
         + "; ".join(_resolution(groups) for groups in everything.resolutions)
         + (f"; {len(unreadable)} unreadable (ingestion rejects them with the reason, e.g. "
            f"{unreadable[0].key}: {unreadable[0].problem})" if unreadable else ""))
    if low:
        echo(f"leaving out {len(low)} {'spectrum' if len(low) == 1 else 'spectra'} below S/N {min_snr:g} (--min-snr): "
             + ", ".join(_snr_text(f) for f in low[:_LISTED]) + (", ..." if len(low) > _LISTED else ""))
    if not any(f.format is not None for f in kept.files) and any(f.format is not None for f in everything.files):
        raise DemoError(f"no spectrum in {folder} reaches S/N {min_snr:g}: give a lower --min-snr (0 keeps every one)")
    if len(kept.resolutions) > 1:
        listing = "; ".join(_resolution(groups) for groups in kept.resolutions)
        if not mix:
            raise DemoError(
                f"the spectra in {folder} have {len(kept.resolutions)} different resolutions, and the demo would put "
                f"them on one grid: {listing}. Give --source a folder of one instrument and resolution, or "
                "--mix-instruments to mix them anyway (a PreprocessingJob's blurSigmaPx in --manifests can "
                "degrade the sharper ones first)")
        echo(f"warning: mixing {len(kept.resolutions)} resolutions on one grid, as --mix-instruments asks: {listing}")
    for groups in kept.resolutions:
        if len(groups) > 1:
            echo(f"note: {', '.join(g.format for g in groups)} share one resolution (λ/Δλ ≈ "
                 f"{groups[0].resolving:,.0f}) and the grid")
    if not low:
        return None
    return _stage(folder, [f.key for f in kept.files], store_root, min_snr, low)


def _stage(folder: Path, keys: list[str], store_root: Path, min_snr: float, low: list[SourceFile]) -> Path:
    """Hard links to ``keys`` of ``folder`` in a selection folder of the store (made once)."""
    digest = hashlib.sha256("\0".join([str(folder), f"{min_snr:g}", *keys]).encode()).hexdigest()[:12]
    target = store_root / SELECTIONS / f"{folder.name[-40:]}-{digest}"
    record = target / "selection.json"
    if record.is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)  # a selection interrupted before its record
    for key in keys:
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(folder / key, path)
        except OSError:  # another file system
            shutil.copy2(folder / key, path)
    record.write_text(json.dumps({
        "source": str(folder), "min_snr": min_snr, "files": len(keys),
        "left_out": [{"key": f.key, "snr": f.snr, "snr_from": f.snr_from} for f in low],
    }, indent=1))
    return target
