"""Where ingestion reads from: a folder, a file, an ``s3://`` prefix, a synthetic archive, or a
Virtual Observatory source (``votable:``, ``urls:``, ``index:``, ``http(s)://``, see :mod:`oraculum.vo`).
"""

from __future__ import annotations

from pathlib import Path

from oraculum.settings import Settings
from oraculum.spectra.archive import DEFAULT_PATTERNS, Source
from oraculum.store import LocalStore, ObjectStore, StoreError, open_store
from oraculum.vo.sources import open_vo_source, vo_archive_store

#: ``synthetic:COUNT[?seed=S]``: a source of synthetic spectra (see :func:`synthetic_source`).
SYNTHETIC_SCHEME = "synthetic:"


def synthetic_prefix(count: int, seed: int = 0) -> str:
    """Store prefix of the synthetic archive ``synthetic:COUNT?seed=SEED`` (its ``labels.csv`` is the
    simulated oracle's answer file)."""
    return f"archive/synthetic-{count}-s{seed}"


def parse_synthetic(spec: str) -> tuple[int, int]:
    """(count, seed) of ``synthetic:COUNT[?seed=S]``; ValueError naming the problem otherwise."""
    from urllib.parse import parse_qs

    body = spec[len(SYNTHETIC_SCHEME):].lstrip("/")
    count_text, _, query = body.partition("?")
    params = parse_qs(query)
    try:
        count = int(count_text)
        seed = int(params.pop("seed", ["0"])[0])
    except ValueError:
        raise ValueError(f"source {spec!r}: use synthetic:COUNT or synthetic:COUNT?seed=S with integers") from None
    if params:
        raise ValueError(f"source {spec!r}: unknown option(s) {sorted(params)}; only seed is understood")
    if count < 1 or seed < 0:
        raise ValueError(f"source {spec!r}: need COUNT >= 1 and seed >= 0")
    return count, seed


def synthetic_source(spec: str, settings: Settings | None = None) -> "Source":
    """Synthetic LAMOST-format spectra, generated into the store once and then read like an archive.

    Generation is deterministic and every write is atomic, so several pods of an Indexed Job
    that start together may all generate: they write identical bytes, and each lists the files
    only after its own generation finished. ``truth.csv`` is written last and marks a finished
    archive, so later runs reuse it.
    """
    from oraculum.spectra.synth import generator as synth

    count, seed = parse_synthetic(spec)
    store = open_store(settings=settings)
    prefix = synthetic_prefix(count, seed)
    if not store.exists(f"{prefix}/truth.csv"):
        synth.generate(store, prefix, synth.SynthConfig(count=count, seed=seed))
    return Source(open_store(f"{store.url.rstrip('/')}/{prefix}", settings), DEFAULT_PATTERNS, spec)


def open_source(spec: str, patterns: tuple[str, ...] | None = None, settings: Settings | None = None) -> Source:
    """A :class:`Source` for a local folder, a single local file, an ``s3://bucket/prefix``, or
    ``synthetic:COUNT?seed=S`` (synthetic spectra made in the store on first use)."""
    if spec.startswith(SYNTHETIC_SCHEME):
        return synthetic_source(spec, settings)

    fetching = open_vo_source(spec, settings)
    if fetching is not None:
        return fetching
    patterns = tuple(patterns) if patterns else DEFAULT_PATTERNS
    if spec.startswith("s3://"):
        return Source(open_store(spec, settings), patterns, spec)
    path = Path(spec.removeprefix("file://")).expanduser()
    if path.is_file():
        return Source(LocalStore(path.parent), (path.name,), str(path.resolve()))
    if not path.is_dir():
        raise StoreError(f"source {spec!r} is neither a folder, a file nor an s3:// prefix")
    return Source(LocalStore(path), patterns, str(path.resolve()))


def archive_store(source_url: str, settings: Settings | None = None) -> ObjectStore:
    """The store that holds a dataset's raw files, from its ``index.source.url``, so a spectrum's
    ``source_key`` can be read again (the raw spectrum, full range). Unlike :func:`open_source`
    this never generates anything: a synthetic archive is looked up where it was made."""
    if source_url.startswith(SYNTHETIC_SCHEME):
        count, seed = parse_synthetic(source_url)
        base = open_store(settings=settings)
        return open_store(f"{base.url.rstrip('/')}/{synthetic_prefix(count, seed)}", settings)
    if source_url.startswith("s3://"):
        return open_store(source_url, settings)
    fetched = vo_archive_store(source_url, settings)
    if fetched is not None:
        return fetched
    path = Path(source_url.removeprefix("file://")).expanduser()
    return LocalStore(path.parent if path.is_file() else path)
