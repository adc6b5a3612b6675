"""Downloading the items of a plan into the object store: bounded, retried, resumable, once each.

``fetch_items`` runs ``concurrency`` worker threads. Rows resolved through a DataLink service are
resolved in batches (one call for many identifiers), then every file is streamed to a temporary
file while its sha256 is computed, and put into the store atomically under its key. A failure
(after the retries of :mod:`oraculum.vo.transport`) is recorded with the URL, the HTTP status and
the reason, and never stops the other downloads.

Every outcome is a line of the run's report, ``_fetch/<digest>/report-<first>-<stop>.jsonl``
(the rows it covered), written every half minute and at the end. The reports are the memory of
the fetch: a later run (a retried pod, the same command again) skips every file a report says was
stored whose stored bytes still have the recorded sha256, and retries the failures.

Duplicates: two plan items with the same content (sha256) are stored once. Within one run the
item earlier in the plan keeps the file, whichever finished first; a file stored by an earlier
run or another shard is never displaced. The other item is recorded as a duplicate of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from oraculum.spectra.datasets import sha256_file
from oraculum.store import KeyNotFound, ObjectStore, StoreError
from oraculum.vo.datalink import LinkChooser, Product, ServiceDescriptor, resolve_document, resolve_ids
from oraculum.vo.plan import PlanItem
from oraculum.vo.policy import OutboundPolicy
from oraculum.vo.transport import Download, FetchError, HttpClient, RetryPolicy

log = logging.getLogger(__name__)

#: Seconds between report checkpoints during a long fetch.
CHECKPOINT_SECONDS = 30.0
#: Identifiers per DataLink call at most.
DATALINK_BATCH = 50

STORED = ("fetched", "present")


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch. ``band_m`` is the SODA cutout range in metres (None: no cutouts)."""

    concurrency: int = 8
    retries: int = 4
    timeout: float = 60.0
    backoff: float = 0.5
    datalink: str = "auto"
    band_m: tuple[float, float] | None = None
    datalink_batch: int = DATALINK_BATCH

    def policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, backoff=self.backoff, timeout=self.timeout)


@dataclass
class ItemRecord:
    """The outcome for one item: ``status`` is fetched, present (already stored, checksum
    verified), duplicate (same content as ``duplicate_of``) or failed (``reason``, ``http_status``)."""

    key: str
    row: int
    source: str
    status: str
    url: str | None = None
    product: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    http_status: int | None = None
    reason: str | None = None
    attempts: int = 0
    duplicate_of: str | None = None


