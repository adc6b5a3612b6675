"""Transparent decompression of gzip-compressed archive files.

LAMOST distributes many spectra as ``.fits.gz``; object stores also hold files whose name does
not say they are compressed. So compression is detected from the content (the gzip magic bytes
``1f 8b``), never from the name alone. Decompression is bounded: a corrupt or malicious stream
must not exhaust a worker's memory.
"""

from __future__ import annotations

import functools
import zlib

from oraculum.spectra.spectrum import RejectReason, SpectrumRejected

GZIP_MAGIC = b"\x1f\x8b"


@functools.lru_cache(maxsize=1)
def default_limit() -> int:
    """The largest decompressed size accepted, ``ORACULUM_MAX_DECOMPRESSED_BYTES`` (read once per
    process; 64 MiB by default). A LAMOST medium-resolution file, the biggest spectrum format we
    read, is about 2 MB uncompressed: the default leaves room for anything real and refuses a gzip
    bomb before it fills a worker's memory."""
    from oraculum.settings import get_settings

    return int(get_settings().max_decompressed_bytes)


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts with the gzip magic bytes."""
    return data[:2] == GZIP_MAGIC


def gunzip(data: bytes, name: str, *, limit: int | None = None) -> bytes:
    """Decompress a gzip stream (all members), or raise :class:`SpectrumRejected`.

    A stream that ends before its end-of-member marker is ``truncated`` (an interrupted
    download); one that is not valid deflate data is ``unreadable``. Bytes after the last
    member that do not start another member (e.g. zero padding) are ignored, like ``gzip -d``.
    At most ``limit`` bytes (default :func:`default_limit`) are ever decompressed.
    """
    limit = default_limit() if limit is None else limit
    chunks: list[bytes] = []
    total = 0
    rest = data
    while rest[:2] == GZIP_MAGIC:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            chunk = inflater.decompress(rest, limit - total + 1)
        except zlib.error as error:
            raise SpectrumRejected(
                RejectReason.UNREADABLE,
                f"{name}: starts with the gzip magic bytes 1f 8b but is not a valid gzip stream "
                f"({error})",
            ) from None
        total += len(chunk)
        if total > limit or inflater.unconsumed_tail:
            raise SpectrumRejected(
                RejectReason.UNREADABLE,
                f"{name}: gzip stream decompresses to more than {limit} bytes; refusing to read it",
            )
        chunks.append(chunk)
        if not inflater.eof:
            raise SpectrumRejected(
                RejectReason.TRUNCATED,
                f"{name}: gzip stream ends early after {len(data)} compressed bytes "
                f"({total} bytes decompressed); the file is truncated",
            )
        rest = inflater.unused_data
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
