"""Uploading files and folder trees through the API: resumable, checksummed, with progress.

The client half of the API's upload sessions (``/api/v1/uploads``, see ``api/uploads.py``): for
each file, hash it (SHA-256), declare it, and the server answers what it already has: nothing
to send (the same content is there already: *exists* at this path, or a *duplicate* of another
path under the prefix), or the byte offset to continue from. Chunks go with their own
``Content-Digest``; the server verifies the whole file before it puts it in place. Since the
server derives the session from the declaration, running the same upload again after a crash, a
killed process or a lost connection sends only the missing bytes: the client keeps no state.

Folders are walked recursively (sorted, hidden files and folders skipped); a folder's files keep
their paths relative to it (``upload("dr2/", "lamost")`` puts ``dr2/a/b.fits`` at
``archive/lamost/a/b.fits``), a single file goes to ``archive/<prefix>/<its name>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oraculum.client.errors import ClientError
from oraculum.spectra.datasets import sha256_file

if TYPE_CHECKING:
    from oraculum.client.rest import Client

#: Retries of a request that could not reach the API or found it unavailable (502, 503, 504).
RETRIES = 4
#: How often the client follows the server's "continue from offset N" for one file before giving up.
MAX_RESYNC = 8
#: Called after each chunk the server accepted: (relative path, bytes the server holds, file size).
ChunkCallback = Callable[[str, int, int], None]


@dataclass
class UploadReport:
    """What an upload did. ``bytes_sent`` counts only the chunk bytes sent in this run (a resumed
    file sends only its rest); ``source`` is what to give ``oraculum preprocess``."""

    prefix: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    bytes_total: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    source: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        rate = self.bytes_sent / self.seconds / 1e6 if self.seconds > 0 else 0.0
        lines = [f"upload to archive/{self.prefix}: {len(self.uploaded)} uploaded"
                 + (f" ({len(self.resumed)} resumed)" if self.resumed else "")
                 + f", {len(self.skipped)} already there, {len(self.duplicates)} duplicates, {len(self.failed)} failed; "
                 f"{self.bytes_sent:,} of {self.bytes_total:,} bytes sent in {self.seconds:.1f} s ({rate:.1f} MB/s)"]
        lines += [f"  duplicate: {path} has the same content as {other}" for path, other in self.duplicates]
        lines += [f"  failed: {path}: {message}" for path, message in self.failed]
        if self.source and (self.uploaded or self.skipped or self.duplicates):
            lines.append(f"  preprocess with: oraculum preprocess {self.source} --dataset NAME")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "uploaded": self.uploaded, "skipped": self.skipped,
                "duplicates": [{"path": p, "duplicate_of": o} for p, o in self.duplicates],
                "failed": [{"path": p, "message": m} for p, m in self.failed], "resumed": self.resumed,
                "bytes_total": self.bytes_total, "bytes_sent": self.bytes_sent, "seconds": round(self.seconds, 3),
                "source": self.source}


def walk(items: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[Path | None, str, str | None]]:
    """(local file, path relative to the prefix, problem) for every file of ``items``: folders
    recursively in sorted order (following links, each real folder once), hidden names skipped;
    a missing path or a broken link is a problem, with no file."""
    for item in items:
        root = Path(item).expanduser()
        if root.is_file():
            yield root, root.name, None
        elif root.is_dir():
            seen: set[str] = set()
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:  # a link back up the tree
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        path = Path(dirpath) / name
                        relative = path.relative_to(root).as_posix()
                        if path.is_file():
                            yield path, relative, None
                        else:
                            yield None, relative, "not a readable file (a broken link?)"
        else:
            yield None, os.fspath(item), "no such file or folder"


def content_digest(data: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value of ``data``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode("ascii") + ":"


def _retrying(call: Callable[[], Any]) -> Any:
    """``call()``, again after a short pause when the API could not be reached or was unavailable
    (a restarting gateway, a store briefly away): the server keeps what it got."""

    for attempt in range(RETRIES + 1):
        try:
            return call()
        except ClientError as error:
            if attempt == RETRIES or error.status not in (0, 502, 503, 504):
                raise
            time.sleep(min(0.25 * 2**attempt, 4.0))
    raise AssertionError("unreachable")


class _Bar:
    """A tqdm bar of bytes on stderr (or nothing)."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description,
                            dynamic_ncols=True, file=sys.stderr)

    def advance(self, amount: int, name: str | None = None) -> None:
        if self.bar is not None:
            if name is not None:
                self.bar.set_postfix_str(name[-40:], refresh=False)
            self.bar.update(amount)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Stopped(Exception):
    """Another file's upload raised: this one stops at its next chunk."""


class _FileFailed(Exception):
    """This file cannot be uploaded (it changed while it was sent, ...); the others go on."""


class _Run:
    """What the files of one run share across threads: the report, the bar, the stop flag."""

    def __init__(self, report: UploadReport, bar: _Bar, on_chunk: ChunkCallback | None) -> None:
        self.report = report
        self.bar = bar
        self.on_chunk = on_chunk
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def add(self, kind: str, item: Any) -> None:
        with self.lock:
            getattr(self.report, kind).append(item)

    def sent(self, amount: int) -> None:
        with self.lock:
            self.report.bytes_sent += amount

    def advance(self, amount: int, name: str) -> None:
        with self.lock:
            self.bar.advance(amount, name)

    def finish(self, relative: str, answer: dict[str, Any], remaining: int) -> None:
        """Report a file the server holds whole (``answer``: the server's ``exists``, ``duplicate``
        or ``complete``) and move the bar over its ``remaining`` bytes."""
        if answer["status"] == "duplicate":
            self.add("duplicates", (relative, answer["duplicate_of"]))
        else:
            self.add("skipped" if answer["status"] == "exists" else "uploaded", relative)
        self.advance(remaining, relative)

    def chunk_done(self, relative: str, received: int, size: int) -> None:
        if self.on_chunk is not None:
            with self.lock:
                self.on_chunk(relative, received, size)
        if self.stop.is_set():
            raise _Stopped