@dataclass
class FetchReport:
    """All outcomes of one fetch run, and where its report lies in the store."""

    records: list[ItemRecord]
    report_key: str
    seconds: float
    requests: int = 0
    problems: list[dict[str, object]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.status == status)

    @property
    def failures(self) -> list[ItemRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def stored(self) -> int:
        return sum(1 for r in self.records if r.status in STORED)


def read_records(store: ObjectStore, state_prefix: str) -> dict[str, ItemRecord]:
    """Every recorded outcome under ``state_prefix`` (all runs, all shards), by key; a stored or
    duplicate outcome wins over a failure, a later report over an earlier one."""
    merged: dict[str, ItemRecord] = {}
    for info in store.list(f"{state_prefix}/report-"):
        try:
            lines = store.get_bytes(info.key).decode().splitlines()
        except KeyNotFound:
            continue
        for line in lines:
            if not line.strip():
                continue
            record = ItemRecord(**json.loads(line))
            old = merged.get(record.key)
            if old is None or record.status != "failed" or old.status == "failed":
                merged[record.key] = record
    return merged


def _stored_sha256(store: ObjectStore, key: str) -> str | None:
    """The sha256 of a stored file (read in place when the store is local), None when it is gone."""
    path = store.local_path(key)
    try:
        return sha256_file(path) if path is not None else hashlib.sha256(store.get_bytes(key)).hexdigest()
    except (KeyNotFound, FileNotFoundError):
        return None


def _same_content(sha: str, owner: str) -> str:
    """The reason recorded for a duplicate: which stored file has its content."""
    return f"same content (sha256 {sha[:12]}) as {owner}"


class _Owners:
    """Which item keeps each content (sha256): the earliest in the plan within this run; an
    owner from an earlier run keeps its file for good (row -1)."""

    def __init__(self, earlier: Iterable[ItemRecord]) -> None:
        self.lock = threading.Lock()
        self.owner: dict[str, tuple[int, str]] = {}
        for record in earlier:
            if record.status in STORED and record.sha256:
                self.owner.setdefault(record.sha256, (-1, record.key))

    def claim(self, sha: str, row: int, key: str) -> tuple[bool, tuple[int, str] | None]:
        """(True, the displaced owner or None) when ``row`` now keeps the content, else (False, owner)."""
        with self.lock:
            current = self.owner.get(sha)
            if current is None or current[1] == key or (current[0] >= 0 and row < current[0]):
                self.owner[sha] = (row, key)
                return True, current if current is not None and current[1] != key else None
            return False, current


class _Run:
    """One fetch: the workers' shared state and the report."""

    def __init__(self, store: ObjectStore, report_key: str, options: FetchOptions, earlier: dict[str, ItemRecord],
                 http: HttpClient, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.store = store
        self.report_key = report_key
        self.options = options
        self.earlier = earlier
        self.http = http
        self.total = total
        self.progress = progress
        self.owners = _Owners(earlier.values())
        self.records: dict[str, ItemRecord] = {}
        self.lock = self.owners.lock  # one lock: ownership and records change together
        self.chooser = LinkChooser(options.datalink, options.band_m) if options.datalink != "none" else None  # type: ignore[arg-type]

    # -- outcomes --------------------------------------------------------------------------------

    def record(self, record: ItemRecord) -> None:
        with self.lock:
            self.records[record.key] = record
            done = len(self.records)
        if self.progress:
            self.progress(done, self.total)

    def failed(self, item: PlanItem, error: FetchError) -> None:
        self.record(ItemRecord(item.key, item.row, item.label, "failed", error.url, http_status=error.status,
                               reason=error.reason, attempts=error.attempts))

    def write_report(self) -> None:
        with self.lock:
            lines = [json.dumps(asdict(r), sort_keys=True) for r in sorted(self.records.values(), key=lambda r: r.row)]
        self.store.put_bytes(self.report_key, ("\n".join(lines) + "\n" if lines else "").encode())

    # -- work ------------------------------------------------------------------------------------

    def already_done(self, item: PlanItem) -> bool:
        """Whether an earlier run stored this item (checksum verified) or found it a duplicate of a
        file that is still there; if so, its outcome is recorded again."""
        old = self.earlier.get(item.key)
        if old is None:
            return False
        if old.status in STORED and old.sha256 and _stored_sha256(self.store, item.key) == old.sha256:
            self.record(ItemRecord(**{**asdict(old), "status": "present", "row": item.row}))
            return True
        if old.status == "duplicate" and old.duplicate_of and self.store.exists(old.duplicate_of):
            self.record(ItemRecord(**{**asdict(old), "row": item.row}))
            return True
        return False

    def unit(self, items: list[PlanItem], descriptor: ServiceDescriptor | None) -> None:
        """Resolve (if needed) and download a few items; every outcome is recorded."""
        products: dict[str, Product | FetchError] = {}
        service_items = [i for i in items if i.via == "service"]
        if service_items and descriptor is not None and self.chooser is not None:
            ids = [str(i.ident) for i in service_items]
            try:
                resolved = resolve_ids(self.http, descriptor, ids, self.chooser)
            except Exception as error:  # noqa: BLE001 - a malformed answer fails these rows, not the run
                log.warning("DataLink answer for %d identifiers not usable", len(ids), exc_info=True)
                resolved = {i: FetchError(i, f"DataLink answer not usable ({type(error).__name__}; "
                                             "details in the log)") for i in ids}
            products.update({i.key: resolved[str(i.ident)] for i in service_items})
        for item in items:
            try:
                product = products.get(item.key) or self._product(item)
                if isinstance(product, FetchError):
                    raise product
                download = self.http.download(product.url, product.params)
            except FetchError as error:
                self.failed(item, error)
                continue
            except (StoreError, MemoryError):
                raise  # the store (or the machine) is down: stop, the pod is retried
            except Exception as error:  # noqa: BLE001 - e.g. a SODA descriptor pyvo cannot use
                # its words may quote a fetched answer: they go to the log, not to the report
                log.warning("%s: not fetched", item.label, exc_info=True)
                self.failed(item, FetchError(item.label, f"{type(error).__name__} (details in the log)"))
                continue
            self.store_download(item, download, product.kind)

    def _product(self, item: PlanItem) -> Product:
        if item.via == "document" and self.chooser is not None:
            return resolve_document(self.http, str(item.url), self.chooser)
        if item.url is None:
            raise FetchError(item.label, "nothing to download: no access reference and no DataLink service")
        return Product(item.url, None, "direct")

    def store_download(self, item: PlanItem, download: Download, product: str) -> None:
        base = dict(key=item.key, row=item.row, source=item.label, url=download.url, product=product,
                    sha256=download.sha256, bytes=download.size, attempts=download.attempts)
        try:
            won, displaced = self.owners.claim(download.sha256, item.row, item.key)
            if not won:
                assert displaced is not None
                self.record(ItemRecord(**base, status="duplicate", duplicate_of=displaced[1],
                                       reason=_same_content(download.sha256, displaced[1])))
                return
            self.store.put_file(item.key, download.path)
        finally:
            download.path.unlink(missing_ok=True)
        victims: list[str] = []
        with self.lock:
            owner = self.owners.owner[download.sha256]
            if owner[1] != item.key:  # an earlier row with the same content arrived while we wrote
                victims = [item.key]
                self.records[item.key] = ItemRecord(**base, status="duplicate", duplicate_of=owner[1],
                                                    reason=_same_content(download.sha256, owner[1]))
            else:
                self.records[item.key] = ItemRecord(**base, status="fetched")
                if displaced is not None:  # later rows with this content that finished first give way
                    victims = [k for k, r in self.records.items()
                               if r.sha256 == download.sha256 and r.status == "fetched" and k != item.key]
                    for key in victims:
                        self.records[key] = ItemRecord(**{**asdict(self.records[key]), "status": "duplicate",
                                                          "duplicate_of": item.key,
                                                          "reason": _same_content(download.sha256, item.key)})
            done = len(self.records)
        for key in victims:
            self.store.delete(key)
        if self.progress:
            self.progress(done, self.total)


def _units(items: list[PlanItem], options: FetchOptions) -> Iterator[list[PlanItem]]:
    """Work units: DataLink-service rows in batches (small enough that every worker gets some),
    every other row alone."""
    service = [i for i in items if i.via == "service"]
    size = max(1, min(options.datalink_batch, math.ceil(len(service) / max(1, options.concurrency))))
    for start in range(0, len(service), size):
        yield service[start:start + size]
    for item in items:
        if item.via != "service":
            yield [item]


def fetch_items(
    store: ObjectStore,
    items: list[PlanItem],
    report_key: str,
    options: FetchOptions,
    *,
    state_prefix: str,
    descriptor: ServiceDescriptor | None = None,
    progress: Callable[[int, int], None] | None = None,
    http: HttpClient | None = None,
    outbound: OutboundPolicy | None = None,
) -> FetchReport:
    """Fetch ``items`` into ``store`` (keys relative to it); the report goes to ``report_key``.

    Earlier reports under ``state_prefix`` make the run resumable (see the module docstring).
    Without ``http``, a client of its own obeys ``outbound`` (the environment's policy if None).
    """
    started = time.perf_counter()
    earlier = read_records(store, state_prefix)
    own_http = http is None
    http = http or HttpClient(options.policy(), options.concurrency, outbound=outbound)
    run = _Run(store, report_key, options, earlier, http, len(items), progress)
    last_checkpoint = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="oraculum-fetch") as pool:
            # a resumed run re-hashes what earlier runs stored: on the workers, not one thread
            resumed = [item for item in items if item.key in earlier]
            done = {item.key for item, ok in zip(resumed, pool.map(run.already_done, resumed)) if ok}
            todo = [item for item in items if item.key not in done]
            pending: set[Future[None]] = set()
            for unit in _units(todo, options):
                pending.add(pool.submit(run.unit, unit, descriptor))
                if len(pending) >= 2 * options.concurrency:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                    run.write_report()
                    last_checkpoint = time.monotonic()
            for future in pending:
                future.result()
    finally:
        run.write_report()
        if own_http:
            http.close()
    records = sorted(run.records.values(), key=lambda r: r.row)
    return FetchReport(records, report_key, time.perf_counter() - started, http.requests)


def report_lines(report: FetchReport, limit: int = 20) -> list[str]:
    """A short human summary: counts, then the first failures with URL, status and reason."""
    lines = [
        f"{report.count('fetched')} fetched, {report.count('present')} already present, "
        f"{report.count('duplicate')} duplicate(s), {report.count('failed')} failed "
        f"({report.requests} HTTP requests, {report.seconds:.1f} s); report: {report.report_key}"
    ]
    for record in report.failures[:limit]:
        lines.append(f"  failed {record.key}: {record.url or record.source}: {record.reason}")
    if len(report.failures) > limit:
        lines.append(f"  ... and {len(report.failures) - limit} more failures in the report")
    for problem in report.problems[:limit]:
        lines.append(f"  skipped row {problem.get('row')}: {problem.get('source')}: {problem.get('reason')}")
    return lines

