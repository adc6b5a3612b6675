"""The object store: the durable truth of oraculum (datasets, models, labels).

Two backends behind one small interface, chosen by URL:

* a local folder (``./oraculum-data`` or ``file:///abs/path``), the embedded default;
* S3 or MinIO (``s3://bucket[/prefix]``) through the ``minio`` client, with the endpoint and
  credentials from :class:`oraculum.settings.Settings`.

Keys are ``/``-separated paths relative to the store's root, the same for both backends, so a
dataset written to one can be copied key by key to the other. Writes are atomic on both: a
reader never sees half an object (the local backend writes a temporary file and renames it).
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from oraculum.settings import Settings, get_settings


class StoreError(Exception):
    """The store could not be reached or refused an operation; the message says which."""


class KeyNotFound(StoreError, KeyError):
    """No object under this key."""

    def __str__(self) -> str:  # KeyError's repr-quoting makes messages hard to read
        return str(self.args[0]) if self.args else "key not found"


def unreachable_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean "the store could not be read", whichever backend raised them:
    :class:`StoreError`, :class:`OSError` (a local folder, a refused or reset connection) and the S3
    client's own transport and server errors (urllib3's connection, timeout and retry errors,
    minio's S3Error, ServerError and InvalidResponseError), which it raises as they are."""
    found: list[type[Exception]] = [StoreError, OSError]
    try:
        from urllib3.exceptions import HTTPError as TransportError

        found.append(TransportError)
    except ImportError:  # pragma: no cover - urllib3 comes with minio
        pass
    try:
        from minio.error import MinioException

        found.append(MinioException)
    except ImportError:  # pragma: no cover - the embedded default needs no minio
        pass
    return tuple(found)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key relative to the store root and its size in bytes."""

    key: str
    size: int


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}: use a relative path like 'datasets/x/index.json'")
    return key


class ObjectStore(abc.ABC):
    """A flat namespace of immutable-by-convention objects addressed by ``/``-separated keys."""

    url: str

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object. Raises :class:`KeyNotFound`."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write (or replace) an object atomically."""

    @abc.abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Copy an object to a local file. Raises :class:`KeyNotFound`."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Upload a local file as an object, atomically."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, recursively, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove these objects (missing ones are no error); returns how many keys were given.
        S3 removes them with DeleteObjects, up to 1000 a request."""
        count = 0
        for key in keys:
            self.delete(key)
            count += 1
        return count

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix``: what exists is listed and
        removed in batches, so the cost follows what is there. Returns how many were removed."""
        if not prefix:
            raise ValueError("delete_prefix needs a prefix: it does not empty the whole store")
        return self.delete_many(info.key for info in self.list(prefix))

    def local_path(self, key: str) -> Path | None:
        """A local file that holds the object, when the backend has one (zero-copy reads)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class LocalStore(ObjectStore):
    """Objects as files under a root folder; the embedded default."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(f"no object {key!r} in {self.url}") from None

    def _atomic_target(self, key: str) -> tuple[Path, Path]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        return path, Path(tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        path, tmp = self._atomic_target(key)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        Path(path).write_bytes(self.get_bytes(key))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        target, tmp = self._atomic_target(key)
        try:
            with open(path, "rb") as source, open(tmp, "wb") as handle:
                while chunk := source.read(1 << 20):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        found: list[ObjectInfo] = []
        # walk only the folder the prefix names (a listing costs what is below it, not the store)
        folders = prefix.split("/")[:-1]
        start = self.root.joinpath(*folders) if folders and all(f not in ("", ".", "..") for f in folders) else self.root
        for dirpath, dirnames, filenames in os.walk(start, followlinks=True):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an atomic write in progress
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, os.stat(os.path.join(dirpath, name)).st_size))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        count = super().delete_prefix(prefix)
        if prefix.endswith("/"):  # the prefix's folder and those below it, when left empty (S3 has none)
            folder = self._path(prefix.rstrip("/"))
            below = sorted(folder.rglob("*"), key=lambda path: len(path.parts), reverse=True) if folder.is_dir() else []
            for path in [*below, folder]:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return count


