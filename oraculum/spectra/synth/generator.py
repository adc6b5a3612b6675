"""A synthetic archive: many LAMOST-format files in the store, with their labels.

:func:`generate` writes ``config.count`` files (:class:`SynthConfig`: how many, which label mix,
which S/N range, compressed or not) under a prefix of the store, with the exact label mix
(largest remainder, then shuffled) and every kind of damage present among the ``bad`` files.

Next to the files, ``labels.csv`` (``filename,obsid,label``) holds the labels and ``truth.csv``
every drawn parameter (temperature, S/N, line amplitudes and widths, kind of damage), for
benchmarks that ask how performance depends on line strength or S/N.

Generation is deterministic: file ``i`` draws from ``numpy.random.default_rng([seed, 1, i])``, and
the headers carry no timestamps, so the same :class:`SynthConfig` produces the same bytes.
"""

from __future__ import annotations

import csv
import io
import math
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from oraculum.spectra.synth.lamost_fits import FileMeta, finish_bytes, lamost_fits_bytes, lamost_wavelength_A
from oraculum.spectra.synth.star import BAD_KINDS, CLASSES, simulate
from oraculum.store import ObjectStore

__all__ = [
    "DEFAULT_FRACTIONS",
    "SynthConfig",
    "SynthSummary",
    "generate",
]

#: Default label mix: emission-line stars are rare, as in the archive (a few per cent).
DEFAULT_FRACTIONS: dict[str, float] = {
    "absorption": 0.90,
    "emission": 0.05,
    "double-peak": 0.03,
    "bad": 0.02,
}

_FIBERS_PER_SPECTROGRAPH = 250
_SPECTROGRAPHS = 16
_FIBERS_PER_PLAN = _FIBERS_PER_SPECTROGRAPH * _SPECTROGRAPHS
_FIRST_MJD = 55859  # 2011-10-24, start of the LAMOST regular survey
_WRITERS = 4  # concurrent store writes: hides the local store's per-file fsync and S3 latency
_WRITE_BATCH = 8  # files per write task
_OBSID_BASE = 1_000_000_000  # above real DR1-DR8 OBSIDs, so synthetic ones never collide


