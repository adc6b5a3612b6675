"""Resumable, checksummed uploads of archive files into the object store (no web code here).

Why this shape: raw archive files (FITS, a few hundred kB to tens of MB each, sometimes whole
trees of them) have to reach the store through the gateway, in request bodies bounded by the
API's size limit, over connections that drop. So a file travels as chunks, each checked against
its own SHA-256 on arrival, and each kept *in the store* (not in memory): an API restart, another
replica or a client started again the next day continues where the bytes stop.

Store layout::

    uploads/sessions/<id>.json          an upload in progress: declaration, bytes received, who
    uploads/parts/<id>/<nonce>/<n:08d>  chunk ``n``: bytes n*chunk .. (n+1)*chunk (the nonce is new
                                        for each session of that id: an abort's cleanup never
                                        touches the parts of the session declared after it)
    uploads/complete/<id>.json          a finished upload (an audit record: who, when, key)
    uploads/checksums/<p>/<sha256>.json which path under prefix <p> (digest of the prefix) holds
                                        a file with this content: duplicate detection
    archive/<prefix>/<path>             the uploaded file itself, written atomically when complete

The session id is a digest of (prefix, path, size, sha256): declaring the same file again finds
the same session, so a client needs no state of its own to resume. The chunk size is fixed when
the session starts, so part ``n`` always holds the same bytes: the session document stays a few
hundred bytes however large the file, and two writers of one part write the same content.
Completion re-reads the parts, verifies the whole file's size and SHA-256, and only then puts it
in place with one atomic write; a mismatch stores nothing and discards the parts.

Duplicates: a file whose content is already registered under the prefix (uploaded before, under
any path) is not stored again. Files put under ``archive/<prefix>/`` by other means are only
noticed when a new upload has the same path (they are then hashed once and registered).

Limits: a declaration is refused (422 naming the setting) beyond ``ORACULUM_API_UPLOAD_MAX_BYTES``
or beyond ``ORACULUM_API_UPLOAD_MAX_CHUNKS`` chunks. Discarding an upload (abort, completion,
expiry) lists the parts that exist and deletes them in batches (S3 DeleteObjects): its cost
follows what was uploaded, never the declared size. An abort only marks the session under the
lock and hands back the deletion, which the API runs on a pool of its own with a deadline
(:mod:`oraculum.api.routers.uploads`); :meth:`Uploads.expire` discards what has been idle for too
long, finishes aborts a restart interrupted, and removes parts no session owns.

Concurrency: one process serialises the calls of one session with a lock; across replicas the
last writer of the session document wins, and completion checks that every part is there with
its size, so a lost race costs a resend (409 with the offset to continue from), never a corrupt
file (the whole file's SHA-256 is checked before anything is stored).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from oraculum.spectra.datasets import sha256_file
from oraculum.store import KeyNotFound, LocalStore, ObjectStore, StoreError

#: Largest file accepted (1 TiB): far beyond any spectrum, small enough to bound offsets.
MAX_FILE_BYTES = 2**40
#: Largest chunk, whatever the body limit (a chunk is held in memory while it is checked).
MAX_CHUNK_BYTES = 16 * 1024 * 1024
#: Smallest chunk a session may ask for (each chunk is one request and one stored object).
MIN_CHUNK_BYTES = 1024
MAX_PATH_LENGTH = 1024
MAX_PREFIX_LENGTH = 256
MAX_DEPTH = 32

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ID_PATTERN = r"^[0-9a-f]{32}$"
SAFE_NAMES = "letters, digits and . _ + - (a name may not start with '.', '+' or '-'), separated by '/'"


class UploadError(Exception):
    """An upload request the caller can fix; ``status`` is the HTTP status to answer with and
    ``extra`` what a client needs to continue (e.g. ``received``: the offset to resume from)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def check_relative(value: str, what: str, max_length: int) -> str:
    """A relative ``/``-separated name of safe segments; ValueError naming the value and why.

    Safe means: usable as an object key and as a file name on every platform, never a path out
    of the prefix (no ``..``, no absolute path, no backslash or drive letter), never a hidden or
    temporary file of the local store (no leading ``.``)."""
    if not value:
        raise ValueError(f"{what} is empty: give a relative path like 'dr2/B5591903/spec-1.fits'")
    if len(value) > max_length:
        raise ValueError(f"{what} {value[:80]!r}... is {len(value)} characters long: at most {max_length}")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} {value!r} is absolute: give a path relative to the upload prefix")
    segments = value.split("/")
    if len(segments) > MAX_DEPTH:
        raise ValueError(f"{what} {value!r} has {len(segments)} levels: at most {MAX_DEPTH}")
    for segment in segments:
        if segment in ("", ".", ".."):
            shown = repr(segment) if segment else "an empty name (// or a / at the end)"
            raise ValueError(f"{what} {value!r} contains {shown}: use {SAFE_NAMES}")
        if not _SEGMENT.match(segment):
            raise ValueError(f"{what} {value!r}: the name {segment!r} is not allowed: use {SAFE_NAMES}")
    return value


