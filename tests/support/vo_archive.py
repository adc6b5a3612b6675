"""A local spectrum archive for the VO fetch tests: a real HTTP server on a free port.

It serves a folder of real FITS files (copied from ``../shared/data``) with the standard
library's ``http.server``, whose directory listings are real HTML index pages, plus:

* a DataLink endpoint (``/datalink``, GET or POST with ``ID`` repeated) answering a real DataLink
  VOTable: a ``#this`` link per ID and, when enabled, a ``#cutout`` link to a SODA service
  descriptor with ``ID`` and ``BAND``;
* a SODA endpoint (``/soda?ID=..&BAND=lo hi``, metres) returning a real cutout of the real
  spectrum: the spectrum is read with oraculum's readers and the pixels inside the band are
  written as a FITS binary table (WAVELENGTH in vacuum Å, FLUX);
* faults by path: answer a given status a given number of times before serving (503, 503, then
  200), or cut a transfer short after half its bytes;
* canned answers by path (:meth:`Archive.serve`, :meth:`Archive.redirect`): any status, reason
  phrase, headers and body, with or without a ``Content-Length`` (for the fetch policy's tests:
  redirects to refused addresses, oversized or hostile answers).

Every request is logged (method, path, query), so tests can count what a run asked for. VOTables
are written with astropy, the way TOPCAT or a DaCHS service would write them.

The server listens on 127.0.0.1, a loopback address the outbound fetch policy refuses: tests
reach it through the admin allow-list, ``ORACULUM_FETCH_ALLOW`` = :data:`LOOPBACK_ALLOW` (set by
``tests/vo/conftest.py``), never by loosening the policy.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Field, Group, Info, Param, Resource, TableElement, VOTableFile

from oraculum.spectra.readers import read_spectrum
from oraculum.vo.votable import votable_bytes
from oraculum.spectra.wavelength import convert

#: The allow-list entry that admits the test servers (and only them: not 127.0.0.2).
LOOPBACK_ALLOW = "127.0.0.1/32"
DATALINK_STANDARD = "ivo://ivoa.net/std/DataLink#links-1.1"
SODA_STANDARD = "ivo://ivoa.net/std/SODA#sync-1.0"


@dataclass(frozen=True)
class Canned:
    """A fixed answer: status, reason phrase (None: the standard one), headers, body."""

    status: int
    phrase: str | None
    headers: dict[str, str]
    body: bytes
    length: bool = True


class Archive:
    """The server; ``url(path)`` gives absolute URLs, ``requests`` what was asked."""

    def __init__(self, root: Path, ids: str | None = None) -> None:
        self.root = root
        self.faults: dict[str, list[int | str]] = {}
        self.canned: dict[str, Canned] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        # DataLink ID -> path below root: with ``ids``, every FITS file is ``<ids><file stem>``
        self.files_by_id: dict[str, str] = {f"{ids}{path.stem}": str(path.relative_to(root))
                                            for path in sorted(root.rglob("*.fits"))} if ids else {}
        self.cutouts = True
        self.lock = threading.Lock()
        archive = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
                return

            def _params(self) -> tuple[str, dict[str, list[str]]]:
                parts = urlsplit(self.path)
                params = parse_qs(parts.query)
                if self.command == "POST":
                    length = int(self.headers.get("content-length") or 0)
                    for name, values in parse_qs(self.rfile.read(length).decode()).items():
                        params.setdefault(name, []).extend(values)
                return parts.path, params

            def _handle(self) -> None:
                path, params = self._params()
                with archive.lock:
                    archive.requests.append((self.command, path, params))
                    fault = archive.faults.get(path, [])
                    action = fault.pop(0) if fault else None
                if isinstance(action, int):
                    self.send_error(action)
                    return
                canned = archive.canned.get(path)
                if canned is not None:
                    self.send_response(canned.status, canned.phrase)
                    for name, value in canned.headers.items():
                        self.send_header(name, value)
                    if canned.length:
                        self.send_header("Content-Length", str(len(canned.body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(canned.body)
                    return
                route = {"/datalink": archive.datalink, "/soda": archive.soda}.get(path)
                if route is not None:
                    status, content_type, body = route(params)
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if action == "cut":
                    body = (root / path.lstrip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._handle()

            def do_POST(self) -> None:  # noqa: N802
                self._handle()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Archive":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def fail(self, path: str, *actions: int | str) -> None:
        """Answer ``path`` with these statuses (or 'cut') first, in order, then normally."""
        self.faults[f"/{path.lstrip('/')}"] = list(actions)

    def serve(self, path: str, body: bytes, status: int = 200, *, phrase: str | None = None,
              headers: dict[str, str] | None = None, length: bool = True) -> str:
        """Answer ``path`` with this, always; ``length=False`` sends no ``Content-Length`` (the body
        ends when the connection closes). Returns the path's URL."""
        self.canned[f"/{path.lstrip('/')}"] = Canned(status, phrase, dict(headers or {}), body, length)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer ``path`` with a redirect to ``location``; returns the path's URL."""
        return self.serve(path, b"", status, headers={"Location": location})

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.requests if p == f"/{path.lstrip('/')}")

    def paths_requested(self) -> list[str]:
        return [p for _, p, _ in self.requests]

    # -- DataLink and SODA ------------------------------------------------------------------------

    def datalink(self, params: dict[str, list[str]]) -> tuple[int, str, bytes]:
        ids = params.get("ID", [])
        return 200, "application/x-votable+xml;content=datalink", datalink_answer(
            ids, {i: self.url(self.files_by_id[i]) for i in ids if i in self.files_by_id},
            self.url("soda") if self.cutouts else None)

    def soda(self, params: dict[str, list[str]]) -> tuple[int, str, bytes]:
        identifier = params.get("ID", [""])[0]
        if identifier not in self.files_by_id or "BAND" not in params:
            return 400, "text/plain", b"need ID and BAND"
        low, high = (float(v) * 1e10 for v in params["BAND"][0].split())  # metres -> Å
        return 200, "application/fits", cutout((self.root / self.files_by_id[identifier]).read_bytes(),
                                               identifier, low, high)


