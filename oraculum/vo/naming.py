"""Store keys for fetched spectra: stable, safe and recognisably named.

A spectrum's key becomes its id in the dataset (the key without its extension), and label files
refer to spectra by file name (``spec-55967-...``, ``uc090038``), so the name an archive gives a
file is kept whenever it can be: the last segment of the URL path, else of the row's dataset
identifier (``ivo://asu.cas.cz/stel/ccd700?uc090038`` -> ``uc090038``). Every key is reduced to
``[A-Za-z0-9._-]`` segments with no leading dot, so no URL can climb out of the archive prefix
(``..``) or hide a file. Two different URLs that want the same name keep it in plan order: the
first gets the plain name, later ones a suffix made from their URL's hash, so the result is the
same on every run and in every pod. FITS extensions are kept (and ``.fits`` added where the name
has none) so the store listing and the readers' file patterns recognise the files.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from urllib.parse import unquote, urlsplit

#: Extensions of spectrum files, longest first (``.fits.gz`` before ``.gz``).
SPECTRUM_SUFFIXES: tuple[str, ...] = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_SEGMENT = 120


def spectrum_suffix(name: str) -> str | None:
    """The FITS extension ``name`` ends with (case kept), or None."""
    lower = name.lower()
    return next((name[-len(s):] for s in SPECTRUM_SUFFIXES if lower.endswith(s)), None)


def safe_segment(text: str) -> str:
    """One key segment: percent-decoded, unsafe characters as ``_``, no leading dots, bounded."""
    text = _UNSAFE.sub("_", unquote(text)).lstrip("._").rstrip("_")
    if len(text) > _MAX_SEGMENT:
        suffix = spectrum_suffix(text) or ""
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[: _MAX_SEGMENT - len(suffix) - 9]}-{digest}{suffix}"
    return text


def url_basename(url: str) -> str:
    """The last segment of the URL's path, decoded and made safe ('' for ``.../`` or a bare host)."""
    return safe_segment(posixpath.basename(urlsplit(url).path))


def id_basename(identifier: str) -> str:
    """The distinctive tail of a dataset identifier: after the last ``?``, ``/``, ``#`` or ``:``."""
    tail = re.split(r"[?/#:=]", identifier.strip())
    return safe_segment(next((part for part in reversed(tail) if part), ""))


def suffix_for(content_format: str | None) -> str:
    """The extension for a file whose name carries none, from its MIME type (FITS by default: the
    readers detect the real format from the content)."""
    fmt = (content_format or "").lower()
    return ".fits.gz" if "gzip" in fmt else ".fits"


def preferred_name(url: str | None, identifier: str | None = None, content_format: str | None = None) -> str:
    """The name a spectrum would like: the URL's file name if it looks like a spectrum file, else
    the identifier's tail, else the URL's file name, each given a FITS extension if it has none."""
    candidates = []
    if url:
        base = url_basename(url)
        if spectrum_suffix(base):
            return base
        candidates.append(base)
    if identifier:
        candidates.insert(0, id_basename(identifier))
    name = next((c for c in candidates if c), "")
    if not name:
        name = "spectrum-" + hashlib.sha256((url or identifier or "").encode()).hexdigest()[:12]
    return name if spectrum_suffix(name) else name + suffix_for(content_format)


def url_folder(url: str) -> str:
    """The folder part of a URL's path, ending in ``/`` (the page ``.../dr2/index.html`` and
    the folder ``.../dr2/`` both give ``.../dr2/``)."""
    path = urlsplit(url).path or "/"
    return path if path.endswith("/") else posixpath.dirname(path) + "/"


def relative_key(url: str, root: str) -> str:
    """The key of ``url`` found below the index page ``root``: its path relative to the root's
    folder, each segment made safe (so the archive's folder structure is kept)."""
    base = url_folder(root)
    path = urlsplit(url).path
    rest = path[len(base):] if path.startswith(base) else posixpath.basename(path)
    segments = [safe_segment(part) for part in rest.split("/") if part]
    return "/".join(s for s in segments if s) or url_basename(url)


class KeyAllocator:
    """Hands out unique keys in plan order; a name already taken gets ``-<hash of token>``."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def allocate(self, name: str, token: str) -> str:
        key = name
        if key in self._taken:
            suffix = spectrum_suffix(name) or ""
            stem = name[: len(name) - len(suffix)]
            digest = hashlib.sha256(token.encode()).hexdigest()
            for width in (8, 16, 64):  # a longer hash in the (astronomically unlikely) case of a clash
                key = f"{stem}-{digest[:width]}{suffix}"
                if key not in self._taken:
                    break
        self._taken.add(key)
        return key