# --------------------------------------------------------------------------------------------
# configuration and results


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    Attributes:
        count: number of spectrum files (>= 1).
        seed: non-negative integer; the same config always produces the same bytes.
        fractions: share of each label in :data:`CLASSES`; non-negative, summing to 1. Labels
            left out get 0. Counts are allocated exactly (largest remainder), then shuffled.
        snr_range: (low, high) r-band S/N per pixel; each spectrum draws log-uniformly in it.
        compress: write gzip-compressed ``.fits.gz`` files, like LAMOST's own distribution.
    """

    count: int
    seed: int = 0
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    snr_range: tuple[float, float] = (10.0, 150.0)
    compress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) or self.count < 1:
            raise ValueError(f"count must be a positive integer, got {self.count!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.fractions, Mapping):
            raise ValueError(f"fractions must be a mapping of label to share, got {self.fractions!r}")
        unknown = sorted(set(self.fractions) - set(CLASSES))
        if unknown:
            raise ValueError(f"fractions has unknown label(s) {unknown}; labels are {list(CLASSES)}")
        shares: dict[str, float] = {}
        for label in CLASSES:
            value = self.fractions.get(label, 0.0)
            try:
                share = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"fractions[{label!r}] must be a number, got {value!r}") from None
            if not math.isfinite(share) or share < 0:
                raise ValueError(f"fractions[{label!r}] must be a finite non-negative number, got {value!r}")
            shares[label] = share
        total = sum(shares.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {total:g} ({shares})")
        try:
            low, high = (float(v) for v in self.snr_range)
        except (TypeError, ValueError):
            raise ValueError(f"snr_range must be a pair (low, high), got {self.snr_range!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"snr_range must satisfy 0 < low <= high, got {self.snr_range!r}")
        if not isinstance(self.compress, bool):
            raise ValueError(f"compress must be true or false, got {self.compress!r}")
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "fractions", shares)
        object.__setattr__(self, "snr_range", (low, high))


@dataclass
class SynthSummary:
    """What :func:`generate` wrote.

    Attributes:
        counts: number of files per label (every label of :data:`CLASSES` present).
        files: store keys of the spectrum files, in generation order.
        labels_key: key of ``labels.csv`` (``filename,obsid,label``).
        truth_key: key of ``truth.csv``: the label plus the drawn physical parameters of every
            file (temperature, S/N, line amplitudes, how a bad file is broken), for
            difficulty-resolved benchmarks.
        bad_kinds: number of bad files per kind of damage.
    """

    counts: dict[str, int]
    files: list[str]
    labels_key: str
    truth_key: str
    bad_kinds: dict[str, int]


def _file_meta(
    config: SynthConfig, index: int, rng: np.random.Generator, plan_centres: dict[int, tuple[float, float]]
) -> FileMeta:
    """Name, ids and sky position of file ``index``: LAMOST-like plans of 16 x 250 fibres.

    Each plan gets a field centre (dec -10..+90 deg, uniform on the sphere, like LAMOST's sky) and
    each fibre a position within 2.5 deg of it (LAMOST's 5-degree field).
    """
    plan, within = divmod(index, _FIBERS_PER_PLAN)
    spid, fiber = divmod(within, _FIBERS_PER_SPECTROGRAPH)
    mjd = _FIRST_MJD + plan // 3
    planid = f"SYNTH{plan:05d}"
    filename = f"spec-{mjd}-{planid}_sp{spid + 1:02d}-{fiber + 1:03d}.fits"
    if plan not in plan_centres:
        plan_centres.clear()
        plan_rng = np.random.default_rng([config.seed, 3, plan])
        ra0 = float(plan_rng.uniform(0.0, 360.0))
        dec0 = math.degrees(math.asin(plan_rng.uniform(math.sin(math.radians(-10.0)), 0.95)))
        plan_centres[plan] = (ra0, dec0)
    ra0, dec0 = plan_centres[plan]
    radius = 2.5 * math.sqrt(rng.random())
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dec = min(89.999, max(-89.999, dec0 + radius * math.sin(angle)))
    ra = (ra0 + radius * math.cos(angle) / max(0.05, math.cos(math.radians(dec)))) % 360.0
    return FileMeta(filename, _OBSID_BASE + index, planid, mjd, spid + 1, fiber + 1, ra, dec)


def _exact_counts(count: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``count`` items to the keys of ``fractions`` (exact mix)."""
    names = list(fractions)
    raw = {name: count * fractions[name] for name in names}
    counts = {name: int(math.floor(value)) for name, value in raw.items()}
    remainder = count - sum(counts.values())
    for name in sorted(names, key=lambda n: (-(raw[n] - counts[n]), names.index(n)))[:remainder]:
        counts[name] += 1
    return counts


def _bad_kind_plan(n_bad: int, seed: int) -> list[str]:
    """Damage for each bad file: the :data:`BAD_KINDS` mix, exact, every kind present when possible.

    Exact rather than random so that even a small run (a test, a demo) exercises every reject path.
    """
    counts = _exact_counts(n_bad, BAD_KINDS)
    if n_bad >= len(BAD_KINDS):
        for kind in BAD_KINDS:
            while counts[kind] == 0:
                donor = max(counts, key=lambda k: counts[k])
                counts[donor] -= 1
                counts[kind] += 1
    plan = [kind for kind in BAD_KINDS for _ in range(counts[kind])]
    np.random.default_rng([seed, 4]).shuffle(plan)
    return plan


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.6g}"


def generate(
    store: ObjectStore,
    prefix: str,
    config: SynthConfig,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write ``config.count`` synthetic LAMOST files plus ``labels.csv`` and ``truth.csv``.

    Keys are ``{prefix}/spec-<mjd>-SYNTH<plan>_sp<NN>-<FFF>.fits[.gz]`` (4000 fibres per plan,
    16 spectrographs of 250 fibres, as LAMOST), ``{prefix}/labels.csv`` (``filename,obsid,label``)
    and ``{prefix}/truth.csv`` (label plus drawn parameters). ``progress(n)`` is called with the
    number of files written since the last call. Writes go through a few threads because the
    local store fsyncs every object and S3 has per-request latency; the bytes do not depend on
    the order in which writes finish.
    """
    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    counts = _exact_counts(config.count, {label: config.fractions[label] for label in CLASSES})
    bad_plan = iter(_bad_kind_plan(counts["bad"], config.seed))
    label_index = np.repeat(np.arange(len(CLASSES), dtype=np.int8), [counts[lab] for lab in CLASSES])
    np.random.default_rng([config.seed, 2]).shuffle(label_index)

    wl = lamost_wavelength_A()
    snr_low, snr_high = np.log(config.snr_range[0]), np.log(config.snr_range[1])
    files: list[str] = []
    label_rows = io.StringIO()
    truth_rows = io.StringIO()
    label_writer = csv.writer(label_rows, lineterminator="\n")
    truth_writer = csv.writer(truth_rows, lineterminator="\n")
    label_writer.writerow(["filename", "obsid", "label"])
    truth_fields = [
        "teff_K", "subclass", "snr", "rv_km_s", "ebv", "ha_amplitude", "ha_sigma_A", "hb_amplitude",
        "nii_amplitude", "dp_separation_A", "dp_sigma_A", "dp_vr_ratio", "dp_dip",
    ]
    truth_writer.writerow(["filename", "obsid", "label", "bad_kind", *truth_fields])
    bad_kinds = {kind: 0 for kind in BAD_KINDS}
    plan_centres: dict[int, tuple[float, float]] = {}
    suffix = ".gz" if config.compress else ""

    # Files go to the store in batches of _WRITE_BATCH through _WRITERS threads: one task per
    # file costs a thread hand-off per file, and one thread leaves the disk (or network) idle.
    pending: deque[tuple[Future[None], int]] = deque()
    batch: list[tuple[str, bytes, float | None]] = []
    unreported = 0

    def put_batch(items: list[tuple[str, bytes, float | None]]) -> None:
        # compression runs here, in the writer threads: zlib releases the GIL
        for item_key, item_data, item_cut in items:
            store.put_bytes(item_key, finish_bytes(item_data, config.compress, item_cut))

    def settle(max_pending: int) -> None:
        nonlocal unreported
        while len(pending) > max_pending:
            future, size = pending.popleft()
            future.result()
            unreported += size
        if progress is not None and unreported and (unreported >= 100 or max_pending == 0):
            progress(unreported)
            unreported = 0

    pool = ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="synth-write")
    try:
        for index in range(config.count):
            rng = np.random.default_rng([config.seed, 1, index])
            label = CLASSES[label_index[index]]
            snr = float(np.exp(rng.uniform(snr_low, snr_high)))
            spec = simulate(rng, label, wl, snr, bad_kind=next(bad_plan) if label == "bad" else None)
            meta = _file_meta(config, index, rng, plan_centres)
            data = lamost_fits_bytes(spec, meta)
            cut = float(rng.uniform(0.1, 0.9)) if spec.params.bad_kind == "truncated" else None
            if spec.params.bad_kind:
                bad_kinds[spec.params.bad_kind] += 1
            filename = meta.filename + suffix
            key = base + filename
            files.append(key)
            label_writer.writerow([filename, meta.obsid, label])
            p = spec.params
            truth_writer.writerow([
                filename, meta.obsid, label, p.bad_kind, f"{p.teff_K:.0f}", p.subclass, f"{p.snr:.2f}",
                f"{p.rv_km_s:.2f}", f"{p.ebv:.3f}", _fmt(p.ha_amplitude), _fmt(p.ha_sigma_A),
                _fmt(p.hb_amplitude), _fmt(p.nii_amplitude), _fmt(p.dp_separation_A), _fmt(p.dp_sigma_A),
                _fmt(p.dp_vr_ratio), _fmt(p.dp_dip),
            ])
            batch.append((key, data, cut))
            if len(batch) >= _WRITE_BATCH:
                pending.append((pool.submit(put_batch, batch), len(batch)))
                batch = []
                settle(2 * _WRITERS)
        if batch:
            pending.append((pool.submit(put_batch, batch), len(batch)))
        settle(0)
    finally:
        # on an error (a store that refuses writes, Ctrl-C) drop queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)

    labels_key = base + "labels.csv"
    truth_key = base + "truth.csv"
    store.put_bytes(labels_key, label_rows.getvalue().encode("utf-8"))
    store.put_bytes(truth_key, truth_rows.getvalue().encode("utf-8"))
    return SynthSummary(
        counts=counts, files=files, labels_key=labels_key, truth_key=truth_key, bad_kinds=bad_kinds
    )