def cutout(data: bytes, name: str, low_A: float, high_A: float) -> bytes:
    """The pixels of a real spectrum between ``low_A`` and ``high_A`` (vacuum Å) as a FITS table."""
    spectrum = read_spectrum(data, name)
    wave = convert(spectrum.wavelength_A, spectrum.medium, "vacuum")
    inside = (wave >= low_A) & (wave <= high_A)
    columns = [fits.Column(name="WAVELENGTH", format="D", unit="Angstrom", array=wave[inside]),
               fits.Column(name="FLUX", format="E", array=np.asarray(spectrum.flux, dtype=np.float32)[inside])]
    table = fits.BinTableHDU.from_columns(columns, name="CUTOUT")
    table.header["AIRORVAC"] = "vac"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return buffer.getvalue()


# --- VOTables ------------------------------------------------------------------------------------


def _table(votable: VOTableFile, resource: Resource, fields: list[Field], rows: list[tuple[Any, ...]]) -> TableElement:
    table = TableElement(votable, name="results")
    resource.tables.append(table)
    table.fields.extend(fields)
    table.create_arrays(len(rows))
    for i, row in enumerate(rows):
        table.array[i] = row
    return table


def access_votable(rows: list[dict[str, str]], *, by: str = "ucd", status: str | None = None) -> bytes:
    """An SSAP-like answer: ``pubdid``, ``url``, ``format`` per row. ``by`` chooses how the access
    column is marked: ``ucd`` (meta.ref.url + the SSA utype, as a service does), ``name``
    (just named access_url, as after a TOPCAT edit), or ``none`` (unrecognisable)."""
    votable = VOTableFile()
    resource = Resource(type="results")
    votable.resources.append(resource)
    if status:
        info = Info(name="QUERY_STATUS", value="ERROR")
        info.content = status
        resource.infos.append(info)
    access_name = {"ucd": "accref", "name": "access_url", "none": "link"}[by]
    fields = [
        Field(votable, name="ssa_pubDID", datatype="char", arraysize="*", utype="ssa:Curation.PublisherDID"),
        Field(votable, name=access_name, datatype="char", arraysize="*",
              ucd="meta.ref.url" if by == "ucd" else None, utype="ssa:Access.Reference" if by == "ucd" else None),
        Field(votable, name="mime", datatype="char", arraysize="*", ucd="meta.code.mime"),
    ]
    _table(votable, resource, fields, [(r.get("pubdid", ""), r.get("url", ""), r.get("format", "application/fits"))
                                       for r in rows])
    return votable_bytes(votable)  # not astropy's C TABLEDATA writer (see there)