def check_path(path: str) -> str:
    return check_relative(path, "path", MAX_PATH_LENGTH)


def check_prefix(prefix: str) -> str:
    return check_relative(prefix.rstrip("/") or prefix, "prefix", MAX_PREFIX_LENGTH)


def check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(f"sha256 {value[:80]!r} is not 64 lowercase hexadecimal digits")
    return value


def session_id(prefix: str, path: str, size: int, sha256: str) -> str:
    """The same declaration always names the same session (resuming needs no client state)."""
    return hashlib.sha256(f"{prefix}\n{path}\n{size}\n{sha256}".encode()).hexdigest()[:32]


def archive_key(prefix: str, path: str) -> str:
    return f"archive/{prefix}/{path}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Session:
    """The stored document of one upload (``uploads/sessions/<id>.json``): constant size."""

    id: str
    prefix: str
    path: str
    size: int
    sha256: str
    chunk: int
    who: str
    created: str
    updated: str
    received: int = 0
    state: str = "uploading"  # uploading | complete | aborted (its parts are being deleted)
    nonce: str = ""  # names this session's parts folder ("": parts straight under the id, older sessions)

    @property
    def key(self) -> str:
        return archive_key(self.prefix, self.path)

    @property
    def parts(self) -> int:
        """Number of chunks the whole file takes."""
        return -(-self.size // self.chunk)

    @property
    def parts_prefix(self) -> str:
        """Where the parts of this session (and only they) are stored."""
        return f"uploads/parts/{self.id}/{self.nonce}/" if self.nonce else f"uploads/parts/{self.id}/"

    def part_key(self, number: int) -> str:
        return f"{self.parts_prefix}{number:08d}"

    def part_length(self, number: int) -> int:
        return min(self.chunk, self.size - number * self.chunk)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Session":
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Outcome:
    """What a call did with an upload: its session and what the caller should know of it.

    ``status``: ``uploading`` (send chunks from ``session.received``), ``complete`` (stored),
    ``exists`` (the same content is already at this path) or ``duplicate`` (the same content is
    already under the prefix at ``duplicate_of``); ``created`` is true for a new session."""

    session: Session
    status: str
    duplicate_of: str | None = None
    created: bool = False


class Uploads:
    """Upload sessions in an object store; every method blocks (run it on an I/O thread).

    ``chunk_size`` is the largest chunk accepted (the API's body limit); a session may ask for
    smaller chunks (at least :data:`MIN_CHUNK_BYTES`)."""

    def __init__(self, store: ObjectStore, chunk_size: int, tmp_dir: str | None = None, *,
                 max_bytes: int = MAX_FILE_BYTES, max_chunks: int | None = None) -> None:
        self.store = store
        self.chunk_size = max(MIN_CHUNK_BYTES, min(int(chunk_size), MAX_CHUNK_BYTES))
        self.tmp_dir = tmp_dir
        self.max_bytes = min(int(max_bytes), MAX_FILE_BYTES)
        self.max_chunks = max_chunks
        # striped locks: bounded memory however many files pass through one process
        self._locks = [threading.Lock() for _ in range(64)]

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _session_key(upload_id: str) -> str:
        return f"uploads/sessions/{upload_id}.json"

    @staticmethod
    def _complete_key(upload_id: str) -> str:
        return f"uploads/complete/{upload_id}.json"

    @staticmethod
    def _checksum_key(prefix: str, sha256: str) -> str:
        return f"uploads/checksums/{hashlib.sha256(prefix.encode()).hexdigest()[:32]}/{sha256}.json"

    def source(self, prefix: str) -> str:
        """What to give ``oraculum preprocess`` to read the files under ``archive/<prefix>``."""
        return f"{self.store.url.rstrip('/')}/archive/{prefix}"

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, upload_id: str) -> Iterator[None]:
        with self._locks[int(upload_id[:8], 16) % len(self._locks)]:
            yield

    def _scratch(self) -> tempfile.TemporaryDirectory[str]:
        """A temporary folder for assembling or hashing a file (in ``ORACULUM_CACHE_DIR`` if set)."""
        if self.tmp_dir:
            os.makedirs(self.tmp_dir, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="oraculum-upload-", dir=self.tmp_dir)

    def _load(self, key: str) -> Session | None:
        """The session document under ``key``; None when there is none or it is unreadable (a
        damaged document is replaced when the file is declared again, not answered with a 500)."""
        try:
            return Session.from_json(self.store.get_bytes(key))
        except (KeyNotFound, ValueError, TypeError):
            return None

    def _session(self, upload_id: str) -> Session:
        session = self._load(self._session_key(upload_id))
        if session is None or session.state == "aborted":
            done = self._load(self._complete_key(upload_id))
            if done is not None:
                return done
            raise UploadError(404, f"no upload {upload_id}: start one with POST /uploads (it may have been aborted)")
        return session

    def _save(self, session: Session) -> None:
        session.updated = _now()
        self.store.put_bytes(self._session_key(session.id), session.to_json())

    def _registered(self, prefix: str, sha256: str) -> str | None:
        """The path under ``prefix`` registered with this content, if its file is still there."""
        key = self._checksum_key(prefix, sha256)
        try:
            path = str(json.loads(self.store.get_bytes(key))["path"])
        except KeyNotFound:
            return None
        if self.store.exists(archive_key(prefix, path)):
            return path
        self.store.delete(key)  # the file was deleted since: forget it
        return None

    def _register(self, prefix: str, path: str, sha256: str, size: int | None, who: str) -> None:
        record = {"path": path, "size": size, "sha256": sha256, "who": who, "when": _now()}
        self.store.put_bytes(self._checksum_key(prefix, sha256), json.dumps(record).encode())

    def _sha256_of(self, key: str) -> str:
        local = self.store.local_path(key)
        if local is not None:
            return sha256_file(local)
        with self._scratch() as folder:
            target = Path(folder) / "object"
            self.store.get_file(key, target)
            return sha256_file(target)

    def _already_there(self, prefix: str, path: str, sha256: str) -> tuple[str, str | None] | None:
        """("exists", None) or ("duplicate", other path) when the content need not be stored;
        None when it must be; 409 when the path holds different content."""
        registered = self._registered(prefix, sha256)
        if registered is not None:
            return ("exists", None) if registered == path else ("duplicate", registered)
        key = archive_key(prefix, path)
        if not self.store.exists(key):
            return None
        existing = self._sha256_of(key)
        if self._registered(prefix, existing) is None:
            self._register(prefix, path, existing, None, "found in the store")
        if existing == sha256:
            return ("exists", None)
        raise UploadError(409, f"{key} exists with different content (sha256 {existing[:16]}..., yours "
                               f"{sha256[:16]}...): upload under another path, or delete it first", key=key)

    # -- the operations -----------------------------------------------------------------------

    def begin(self, prefix: str, path: str, size: int, sha256: str, who: str, chunk: int | None = None) -> Outcome:
        """Declare a file; answers what the server already has of it (see :class:`Outcome`).
        ``chunk`` asks for smaller chunks than the server's largest (a new session only)."""
        prefix, path = check_prefix(prefix), check_path(path)
        check_sha256(sha256)
        if size < 0:
            raise UploadError(422, f"size of {path} must be 0 or more bytes, not {size}")
        if size > self.max_bytes:
            raise UploadError(422, f"{path}: {size} bytes is more than the {self.max_bytes} bytes one upload may "
                                   "declare here (ORACULUM_API_UPLOAD_MAX_BYTES)")
        upload_id = session_id(prefix, path, size, sha256)
        with self._locked(upload_id):
            session = self._load(self._session_key(upload_id))
            if session is not None and session.state == "aborted":
                session = None  # its cleanup runs on; a new session gets parts of its own
            there = self._already_there(prefix, path, sha256)
            now = _now()
            fresh = Session(upload_id, prefix, path, size, sha256, max(MIN_CHUNK_BYTES, min(chunk or self.chunk_size,
                                                                                          self.chunk_size)), who, now, now,
                            nonce=secrets.token_hex(8))
            if there is not None:
                if session is not None:  # stored meanwhile by other means: the parts are not needed
                    self._discard(session)
                return Outcome(self._load(self._complete_key(upload_id)) or session or fresh, there[0], there[1])
            if session is not None:
                return Outcome(session, "uploading")
            self._check_chunks(fresh)
            self._save(fresh)
            return Outcome(fresh, "uploading", created=True)

    def get(self, upload_id: str) -> Outcome:
        session = self._session(upload_id)
        return Outcome(session, "complete" if session.state == "complete" else "uploading")

    def put_chunk(self, upload_id: str, offset: int, data: bytes, sha256: str) -> Outcome:
        """Store bytes ``offset .. offset+len(data)`` of the file, if ``sha256`` is theirs."""
        with self._locked(upload_id):
            session = self._session(upload_id)
            if session.state == "complete":
                raise UploadError(409, f"the upload of {session.path} is complete already", received=session.size)
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256:
                raise UploadError(422, f"chunk at offset {offset} of {session.path}: its sha-256 is {actual}, but "
                                       f"Content-Digest says {sha256}: nothing stored; send the chunk again")
            if offset != session.received:
                raise UploadError(409, f"{session.path}: the server has {session.received} bytes, so the next chunk "
                                       f"starts at offset {session.received}, not {offset}", received=session.received)
            if offset >= session.size:
                raise UploadError(422, f"{session.path}: all {session.size} bytes are there: complete the upload")
            number = offset // session.chunk
            expected = session.part_length(number)
            if len(data) != expected:
                raise UploadError(422, f"chunk at offset {offset} of {session.path} has {len(data)} bytes: this upload "
                                       f"takes chunks of {session.chunk} bytes, so this one must have {expected}")
            self.store.put_bytes(session.part_key(number), data)
            session.received = offset + len(data)
            self._save(session)
            return Outcome(session, "uploading")

    def complete(self, upload_id: str) -> Outcome:
        """Verify the whole file and put it in place atomically (idempotent once complete)."""
        with self._locked(upload_id):
            session = self._session(upload_id)
            if session.state == "complete":
                return Outcome(session, "complete")
            if session.received < session.size:
                raise UploadError(409, f"{session.path}: the server has {session.received} of {session.size} bytes: "
                                       f"send the rest from offset {session.received}", received=session.received)
            there = self._already_there(session.prefix, session.path, session.sha256)
            if there is not None:  # stored meanwhile (another client, another path)
                self._discard(session)
                return Outcome(session, there[0], there[1])
            self._put_in_place(session)
            self._register(session.prefix, session.path, session.sha256, session.size, session.who)
            session.state = "complete"
            session.updated = _now()
            self.store.put_bytes(self._complete_key(upload_id), session.to_json())
            self._discard(session)
            return Outcome(session, "complete")

    def abort(self, upload_id: str) -> Callable[[], int]:
        """Forget an upload in progress (a finished file stays): marks it aborted, at once, and
        returns the deletion of its parts (a call that returns how many it deleted; its cost
        follows what was uploaded) for the caller to run where it likes."""
        with self._locked(upload_id):
            session = self._session(upload_id)
            if session.state == "complete":
                raise UploadError(409, f"the upload of {session.path} is complete: delete the file, not the upload")
            session.state = "aborted"
            self._save(session)
        return lambda: self._finish_abort(session)

    def _finish_abort(self, session: Session) -> int:
        """Delete an aborted session's parts, then its document (unless a new session of the same
        file has replaced it meanwhile)."""
        deleted = self._drop_parts(session.id, session.parts_prefix)
        with self._locked(session.id):
            current = self._load(self._session_key(session.id))
            if current is not None and current.state == "aborted" and current.nonce == session.nonce:
                self.store.delete(self._session_key(session.id))
        return deleted

    def expire(self, max_age: float) -> dict[str, int]:
        """Discard uploads idle for more than ``max_age`` seconds, finish aborts a restart cut
        short, and delete parts that no session owns; returns what it did (counts)."""
        done = {"expired": 0, "aborted": 0, "orphaned": 0}
        now = datetime.now(timezone.utc)
        owned: set[str] = set()
        for info in list(self.store.list("uploads/sessions/")):
            session = self._load(info.key)
            if session is None:
                continue
            try:
                idle = (now - datetime.fromisoformat(session.updated)).total_seconds()
            except (TypeError, ValueError):
                idle = max_age + 1
            if session.state == "aborted" or (session.state == "uploading" and idle > max_age):
                if session.state == "uploading":
                    with self._locked(session.id):
                        again = self._load(info.key)
                        if again is None or again.nonce != session.nonce or again.updated != session.updated:
                            continue  # in use after all
                        session.state = "aborted"
                        self._save(session)
                    done["expired"] += 1
                else:
                    done["aborted"] += 1
                self._finish_abort(session)
            else:
                owned.add(session.parts_prefix)
        orphans: set[str] = set()
        for info in self.store.list("uploads/parts/"):
            folder = info.key.rsplit("/", 1)[0] + "/"
            if folder not in owned:
                orphans.add(folder)
        for folder in orphans:
            upload_id = folder.split("/")[2]
            if not re.match(ID_PATTERN, upload_id):
                continue  # not ours
            with self._locked(upload_id):
                current = self._load(self._session_key(upload_id))
                if current is not None and current.state != "aborted" and folder.startswith(current.parts_prefix):
                    continue  # declared since the listing
            done["orphaned"] += self._drop_parts(upload_id, folder)
        return done

    def in_progress(self, prefix: str | None = None) -> list[Session]:
        """Unfinished uploads (optionally under one prefix), most recently active first."""
        sessions = []
        for info in self.store.list("uploads/sessions/"):
            session = self._load(info.key)
            if session is not None and session.state != "aborted" and (prefix is None or session.prefix == prefix):
                sessions.append(session)
        return sorted(sessions, key=lambda s: s.updated, reverse=True)

    # -- helpers ------------------------------------------------------------------------------

    def _check_chunks(self, session: Session) -> None:
        """422 naming ORACULUM_API_UPLOAD_MAX_CHUNKS when a new session would take more chunks."""
        if self.max_chunks is None or session.parts <= self.max_chunks:
            return
        smallest = -(-session.size // self.max_chunks)
        hint = (f"use chunks of at least {smallest} bytes" if smallest <= self.chunk_size else
                f"this server takes chunks of at most {self.chunk_size} bytes, so at most "
                f"{self.chunk_size * self.max_chunks} bytes in one upload")
        raise UploadError(422, f"{session.path}: {session.size} bytes in chunks of {session.chunk} bytes are "
                               f"{session.parts} chunks, more than the {self.max_chunks} one upload may take here "
                               f"(ORACULUM_API_UPLOAD_MAX_CHUNKS): {hint}")

    def _discard(self, session: Session) -> None:
        """Delete the parts that exist (listed, deleted in batches: a rewound session may have
        left some beyond ``received``, and none were sent past it) and the session document."""
        self._drop_parts(session.id, session.parts_prefix)
        self.store.delete(self._session_key(session.id))

    def _drop_parts(self, upload_id: str, prefix: str) -> int:
        """Delete the parts under ``prefix`` (those that exist, in batches); returns how many."""
        deleted = self.store.delete_prefix(prefix)
        if isinstance(self.store, LocalStore):  # S3 has no folders; a local store would keep one per file
            with contextlib.suppress(OSError):
                (self.store.root / "uploads" / "parts" / upload_id).rmdir()
        return deleted

    def _put_in_place(self, session: Session) -> None:
        """Assemble the parts, verify the whole file, write it atomically. On a local store the
        file is assembled beside its target (a name the store's listings skip) and renamed into
        place: the bytes are written once, not twice."""
        try:
            if isinstance(self.store, LocalStore):
                target = self.store.root.joinpath(*session.key.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                os.close(fd)
                try:
                    self._verified(session, Path(name))
                    os.replace(name, target)
                finally:
                    Path(name).unlink(missing_ok=True)
            else:
                with self._scratch() as folder:
                    assembled = Path(folder) / "file"
                    self._verified(session, assembled)
                    self.store.put_file(session.key, assembled)
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as error:
            raise UploadError(409, f"cannot store {session.key}: {error.strerror or error}: a file and a folder "
                                   "cannot have the same name") from None
        except OSError as error:
            raise StoreError(f"writing {session.key}: {error}") from error

    def _verified(self, session: Session, target: Path) -> None:
        digest = self._assemble(session, target)
        if digest != session.sha256:
            self._discard(session)
            raise UploadError(422, f"{session.path}: the {session.size} bytes received have sha256 {digest}, not the "
                                   f"declared {session.sha256}: nothing stored; upload the file again (did it change "
                                   "while it was sent?)")

    def _assemble(self, session: Session, target: Path) -> str:
        """Concatenate the parts into ``target``; returns its SHA-256. A part that is missing or
        of the wrong size (a lost race between replicas, a damaged store) rewinds the session to
        it, and the caller hears where to resume."""
        digest = hashlib.sha256()
        with open(target, "wb") as handle:
            for number in range(session.parts):
                try:
                    data = self.store.get_bytes(session.part_key(number))
                except KeyNotFound:
                    data = b""
                if len(data) != session.part_length(number):
                    session.received = number * session.chunk
                    self._save(session)
                    raise UploadError(409, f"{session.path}: the part at offset {session.received} is missing or "
                                           f"damaged in the store: send the rest from offset {session.received}",
                                      received=session.received)
                handle.write(data)
                digest.update(data)
            handle.flush()
            os.fsync(handle.fileno())
        return digest.hexdigest()