def upload_files(client: "Client", items: Sequence[str | os.PathLike[str]], prefix: str, progress: bool = True,
                 chunk_size: int | None = None, on_chunk: ChunkCallback | None = None,
                 parallel: int = 4) -> UploadReport:
    """Upload every file of ``items`` into ``archive/<prefix>/`` (see the module docstring),
    ``parallel`` files at a time (a tree of small spectra is bound by round trips, not bytes).

    A file that fails (a name the server refuses, a changed file) is reported and the others go
    on; an API that cannot be reached or refuses the token raises :class:`ClientError`, and an
    exception from ``on_chunk`` stops everything, as an interrupted process would (files in
    flight stop at their next chunk; the server keeps what it got)."""
    started = time.perf_counter()
    report = UploadReport(prefix=prefix.rstrip("/"))
    files = list(walk(items))
    report.bytes_total = sum(path.stat().st_size for path, _, problem in files if path is not None and problem is None)
    run = _Run(report, _Bar(progress, report.bytes_total, f"upload {report.prefix}"), on_chunk)
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="oraculum-upload") as pool:
            futures = []
            for path, relative, problem in files:
                if path is None or problem is not None:
                    report.failed.append((relative, problem or "unreadable"))
                else:
                    futures.append(pool.submit(_upload_guarded, client, run, path, relative, chunk_size))
            try:
                for future in futures:
                    future.result()
            except BaseException:
                run.stop.set()
                for future in futures:
                    future.cancel()
                raise
    finally:
        run.bar.close()
        report.seconds = time.perf_counter() - started
        order = {relative: number for number, (_, relative, _) in enumerate(files)}
        for kind in ("uploaded", "skipped", "resumed", "duplicates", "failed"):
            getattr(report, kind).sort(key=lambda item: order.get(item if isinstance(item, str) else item[0], 0))
    return report


def _upload_guarded(client: "Client", run: _Run, path: Path, relative: str, chunk_size: int | None) -> None:
    """One file; its own failures go into the report, those that end the run are raised."""

    if run.stop.is_set():
        return
    try:
        _upload_one(client, run, path, relative, chunk_size)
    except ClientError as error:
        if error.status in (0, 401, 403):  # no file can get through: stop, say why
            raise
        run.add("failed", (relative, error.message))
    except _FileFailed as error:
        run.add("failed", (relative, str(error)))
    except _Stopped:
        pass
    except OSError as error:
        run.add("failed", (relative, f"cannot read {path}: {error.strerror or error}"))


def _upload_one(client: "Client", run: _Run, path: Path, relative: str, chunk_size: int | None) -> None:

    size = path.stat().st_size
    declaration = {"prefix": run.report.prefix, "path": relative, "size": size, "sha256": sha256_file(path),
                   "chunk_size": chunk_size}
    session = _retrying(lambda: client.request("POST", "/uploads", json=declaration).json())
    run.report.source = session["source"]
    if session["status"] in ("exists", "duplicate"):
        run.finish(relative, session, size)
        return
    upload_id, offset = session["id"], int(session["received"])
    step = int(session["chunk_size"])  # fixed by the server when the upload started
    if offset:
        run.add("resumed", relative)
        run.advance(offset, relative)
    shown, resyncs = offset, 0

    def resync(error: ClientError) -> int:
        nonlocal resyncs
        resyncs += 1
        if resyncs > MAX_RESYNC:
            raise _FileFailed(f"the server kept asking to resend it: gave up after {MAX_RESYNC} attempts")
        return _resume_offset(error)

    with open(path, "rb") as handle:
        while True:
            while offset < size:
                handle.seek(offset)
                data = handle.read(step)
                if not data:
                    raise _FileFailed(f"{path} is shorter than when it was hashed ({size} bytes): it changed")
                try:
                    answer = _retrying(lambda data=data, offset=offset: client.request(
                        "PUT", f"/uploads/{upload_id}/chunks", params={"offset": offset}, content=data,
                        headers={"Content-Digest": content_digest(data),
                                 "Content-Type": "application/octet-stream"}).json())
                except ClientError as error:
                    offset = resync(error)
                    continue
                run.sent(len(data))
                offset = int(answer["received"])
                run.advance(max(0, offset - shown), relative)
                shown = max(shown, offset)
                run.chunk_done(relative, offset, size)
            try:
                done = _retrying(lambda: client.request("POST", f"/uploads/{upload_id}/complete").json())
            except ClientError as error:
                offset = resync(error)
                continue
            run.finish(relative, done, max(0, size - shown))
            return


def _resume_offset(error: Any) -> int:
    """The offset a 409 tells to continue from; any other refusal ends this file."""
    if error.status == 409 and isinstance(error.detail, dict) and isinstance(error.detail.get("received"), int):
        return int(error.detail["received"])
    raise error
