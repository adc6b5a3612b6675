"""The fetch plan: every spectrum a source promises, with the store key it will have.

A plan is made once from the source document (a VOTable, a URL list, or the crawl of an index
page) and kept in the store beside the files (``_fetch/<source digest>/plan.jsonl``). Its order
is the order of the rows (of the list, of the sorted crawl), and shard ``i`` of ``n`` is a
contiguous slice of it, exactly like the slices of a file listing in :mod:`oraculum.ingest.pipeline`; so
every pod of an Indexed Job computes the same slices without talking to the others, and pod
``i`` downloads and then preprocesses the same rows.

Rows that cannot become a download (no access reference, the same URL or identifier as an
earlier row) are not in the plan; they are kept as *problems* and reported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from oraculum.vo.datalink import DatalinkMode, ServiceDescriptor, find_service
from oraculum.vo.listing import Crawl
from oraculum.vo.naming import KeyAllocator, preferred_name, relative_key
from oraculum.vo.votable import (
    ACCESS,
    FORMAT,
    IDENTIFIER,
    VOTableError,
    column_strings,
    find_column,
    parse_votable,
    require_column,
    results,
    table_label,
)

PLAN_VERSION = 1

Via = Literal["direct", "service", "document"]


@dataclass(frozen=True)
class PlanItem:
    """One spectrum: its store ``key``; ``via`` says how to get it (``direct``: download ``url``;
    ``service``: ask the table's DataLink service about ``ident``; ``document``: ``url`` is a
    DataLink document)."""

    key: str
    url: str | None
    ident: str | None
    via: Via
    row: int

    @property
    def label(self) -> str:
        """What a person recognises the item by in a report."""
        return self.url or self.ident or self.key


@dataclass
class Plan:
    items: list[PlanItem]
    problems: list[dict[str, object]] = field(default_factory=list)
    descriptor: ServiceDescriptor | None = None

    @property
    def uses_links(self) -> bool:
        """Whether any row is resolved through DataLink (so SODA cutouts may apply)."""
        return any(item.via != "direct" for item in self.items)

    def dumps(self) -> bytes:
        header = {"version": PLAN_VERSION, "problems": self.problems,
                  "descriptor": {"ref": self.descriptor.ref, "column": self.descriptor.column} if self.descriptor else None}
        lines = [json.dumps(header, sort_keys=True)] + [json.dumps(asdict(item), sort_keys=True) for item in self.items]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def loads(cls, data: bytes, descriptor: ServiceDescriptor | None = None) -> "Plan":
        lines = data.decode().splitlines()
        header = json.loads(lines[0])
        if header.get("version") != PLAN_VERSION:
            raise ValueError(f"fetch plan version {header.get('version')} is not {PLAN_VERSION}; delete the _fetch folder")
        items = [PlanItem(**json.loads(line)) for line in lines[1:] if line]
        return cls(items, header.get("problems", []), descriptor)


class _Builder:
    """Allocates keys and drops repeated rows, in order."""

    def __init__(self) -> None:
        self.keys = KeyAllocator()
        self.seen: dict[str, int] = {}
        self.plan = Plan([])

    def add(self, row: int, name: str, url: str | None, ident: str | None, via: Via, token: str) -> None:
        if token in self.seen:
            self.plan.problems.append({"row": row, "source": token, "status": "duplicate",
                                       "reason": f"same {'identifier' if via == 'service' else 'URL'} as row {self.seen[token]}; fetched once"})
            return
        self.seen[token] = row
        self.plan.items.append(PlanItem(self.keys.allocate(name, token), url, ident, via, row))


def plan_urls(urls: list[str]) -> Plan:
    """A plan for a URL list: each file keeps its file name (clashes get a hash suffix)."""
    builder = _Builder()
    for row, url in enumerate(urls):
        builder.add(row, preferred_name(url), url, None, "direct", url)
    return builder.plan


def plan_crawl(crawl: Crawl) -> Plan:
    """A plan for the files found below an index page: keys keep the folder structure below it."""
    builder = _Builder()
    for row, url in enumerate(crawl.files):
        builder.add(row, relative_key(url, crawl.root), url, None, "direct", url)
    builder.plan.problems += [{"row": None, "source": e.url, "status": "failed", "http_status": e.status,
                               "reason": f"index page not read: {e.reason}"} for e in crawl.failed_pages]
    return builder.plan


def plan_votable(data: bytes, origin: str, mode: DatalinkMode, *, remote: bool = False) -> Plan:
    """A plan for a VOTable: rows through the table's DataLink service when it declares one (and
    ``mode`` is not ``none``), through their DataLink documents when their format says so, else
    straight from the access reference. ``remote``: the table was fetched from a server, so
    errors do not quote it (see :func:`~oraculum.vo.votable.parse_votable`)."""
    votable = parse_votable(data, origin, remote=remote)
    table = results(votable, origin, remote=remote).resultstable
    descriptor = find_service(votable, table, origin) if mode != "none" else None
    if mode == "cutout" and descriptor is None and not _has_datalink_rows(table):
        raise VOTableError(
            f"{table_label(table, origin)}: datalink=cutout, but the table declares no DataLink service "
            "(no RESOURCE type=\"meta\" utype=\"adhoc:service\" with a DataLink standardID and an ID PARAM ref) "
            "and no row has the DataLink format; use datalink=auto or this"
        )
    access = find_column(table, ACCESS) if descriptor is not None else require_column(table, ACCESS, origin)
    urls = column_strings(table, access) if access is not None else [None] * len(table.array)
    fmt = find_column(table, FORMAT)
    formats = column_strings(table, fmt) if fmt is not None else [None] * len(urls)
    ident_field = table.get_field_by_id_or_name(descriptor.ref) if descriptor else find_column(table, IDENTIFIER)
    idents = column_strings(table, ident_field) if ident_field is not None else [None] * len(urls)
    builder = _Builder()
    builder.plan.descriptor = descriptor
    for row, (url, content, ident) in enumerate(zip(urls, formats, idents)):
        if descriptor is not None:
            if ident is None:
                builder.plan.problems.append({"row": row, "source": url, "status": "failed",
                                              "reason": f"no value in the DataLink ID column {descriptor.column!r}"})
                continue
            builder.add(row, preferred_name(url, ident, None), url, ident, "service", ident)
        elif url is None:
            builder.plan.problems.append({"row": row, "source": ident, "status": "failed",
                                          "reason": f"no access reference in column {access.name!r}"})
        elif mode != "none" and _is_datalink(content):
            builder.add(row, preferred_name(None, ident or url, None), url, ident, "document", url)
        else:
            builder.add(row, preferred_name(url, ident, content), url, ident, "direct", url)
    if not builder.plan.items:
        raise VOTableError(f"{table_label(table, origin)}: no row with something to download ({len(urls)} rows)")
    return builder.plan


def _is_datalink(content: str | None) -> bool:
    return bool(content) and "content=datalink" in content.replace(" ", "").lower()


def _has_datalink_rows(table: object) -> bool:
    fmt = find_column(table, FORMAT)  # type: ignore[arg-type]
    return fmt is not None and any(_is_datalink(v) for v in column_strings(table, fmt))  # type: ignore[arg-type]


__all__ = ["Plan", "PlanItem", "plan_crawl", "plan_urls", "plan_votable"]
