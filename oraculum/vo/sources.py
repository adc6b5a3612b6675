"""VO sources for ingestion: recognising them, their plans and archives, and :class:`VOSource`.

The source strings themselves (``votable:``, ``urls:``, ``index:``) are parsed in
:mod:`oraculum.vo.spec`. Here they become work: the plan is made once from the source document
and kept in ``_fetch/<digest>/`` beside the files, and the plan, not the store listing, is what a
:class:`VOSource` lists, so all pods of an Indexed Job agree on the slices while the files are
still arriving. Module-level imports are light: ingestion consults :func:`open_vo_source` for
every source, and heavier modules are imported when a VO source is really used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oraculum.spectra.archive import DEFAULT_PATTERNS, Source, shard_bounds
from oraculum.settings import Settings, get_settings
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected
from oraculum.store import KeyNotFound, ObjectInfo, ObjectStore, open_store
from oraculum.vo.spec import Kind, VOSourceError, VOSpec, parse_vo_spec

if TYPE_CHECKING:
    from oraculum.vo.fetch import FetchReport, ItemRecord
    from oraculum.vo.plan import Plan

log = logging.getLogger(__name__)


# --- recognising plain URLs and files by their content -----------------------------------------


#: Bytes of a document that :func:`classify` looks at.
CLASSIFY_BYTES = 65536


def classify(data: bytes) -> Kind | None:
    """votable, index (HTML), urls (a text list of URLs) or None, from a document's first bytes."""
    from oraculum.vo.listing import looks_like_html

    head = data[:CLASSIFY_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<") and b"<VOTABLE" in head[:8192].upper():
        return "votable"
    if looks_like_html(head):
        return "index"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    return "urls" if first.startswith(("http://", "https://")) else None


def recognise(spec: str, settings: Settings | None = None) -> VOSpec | None:
    """The VO source ``spec`` stands for: a ``votable:``/``urls:``/``index:`` string, an
    ``http(s)://`` URL (fetched once to see what it is), or a local VOTable or URL list. None for
    anything else (a folder, a FITS file, ``s3://``, ``synthetic:``)."""
    parsed = parse_vo_spec(spec)
    if parsed is not None:
        return parsed
    if is_remote(spec):
        from oraculum.vo.policy import OutboundPolicy
        from oraculum.vo.transport import FetchError, HttpClient, RetryPolicy

        with HttpClient(RetryPolicy(retries=2, timeout=60), outbound=OutboundPolicy.from_settings(settings)) as http:
            try:
                data = http.get_head(spec, CLASSIFY_BYTES)
            except FetchError as error:
                raise VOSourceError(f"source {spec}: cannot fetch it to see what it is: {error.reason}") from None
        kind = classify(data)
        if kind is None:  # the answer is not quoted (see oraculum.vo.policy)
            raise VOSourceError(
                f"source {spec}: the answer ({len(data)} bytes read) is neither a VOTable, an HTML index page "
                f"nor a list of URLs; name it explicitly, e.g. votable:{spec}"
            )
        return parse_vo_spec(f"{kind}:{spec}")
    path = Path(spec.removeprefix("file://")).expanduser()
    if "://" not in spec.removeprefix("file://") and path.is_file():
        with open(path, "rb") as handle:
            kind = classify(handle.read(CLASSIFY_BYTES))
        if kind is not None:
            return parse_vo_spec(f"{kind}:{path.resolve()}")
    return None


# --- plans, archives and the ingestion source ---------------------------------------------------


def is_remote(location: str) -> bool:
    """Whether ``location`` is fetched over HTTP (its bytes are then never quoted in a message)."""
    return location.startswith(("http://", "https://"))


def read_location(location: str, settings: Settings, http: Any) -> bytes:
    """The bytes of a VOTable or URL list at ``location`` (URL, store:KEY, s3://bucket/key, path)."""
    if is_remote(location):
        return http.get_bytes(location)
    if location.startswith("store:"):
        key = location.removeprefix("store:").lstrip("/")
        store = open_store(settings=settings)
        try:
            return store.get_bytes(key)
        except KeyNotFound:
            raise VOSourceError(f"no object {key!r} in the store {store.url}: upload it first or fix the key") from None
    if location.startswith("s3://"):
        folder, _, name = location.rpartition("/")
        try:
            return open_store(folder, settings).get_bytes(name)
        except KeyNotFound:
            raise VOSourceError(f"no object {location}: upload it first or fix the location") from None
    try:
        return Path(location).read_bytes()
    except OSError as error:
        raise VOSourceError(f"cannot read {location}: {error.strerror}") from None


def archive_for(spec: VOSpec, settings: Settings, prefix: str | None = None) -> ObjectStore:
    """The store folder of the source ``spec`` (``prefix`` overrides where): its plan, and its
    files unless they are SODA cutouts (see :meth:`VOArchive.files`)."""
    base = open_store(settings=settings)
    return open_store(f"{base.url.rstrip('/')}/{(prefix or spec.archive_prefix).strip('/')}", settings)


def load_plan(archive: ObjectStore, spec: VOSpec, settings: Settings) -> "Plan":
    """The plan of ``spec``, made once from the source document and then read from the store.

    Pods that start together may all make it; they write the same plan. The plan is written
    last, so a plan in the store is always complete. Delete ``_fetch/<digest>/`` to read the
    source again (e.g. a new answer from the same SSAP query).
    """
    from oraculum.vo.datalink import load_descriptor
    from oraculum.vo.plan import Plan
    from oraculum.vo.policy import OutboundPolicy
    from oraculum.vo.transport import FetchError, HttpClient

    state = spec.state_prefix
    try:
        data = archive.get_bytes(f"{state}/plan.jsonl")
    except KeyNotFound:
        pass
    else:
        header = json.loads(data.split(b"\n", 1)[0])
        descriptor = None
        if header.get("descriptor"):
            bound = header["descriptor"]
            descriptor = load_descriptor(archive.get_bytes(f"{state}/datalink.xml"), bound["ref"], bound["column"],
                                         f"{archive.url}/{state}/datalink.xml")
        return Plan.loads(data, descriptor)
    with HttpClient(spec.options().policy(), spec.concurrency, outbound=OutboundPolicy.from_settings(settings)) as http:
        try:
            plan = _make_plan(archive, spec, settings, http)
        except FetchError as error:
            raise VOSourceError(f"source {spec.canonical()}: cannot read it: {error}") from None
    summary = {"source": spec.canonical(), "items": len(plan.items), "links": plan.uses_links}
    archive.put_bytes(f"{state}/source.json", json.dumps(summary, indent=1).encode())
    archive.put_bytes(f"{state}/plan.jsonl", plan.dumps())
    return plan


def _make_plan(archive: ObjectStore, spec: VOSpec, settings: Settings, http: Any) -> "Plan":
    """Read the source document (keeping a copy beside the plan) and make the plan from it."""
    from oraculum.vo.datalink import descriptor_document
    from oraculum.vo.listing import crawl_index, parse_url_list
    from oraculum.vo.plan import plan_crawl, plan_urls, plan_votable

    state = spec.state_prefix
    if spec.kind == "votable":
        document = read_location(spec.location, settings, http)
        plan = plan_votable(document, spec.location, spec.datalink, remote=is_remote(spec.location))  # type: ignore[arg-type]
        archive.put_bytes(f"{state}/source.vot", document)
        if plan.descriptor is not None:
            archive.put_bytes(f"{state}/datalink.xml", descriptor_document(plan.descriptor))
    elif spec.kind == "urls":
        document = read_location(spec.location, settings, http)
        plan = plan_urls(parse_url_list(document.decode("utf-8", errors="replace"), spec.location,
                                        remote=is_remote(spec.location)))
        archive.put_bytes(f"{state}/source.txt", document)
    else:
        crawl = crawl_index(http, spec.location, spec.globs or DEFAULT_PATTERNS)
        plan = plan_crawl(crawl)
        archive.put_bytes(f"{state}/source.txt", ("\n".join(crawl.files) + "\n").encode())
    return plan


class VOArchive:
    """Where one VO source lives in the store: the plan in ``<base>/_fetch/<digest>/``, the files
    in ``<base>`` (or, for SODA cutouts, in ``<base>/cutout-<lo>-<hi>/``), each folder's fetch
    reports in its own ``_fetch/<digest>/``."""

    def __init__(self, spec: VOSpec, settings: Settings, prefix: str | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.prefix = (prefix or spec.archive_prefix).strip("/")
        self.base = archive_for(spec, settings, prefix)
        self._plan: "Plan | None" = None
        self._files: ObjectStore | None = None

    def plan(self) -> "Plan":
        if self._plan is None:
            plan = load_plan(self.base, self.spec, self.settings)
            if self.spec.datalink == "cutout" and not plan.uses_links:  # a plan made in another mode
                raise VOSourceError(f"source {self.spec.canonical()}: datalink=cutout, but no row of the table "
                                    "goes through DataLink; use datalink=auto or this")
            self._plan = plan
        return self._plan

    def _uses_links(self, read_only: bool) -> bool:
        if self._plan is None:  # the summary is enough (the API asks this of finished datasets)
            try:
                return bool(json.loads(self.base.get_bytes(f"{self.spec.state_prefix}/source.json"))["links"])
            except (KeyNotFound, KeyError, ValueError):
                if read_only:
                    return False
        return self.plan().uses_links

    def files(self, read_only: bool = False) -> ObjectStore:
        """The folder that holds (or will hold) the fetched files; ``read_only``: never read the
        source to find out (a source never planned has nothing fetched anyway)."""
        if self._files is None:
            folder = self.spec.cutout_folder
            links = bool(folder) and self._uses_links(read_only)
            store = open_store(f"{self.base.url.rstrip('/')}/{folder}", self.settings) if links else self.base
            if not read_only or self._plan is not None or links:
                self._files = store
            return store
        return self._files

    def fetch(self, ranges: list[tuple[int, int]], progress: Any = None, http: Any = None) -> "FetchReport":
        """Fetch the plan items of ``ranges`` (contiguous [start, stop) slices); one report
        (``report-<first>-<stop>.jsonl``) covers them all."""
        from oraculum.vo.fetch import fetch_items
        from oraculum.vo.policy import OutboundPolicy

        plan = self.plan()
        items = [item for start, stop in ranges for item in plan.items[start:stop]]
        first = min((start for start, _ in ranges), default=0)
        stop = max((stop for _, stop in ranges), default=0)
        state = self.spec.state_prefix
        report = fetch_items(self.files(), items, f"{state}/report-{first:09d}-{stop:09d}.jsonl", self.spec.options(),
                             state_prefix=state, descriptor=plan.descriptor, progress=progress, http=http,
                             outbound=OutboundPolicy.from_settings(self.settings))
        if first == 0:
            report.problems = list(plan.problems)
        folder = self.spec.cutout_folder if self.files() is not self.base else None
        report.report_key = "/".join(part for part in (self.prefix, folder, report.report_key) if part)
        return report


def fetch_source(spec: VOSpec, settings: Settings, *, prefix: str | None = None,
                 shard: tuple[int, int] | None = None, progress: Any = None) -> "FetchReport":
    """``oraculum fetch``: the plan of ``spec`` (or its shard ``(i, n)``) into the store."""
    archive = VOArchive(spec, settings, prefix)
    total = len(archive.plan().items)
    return archive.fetch([shard_bounds(total, *shard) if shard else (0, total)], progress)


#: Bytes of a gzip-compressed file decompressed to see whether it holds FITS.
_SNIFF_BYTES = 64


def _starts_as_fits(data: bytes) -> bool:
    from oraculum.spectra.readers.compression import is_gzip

    head = data[:_SNIFF_BYTES]
    if is_gzip(data):
        try:
            head = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(data[:65536], _SNIFF_BYTES)
        except zlib.error:
            return False
    return head.startswith(b"SIMPLE  =")


def screen_fetched(data: bytes, key: str) -> None:
    """Reject a fetched file that is not FITS and that the readers cannot read either, with a
    message that does not quote it.

    The readers' messages about a file that is not FITS quote its start (its first line, when it
    is text), and those messages reach the rejected list that every viewer reads. A fetched file
    came from a server the viewers may not reach themselves (see :mod:`oraculum.vo.policy`), so
    its content stays out: here it is read once ahead of ingestion (a FITS file is not: its
    signature is enough), and a rejection is raised again with the reader's reason and a message
    of its own. The reader's message goes to the log.
    """
    if _starts_as_fits(data):
        return
    from oraculum.spectra.readers import read_spectrum

    try:
        read_spectrum(data, key)
    except SpectrumRejected as rejection:
        log.info("fetched %s rejected: %s", key, rejection.message)
        raise SpectrumRejected(rejection.reason, (
            f"{key}: the fetched file ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}) is not "
            "FITS, gzip-compressed FITS or a CSV/TSV table with wavelength and flux columns that oraculum "
            "can read; its content is not quoted here (fetched files never are)")) from None


class FetchedArchive(ObjectStore):
    """The fetched files as ingestion reads them: a file that is missing because its download
    failed, or because it duplicates another, is rejected with that reason (from the reports)."""

    def __init__(self, archive: VOArchive) -> None:
        self.vo = archive
        self._records: dict[str, "ItemRecord"] | None = None

    @property
    def url(self) -> str:  # type: ignore[override]
        return self.vo.files().url

    def forget(self) -> None:
        self._records = None

    def _why(self, key: str) -> SpectrumRejected:
        from oraculum.vo.fetch import read_records

        if self._records is None:
            self._records = read_records(self.vo.files(), self.vo.spec.state_prefix)
        record = self._records.get(key)
        if record is None:
            return SpectrumRejected(RejectReason.UNREADABLE, f"{key}: not fetched yet (no fetch record in {self.url})")
        if record.status == "failed":
            status = f"HTTP {record.http_status}: " if record.http_status else ""
            return SpectrumRejected(RejectReason.DOWNLOAD_FAILED, f"{record.url or record.source}: {status}{record.reason}")
        if record.status == "duplicate":
            return SpectrumRejected(RejectReason.DUPLICATE_CONTENT, f"{record.source}: {record.reason}; kept once")
        return SpectrumRejected(RejectReason.UNREADABLE, f"{key}: recorded as fetched but missing from {self.url}")

    def get_bytes(self, key: str) -> bytes:
        try:
            data = self.vo.files().get_bytes(key)
        except KeyNotFound:
            raise self._why(key) from None
        screen_fetched(data, key)
        return data

    def put_bytes(self, key: str, data: bytes) -> None:
        self.vo.files().put_bytes(key, data)

    def get_file(self, key: str, path: Any) -> None:
        self.vo.files().get_file(key, path)

    def put_file(self, key: str, path: Any) -> None:
        self.vo.files().put_file(key, path)

    def exists(self, key: str) -> bool:
        return self.vo.files().exists(key)

    def list(self, prefix: str = "") -> Any:
        return self.vo.files().list(prefix)

    def delete(self, key: str) -> None:
        self.vo.files().delete(key)

    def local_path(self, key: str) -> Path | None:
        return self.vo.files().local_path(key)


@dataclass(frozen=True)
class VOSource(Source):
    """An ingestion source that fetches: it lists the plan (sizes unknown: 0) and its
    :meth:`prepare` downloads the slices a run is about to preprocess."""

    vo: VOArchive | None = field(default=None, compare=False)

    def list(self) -> list[ObjectInfo]:
        assert self.vo is not None
        return [ObjectInfo(item.key, 0) for item in self.vo.plan().items]

    def prepare(self, ranges: list[tuple[int, int]], progress: Any = None) -> "FetchReport":
        assert self.vo is not None
        report = self.vo.fetch(ranges, progress)
        if isinstance(self.store, FetchedArchive):
            self.store.forget()
        return report


def open_vo_source(spec: str, settings: Settings | None = None) -> VOSource | None:
    """The :class:`VOSource` for ``spec``, or None when ``spec`` is not a VO source."""
    parsed = recognise(spec, settings)
    if parsed is None:
        return None
    archive = VOArchive(parsed, settings or get_settings())
    return VOSource(FetchedArchive(archive), DEFAULT_PATTERNS, parsed.canonical(), vo=archive)


def vo_archive_store(source_url: str, settings: Settings | None = None) -> ObjectStore | None:
    """The folder of fetched files of a dataset whose ``index.source.url`` is a VO source
    string (never fetches anything); None for other sources."""
    parsed = parse_vo_spec(source_url)
    return VOArchive(parsed, settings or get_settings()).files(read_only=True) if parsed is not None else None