def _http_pool(connections: int = 64, timeout: float = 300.0, retries: int = 5) -> object:
    """minio's default HTTP pool, but keeping up to ``connections`` connections per host: a
    server (the API gateway) calls the store from many threads at once, and minio's default of
    10 would open and drop a connection for each request beyond that. ``timeout`` (connect and
    read, seconds) and ``retries`` come from the settings (``s3_timeout``, ``s3_retries``)."""
    import certifi
    import urllib3
    from urllib3.util import Retry, Timeout

    return urllib3.PoolManager(
        timeout=Timeout(connect=timeout, read=timeout), maxsize=connections,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class S3Store(ObjectStore):
    """Objects in an S3 or MinIO bucket, optionally below a key prefix."""

    def __init__(self, bucket: str, prefix: str = "", settings: Settings | None = None) -> None:
        from minio import Minio  # imported here: the embedded default never needs it

        settings = settings or get_settings()
        if not settings.s3_endpoint:
            raise StoreError(
                f"store s3://{bucket}/{prefix} needs an endpoint: set ORACULUM_S3_ENDPOINT "
                "(e.g. http://minio:9000) or pass --s3-endpoint"
            )
        endpoint = urlparse(settings.s3_endpoint)
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
            raise StoreError(
                f"ORACULUM_S3_ENDPOINT={settings.s3_endpoint!r} is not a URL like http://host:9000"
            )
        access_key = settings.s3_access_key or os.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = settings.s3_secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        self.client = Minio(
            endpoint.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=endpoint.scheme == "https",
            region=settings.s3_region,
            http_client=_http_pool(timeout=settings.s3_timeout, retries=settings.s3_retries),
        )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._bucket_checked = False

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as error:  # minio raises several unrelated types
            raise StoreError(f"cannot create or reach bucket {self.bucket!r}: {error}") from error
        self._bucket_checked = True

    @staticmethod
    def _is_missing(error: Exception) -> bool:
        return getattr(error, "code", None) in ("NoSuchKey", "NoSuchBucket", "NoSuchObject")

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._name(key))
        except S3Error as error:
            if self._is_missing(error):
                raise KeyNotFound(f"no object {key!r} in {self.url}") from None
            raise StoreError(f"reading {key!r} from {self.url}: {error}") from error
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def put_bytes(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        self.client.put_object(self.bucket, self._name(key), io.BytesIO(data), len(data))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        from minio.error import S3Error

        try:
            self.client.fget_object(self.bucket, self._name(key), os.fspath(path))
        except S3Error as error:
            if self._is_missing(error):
                raise KeyNotFound(f"no object {key!r} in {self.url}") from None
            raise StoreError(f"reading {key!r} from {self.url}: {error}") from error

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        self._ensure_bucket()
        self.client.fput_object(self.bucket, self._name(key), os.fspath(path))

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._name(key))
        except S3Error as error:
            if self._is_missing(error) or getattr(error, "code", None) == "NoSuchKey":
                return False
            raise StoreError(f"checking {key!r} in {self.url}: {error}") from error
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from minio.error import S3Error

        base = f"{self.prefix}/" if self.prefix else ""
        try:
            objects = self.client.list_objects(self.bucket, prefix=base + prefix, recursive=True)
            infos = [
                ObjectInfo(obj.object_name[len(base):], obj.size or 0)
                for obj in objects
                if not obj.is_dir
            ]
        except S3Error as error:
            if self._is_missing(error):
                return
            raise StoreError(f"listing {prefix!r} in {self.url}: {error}") from error
        yield from sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._name(key))

    def delete_many(self, keys: Iterable[str]) -> int:
        from minio.deleteobjects import DeleteObject

        count = 0

        def names() -> Iterator[DeleteObject]:
            nonlocal count
            for key in keys:
                count += 1
                yield DeleteObject(self._name(key))

        # minio sends DeleteObjects requests of 1000 names each; the errors come back lazily
        errors = [error for error in self.client.remove_objects(self.bucket, names())
                  if getattr(error, "code", None) not in ("NoSuchKey", "NoSuchObject")]
        if errors:
            raise StoreError(f"deleting {len(errors)} object(s) in {self.url} failed, e.g. "
                             f"{errors[0].name!r}: {errors[0].message}")
        return count


def open_store(url: str | os.PathLike[str] | None = None, settings: Settings | None = None) -> ObjectStore:
    """The store at ``url`` (default: ``settings.store``): a folder path, ``file://`` or ``s3://``."""
    settings = settings or get_settings()
    url = os.fspath(url) if url is not None else settings.store
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URL {url!r} has no bucket: use s3://bucket[/prefix]")
        return S3Store(parsed.netloc, parsed.path.strip("/"), settings)
    if parsed.scheme == "file":
        return LocalStore(parsed.path)
    if parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStore(url)
    raise StoreError(f"unsupported store URL {url!r}: use a folder path, file:///path or s3://bucket/prefix")