def datalink_votable(ids: list[str], service_url: str) -> bytes:
    """A table whose rows carry only identifiers, with a DataLink service descriptor bound to
    the identifier column by its ID (as ObsCore/SSAP services with DataLink write it)."""
    votable = VOTableFile()
    resource = Resource(type="results")
    votable.resources.append(resource)
    fields = [Field(votable, name="obs_publisher_did", ID="pubdid", datatype="char", arraysize="*",
                    ucd="meta.ref.ivoid")]
    _table(votable, resource, fields, [(i,) for i in ids])
    votable.resources.append(_service(votable, "dl", DATALINK_STANDARD, service_url,
                                      [Param(votable, name="ID", datatype="char", arraysize="*", value="", ref="pubdid")]))
    return votable_bytes(votable)  # not astropy's C TABLEDATA writer (see there)


def _service(votable: VOTableFile, ident: str, standard: str, url: str, inputs: list[Param]) -> Resource:
    resource = Resource(type="meta", utype="adhoc:service", ID=ident)
    resource.params.extend([
        Param(votable, name="standardID", datatype="char", arraysize="*", value=standard),
        Param(votable, name="accessURL", datatype="char", arraysize="*", value=url),
    ])
    group = Group(resource, name="inputParams")
    group.entries.extend(inputs)
    resource.groups.append(group)
    return resource


def datalink_answer(ids: list[str], this_urls: dict[str, str], soda_url: str | None) -> bytes:
    """A DataLink response: per ID a #this row (or an error row for an unknown ID) and, with a
    SODA service, a #cutout row pointing at its descriptor (ID by ref, BAND in metres)."""
    votable = VOTableFile()
    resource = Resource(type="results")
    votable.resources.append(resource)
    text = {"datatype": "char", "arraysize": "*"}
    fields = [Field(votable, name="ID", ID="dl_id", ucd="meta.id;meta.main", **text),
              Field(votable, name="access_url", ucd="meta.ref.url", **text),
              Field(votable, name="service_def", ucd="meta.ref", **text),
              Field(votable, name="error_message", ucd="meta.code.error", **text),
              Field(votable, name="semantics", ucd="meta.code", **text),
              Field(votable, name="description", ucd="meta.note", **text),
              Field(votable, name="content_type", ucd="meta.code.mime", **text)]
    rows: list[tuple[Any, ...]] = []
    for identifier in ids:
        if identifier not in this_urls:
            rows.append((identifier, "", "", f"NotFoundFault: {identifier}", "#this", "", ""))
            continue
        rows.append((identifier, this_urls[identifier], "", "", "#this", "the spectrum", "application/fits"))
        if soda_url:
            rows.append((identifier, "", "soda", "", "#cutout", "a spectral cutout", "application/fits"))
    _table(votable, resource, fields, rows)
    if soda_url:
        votable.resources.append(_service(votable, "soda", SODA_STANDARD, soda_url, [
            Param(votable, name="ID", datatype="char", arraysize="*", value="", ref="dl_id"),
            Param(votable, name="BAND", datatype="double", arraysize="2", unit="m", xtype="interval",
                  ucd="em.wl;stat.interval", value=""),
        ]))
    return votable_bytes(votable)  # not astropy's C TABLEDATA writer (see there)


def copy_tree(shared: Path, target: Path, select: Callable[[Path], bool]) -> list[Path]:
    """Copy the selected real files below ``shared`` into ``target``, keeping relative paths."""
    copied = []
    for path in sorted(shared.rglob("*")):
        if path.is_file() and select(path):
            out = target / path.relative_to(shared)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(path.read_bytes())
            copied.append(out)
    return copied
