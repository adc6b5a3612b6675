"""DataLink: from a row of a table to the spectrum file, or to a SODA cutout around the grid.

Two ways a table can point at DataLink (IVOA DataLink 1.1):

* a **service descriptor**: a ``RESOURCE type="meta" utype="adhoc:service"`` whose
  ``standardID`` is DataLink and whose ``inputParams`` group has a ``PARAM name="ID"`` with a
  ``ref`` to the column holding each row's identifier. The service is called with many IDs at
  once (DataLink allows repeating ``ID``), which turns a million rows into a few tens of
  thousands of calls;
* a row whose access format is ``application/x-votable+xml;content=datalink``: its access
  reference *is* a DataLink document for that one row.

From the links of a row, :class:`LinkChooser` picks what to download: the ``#this`` link (the
dataset itself), or, when a cutout is wanted and the answer offers a ``#cutout`` (or ``#proc``)
link to a SODA service with a ``BAND`` parameter, that service called with ``BAND`` = the
preprocessing grid in metres plus a margin. pyvo does the VOTable work (service descriptors,
input parameters with their ``ref`` and fixed values, serialising ``BAND``); the HTTP calls go
through :class:`~oraculum.vo.transport.HttpClient` so they are retried like every download.
pyvo's ``bysemantics`` is not used: it downloads the DataLink vocabulary from the IVOA, and a
Job must not depend on that, so semantics are compared as the exact core terms.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from astropy.io.votable.tree import Param, Resource, TableElement, VOTableFile
from pyvo.dal.adhoc import DatalinkQuery, DatalinkRecord, DatalinkResults, SodaQuery

from oraculum.vo.transport import FetchError, HttpClient
from oraculum.vo.votable import VOTableError, parse_votable, results

DATALINK_STANDARD = "ivo://ivoa.net/std/datalink"
#: Core DataLink terms for "the dataset itself" and for a cutout service.
THIS = "#this"
CUTOUT_TERMS = ("#cutout", "#proc")
#: The core terms of the DataLink vocabulary (http://www.ivoa.net/rdf/datalink/core) named in reasons.
CORE_TERMS = frozenset({
    "#this", "#auxiliary", "#bias", "#calibration", "#coderived", "#counterpart", "#cutout", "#dark",
    "#derivation", "#detached-header", "#documentation", "#error", "#flat", "#noise", "#preview",
    "#preview-image", "#preview-plot", "#proc", "#progenitor", "#thumbnail", "#weight",
})
#: The faults an ``error_message`` starts with (DataLink 1.1, section 3.4).
FAULTS = frozenset({"NotFoundFault", "UsageFault", "TransientFault", "FatalFault", "DefaultFault", "Error"})

DatalinkMode = Literal["auto", "this", "cutout", "none"]


@dataclass(frozen=True)
class ServiceDescriptor:
    """A DataLink service declared in a table, bound to the column ``column`` (FIELD ``ref``)."""

    resource: Resource
    ref: str
    column: str
    url: str


@dataclass(frozen=True)
class Product:
    """What to download for one row: ``url`` with ``params``; ``kind`` says what it is (the
    access reference itself, the DataLink ``#this`` product, or a SODA cutout)."""

    url: str
    params: dict[str, str | list[str]] | None
    kind: Literal["direct", "this", "cutout"]


def _resource_param(resource: Resource, name: str) -> str:
    """The value of the resource's PARAM ``name`` (``standardID``, ``accessURL``), '' when absent."""
    return next((str(p.value) for p in resource.params if p.name == name), "")


def _input_params(resource: Resource) -> list[Param]:
    return [entry for group in resource.groups if group.name == "inputParams"
            for entry in group.entries if isinstance(entry, Param)]


def _service_resources(votable: VOTableFile) -> list[Resource]:
    found: list[Resource] = []

    def walk(resources: list[Resource]) -> None:
        for resource in resources:
            if resource.type == "meta" and (resource.utype or "").lower() == "adhoc:service":
                found.append(resource)
            walk(list(resource.resources))

    walk(list(votable.resources))
    return found


def find_service(votable: VOTableFile, table: TableElement, origin: str) -> ServiceDescriptor | None:
    """The table's DataLink service descriptor, or None when it declares none.

    A descriptor whose ``ID`` parameter refers to no column of the table is an error (the table
    says "resolve me through DataLink" but not with what), named with the ``ref`` it gave.
    """
    for resource in _service_resources(votable):
        standard = _resource_param(resource, "standardID").lower()
        if standard and not standard.startswith(DATALINK_STANDARD):
            continue  # e.g. a SODA descriptor: not how to find the files
        params = {p.name.upper(): p for p in _input_params(resource)}
        id_param = params.get("ID")
        if id_param is None or not id_param.ref:
            continue
        access = _resource_param(resource, "accessURL")
        if not access:
            raise VOTableError(f"{origin}: the DataLink service descriptor {resource.ID or ''} has no accessURL PARAM")
        try:
            field = table.get_field_by_id_or_name(id_param.ref)
        except KeyError:
            raise VOTableError(
                f"{origin}: the DataLink service descriptor's ID parameter refers to ref={id_param.ref!r}, "
                f"but the table has no FIELD with that ID or name (fields: {', '.join(f.name for f in table.fields)})"
            ) from None
        return ServiceDescriptor(resource, id_param.ref, field.name, access)
    return None


def descriptor_document(descriptor: ServiceDescriptor) -> bytes:
    """A small VOTable holding only the service descriptor, so pods that resolve rows need not
    parse the whole (maybe million-row) table again."""
    document = VOTableFile()
    document.resources.append(descriptor.resource)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document.to_xml(buffer)
    return buffer.getvalue()


def load_descriptor(data: bytes, ref: str, column: str, origin: str) -> ServiceDescriptor:
    """The descriptor saved by :func:`descriptor_document`."""
    votable = parse_votable(data, origin)
    resources = _service_resources(votable)
    if not resources:
        raise VOTableError(f"{origin}: no DataLink service descriptor in it")
    resource = resources[0]
    access = _resource_param(resource, "accessURL")
    return ServiceDescriptor(resource, ref, column, access)


def _band_param(resource: Resource) -> Param | None:
    return next((p for p in _input_params(resource) if p.name.upper() == "BAND"), None)


class LinkChooser:
    """Picks the download of each row from its DataLink answer.

    ``mode``: ``this`` always takes ``#this``; ``cutout`` requires a SODA cutout with ``BAND``
    (a row without one fails, with the reason); ``auto`` takes the cutout when it is offered and
    ``band_m`` is known, else ``#this``.
    """

    def __init__(self, mode: DatalinkMode, band_m: tuple[float, float] | None) -> None:
        if mode == "cutout" and band_m is None:
            raise ValueError("a cutout needs a band: give the wavelength range (the preprocessing grid)")
        self.mode = mode
        self.band_m = band_m

    def choose(self, links: DatalinkResults, records: list[DatalinkRecord], label: str) -> Product:
        if not records:
            raise FetchError(label, "the DataLink service returned no links for it")
        if self.mode != "this" and self.band_m is not None:
            cutout = self._cutout(links, records)
            if cutout is not None:
                return cutout
        if self.mode == "cutout":
            raise FetchError(label, f"no SODA cutout with a BAND parameter among its DataLink links ({_terms(records)})")
        this = [r for r in records if r.semantics == THIS]
        if not this:
            raise FetchError(label, f"no #this link among its DataLink links ({_terms(records)})")
        record = this[0]
        if record.error_message:
            raise FetchError(label, f"DataLink error: {_fault(str(record.error_message))}")
        url = record.get("access_url", decode=True)
        if not url:
            raise FetchError(label, "its #this link has an empty access_url")
        return Product(str(url), None, "this")

    def _cutout(self, links: DatalinkResults, records: list[DatalinkRecord]) -> Product | None:
        for term in CUTOUT_TERMS:
            for record in records:
                if record.semantics != term or not record.service_def or record.error_message:
                    continue
                try:
                    resource = links.get_adhocservice_by_id(record.service_def)
                except Exception:  # noqa: BLE001 - pyvo raises DALServiceError; a broken link is skipped
                    continue
                if _band_param(resource) is None:
                    continue
                query = SodaQuery.from_resource(record, resource, band=np.array(self.band_m))
                params = {name: (list(value) if isinstance(value, (list, tuple)) else str(value))
                          for name, value in query.items()}
                return Product(str(query.baseurl), params, "cutout")
        return None


def _terms(records: list[DatalinkRecord]) -> str:
    """The links' semantics for a reason: the core DataLink terms by name, any other term only
    counted (a reason never quotes an answer, see :mod:`oraculum.vo.policy`)."""
    found = [str(r.semantics) for r in records]
    known = sorted({term for term in found if term in CORE_TERMS})
    others = sum(1 for term in found if term not in CORE_TERMS)
    return ", ".join(known + ([f"{others} other link(s)"] if others else [])) or "none"


def _fault(message: str) -> str:
    """The DataLink fault of an ``error_message`` (``NotFoundFault: ...`` -> ``NotFoundFault``):
    the standard word only, never the service's text."""
    word = message.split(":", 1)[0].strip()
    return word if word in FAULTS else "the service reported an error for it (its message is not repeated here)"


def _links(data: bytes, origin: str) -> DatalinkResults:
    votable = parse_votable(data, origin, remote=True)
    results(votable, origin, remote=True)  # a QUERY_STATUS=ERROR answer becomes a VOTableError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DatalinkResults(votable, url=origin)


def resolve_ids(http: HttpClient, descriptor: ServiceDescriptor, ids: list[str],
                chooser: LinkChooser) -> dict[str, Product | FetchError]:
    """The download of each identifier, from one DataLink call for all of them (POST with the
    ``ID`` repeated); identifiers the answer leaves out (a service that caps its answer) are
    asked again one by one. Nothing raises: a failure is the value for its identifier."""
    out: dict[str, Product | FetchError] = {}
    query = DatalinkQuery.from_resource([{descriptor.ref: i} for i in ids], descriptor.resource)
    params = {name: value for name, value in query.items()}
    try:
        if len(ids) == 1:
            params["ID"] = ids[0]
            body = http.get_bytes(str(query.baseurl), params=params)
        else:
            body = http.get_bytes(str(query.baseurl), data=params)
        links = _links(body, f"DataLink {query.baseurl}")
    except (FetchError, VOTableError) as error:
        reason = error.reason if isinstance(error, FetchError) else str(error)
        status = error.status if isinstance(error, FetchError) else None
        return {i: FetchError(i, f"DataLink call failed: {reason}", status) for i in ids}
    by_id: dict[str, list[DatalinkRecord]] = {}
    for record in links:
        by_id.setdefault(str(record.id), []).append(record)
    missing = [i for i in ids if i not in by_id]
    for identifier in ids:
        if identifier in by_id:
            try:
                out[identifier] = chooser.choose(links, by_id[identifier], identifier)
            except FetchError as error:
                out[identifier] = error
    if missing and len(ids) > 1:
        for identifier in missing:
            out.update(resolve_ids(http, descriptor, [identifier], chooser))
    elif missing:
        out[missing[0]] = FetchError(missing[0], "the DataLink service returned no links for it")
    return out


def resolve_document(http: HttpClient, url: str, chooser: LinkChooser) -> Product:
    """The download for a row whose access reference is a DataLink document."""
    try:
        links = _links(http.get_bytes(url), f"DataLink document {url}")
    except VOTableError as error:
        raise FetchError(url, str(error)) from None
    return chooser.choose(links, list(links), url)
