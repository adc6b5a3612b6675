"""What to download, when the source is a list of URLs or an HTTP index page.

A URL list is a text file with one URL per line (``#`` starts a comment; anything after the URL
on its line is ignored, so ``wget``-style lists and TOPCAT's plain-text column exports both work).

An index page is an HTML page of links, as Apache, nginx, Python's ``http.server`` or an
archive's own file browser serve them. Every link below the page's folder is followed
recursively; links that climb up (``../``), leave the host, or carry a query (the "sort by
name" links of Apache) are not. Links whose file name matches the patterns (FITS by default) are
the spectra. Pages are parsed with the standard library's HTML parser, not with regular
expressions, so comments, entities and odd quoting do not fool it.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

from oraculum.vo.naming import url_folder
from oraculum.vo.transport import FetchError, HttpClient

#: The index pages visited at most in one crawl (a guard against link mazes).
MAX_PAGES = 100_000


class ListingError(ValueError):
    """A URL list or index page that cannot be used; the message names it and the problem."""


def parse_url_list(text: str, origin: str, *, remote: bool = False) -> list[str]:
    """The URLs of a URL list, in order; :class:`ListingError` naming the line of a bad entry
    (quoting it only when the list is not ``remote``: a fetched list is never quoted, see
    :mod:`oraculum.vo.policy`)."""
    urls: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip().lstrip("\ufeff")
        if not entry or entry.startswith("#"):
            continue
        url = entry.split()[0]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            entry_text = "the entry" if remote else repr(url)
            raise ListingError(
                f"{origin}, line {number}: {entry_text} is not an http(s) URL; a URL list has one "
                "http:// or https:// URL per line (# starts a comment)"
            )
        urls.append(url)
    if not urls:
        raise ListingError(f"{origin}: no URL in the list (one http(s) URL per line expected)")
    return urls


class _Links(HTMLParser):
    """The ``href`` of every ``<a>`` element, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.lower() == "a":
            for name, value in attrs:
                if name.lower() == "href" and value:
                    self.hrefs.append(value.strip())


def page_links(html: str) -> list[str]:
    """The link targets of an HTML page, as written (relative or absolute)."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    return parser.hrefs


def looks_like_html(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<a href" in head


@dataclass
class Crawl:
    """The spectra found below an index page, and the pages that could not be read."""

    root: str
    files: list[str] = field(default_factory=list)
    failed_pages: list[FetchError] = field(default_factory=list)
    pages: int = 0


def crawl_index(http: HttpClient, root: str, patterns: tuple[str, ...]) -> Crawl:
    """Every link matching ``patterns`` below the index page ``root``, sorted by URL.

    A sub-page that cannot be read is recorded and skipped (the rest of the tree is still
    listed); the root page itself failing raises :class:`FetchError`.
    """
    base = urlsplit(root)
    prefix = url_folder(root)
    crawl = Crawl(root)
    queue: deque[str] = deque([root])
    seen_pages = {urldefrag(root).url}
    files: set[str] = set()
    while queue:
        page = queue.popleft()
        crawl.pages += 1
        if crawl.pages > MAX_PAGES:
            raise ListingError(f"index {root}: more than {MAX_PAGES} pages below it; list a smaller folder")
        try:
            body = http.get_bytes(page)
        except FetchError as error:
            if page == root:
                raise
            crawl.failed_pages.append(error)
            continue
        for href in page_links(body.decode("utf-8", errors="replace")):
            target = urldefrag(urljoin(page, href)).url
            parts = urlsplit(target)
            if (parts.scheme, parts.netloc) != (base.scheme, base.netloc) or not parts.path.startswith(prefix):
                continue  # another host, or above the index (parent-directory links)
            name = posixpath.basename(parts.path)
            if name and any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
                files.add(target)
            elif parts.path.endswith("/") and not parts.query and target not in seen_pages:
                seen_pages.add(target)
                queue.append(target)
    crawl.files = sorted(files)
    return crawl
