"""The IVOA UWS 1.1 data model of one job and its XML representation.

Plain data (:class:`JobView`, :class:`Result`, :class:`ErrorSummary`) filled in by
:mod:`oraculum.api.uws_jobs`, written out by :func:`job_document` and friends with
``xml.etree.ElementTree``. The element order, the namespaces (``http://www.ivoa.net/xml/UWS/v1.0``
with xlink) and which elements are nil-able follow the standard's schema, because strict UWS
clients (vo-models in strict mode, pyvo) read elements in schema order and reject what they do
not expect. Times are UTC ISO 8601 with a ``Z`` and milliseconds, the form VOResource prescribes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
#: oraculum's own elements inside ``<uws:jobInfo>`` (a URN: no host name to resolve).
INFO_NS = "urn:oraculum:uws:jobinfo:v1"
UWS_VERSION = "1.1"
MEDIA_TYPE = "application/xml"

PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD", "SUSPENDED",
          "ARCHIVED")
#: Phases from which a job moves on by itself (the blocking GET waits only in these).
ACTIVE_PHASES = frozenset({"PENDING", "QUEUED", "EXECUTING"})

for _prefix, _uri in (("uws", UWS_NS), ("xlink", XLINK_NS), ("xsi", XSI_NS), ("oraculum", INFO_NS)):
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True)
class Result:
    """A result of a job: a link to the object the rest of the API serves."""

    id: str
    href: str
    mime_type: str | None = None
    size: int | None = None  # bytes, only when the link serves the stored object as it is


@dataclass(frozen=True)
class ErrorSummary:
    """``<uws:errorSummary>``: fatal errors need a change before the job can run again."""

    message: str
    fatal: bool = True
    has_detail: bool = True


@dataclass(frozen=True)
class JobView:
    """Everything ``<uws:job>`` shows of one job."""

    job_id: str
    phase: str
    creation_time: datetime | None
    run_id: str | None = None
    owner_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    execution_duration: int = 0  # seconds; 0 = unlimited
    destruction: datetime | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    error: ErrorSummary | None = None
    info: list[tuple[str, str]] = field(default_factory=list)  # (local name, text) in INFO_NS

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"{self.phase!r} is not a UWS execution phase ({', '.join(PHASES)})")

    def result(self, result_id: str) -> Result | None:
        return next((r for r in self.results if r.id == result_id), None)


def format_time(value: datetime | None) -> str:
    """``2026-01-31T12:00:00.000Z`` (UTC; naive datetimes are taken as UTC); '' for None."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _q(name: str, ns: str = UWS_NS) -> str:
    return f"{{{ns}}}{name}"


def _text(parent: ET.Element, name: str, value: str) -> ET.Element:
    element = ET.SubElement(parent, _q(name))
    element.text = value
    return element


def _nillable(parent: ET.Element, name: str, value: str | None) -> None:
    """An element the schema declares nillable: ``xsi:nil="true"`` when there is no value."""
    element = ET.SubElement(parent, _q(name))
    if value:
        element.text = value
    else:
        element.set(_q("nil", XSI_NS), "true")


def _document(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def parameters_element(parameters: list[tuple[str, str]]) -> ET.Element:
    element = ET.Element(_q("parameters"))
    for name, value in parameters:
        parameter = ET.SubElement(element, _q("parameter"), {"id": name})
        parameter.text = value
    return element


def results_element(results: list[Result]) -> ET.Element:
    element = ET.Element(_q("results"))
    for result in results:
        attributes = {"id": result.id, _q("type", XLINK_NS): "simple", _q("href", XLINK_NS): result.href}
        if result.size is not None:
            attributes["size"] = str(int(result.size))
        if result.mime_type:
            attributes["mime-type"] = result.mime_type
        ET.SubElement(element, _q("result"), attributes)
    return element


def error_summary_element(error: ErrorSummary) -> ET.Element:
    element = ET.Element(_q("errorSummary"), {"type": "fatal" if error.fatal else "transient",
                                               "hasDetail": "true" if error.has_detail else "false"})
    _text(element, "message", error.message)
    return element


def job_element(job: JobView) -> ET.Element:
    """``<uws:job>`` with its children in the schema's order."""
    root = ET.Element(_q("job"), {"version": UWS_VERSION})
    _text(root, "jobId", job.job_id)
    if job.run_id:
        _text(root, "runId", job.run_id)
    _nillable(root, "ownerId", job.owner_id)
    _text(root, "phase", job.phase)
    _nillable(root, "quote", None)  # oraculum makes no predictions of when a job ends
    if job.creation_time is not None:
        _text(root, "creationTime", format_time(job.creation_time))
    _nillable(root, "startTime", format_time(job.start_time))
    _nillable(root, "endTime", format_time(job.end_time))
    _text(root, "executionDuration", str(int(job.execution_duration)))
    _nillable(root, "destruction", format_time(job.destruction))
    root.append(parameters_element(job.parameters))
    root.append(results_element(job.results))
    if job.error is not None:
        root.append(error_summary_element(job.error))
    if job.info:
        info = ET.SubElement(root, _q("jobInfo"))
        for name, value in job.info:
            ET.SubElement(info, _q(name, INFO_NS)).text = value
    return root


def job_document(job: JobView) -> bytes:
    return _document(job_element(job))


def jobs_document(jobs: list[tuple[JobView, str]]) -> bytes:
    """``<uws:jobs>``: one ``<uws:jobref>`` per (job, href)."""
    root = ET.Element(_q("jobs"), {"version": UWS_VERSION})
    for job, href in jobs:
        ref = ET.SubElement(root, _q("jobref"), {"id": job.job_id, _q("type", XLINK_NS): "simple",
                                                 _q("href", XLINK_NS): href})
        _text(ref, "phase", job.phase)
        if job.run_id:
            _text(ref, "runId", job.run_id)
        _nillable(ref, "ownerId", job.owner_id)
        if job.creation_time is not None:
            _text(ref, "creationTime", format_time(job.creation_time))
    return _document(root)


def results_document(results: list[Result]) -> bytes:
    return _document(results_element(results))


def parameters_document(parameters: list[tuple[str, str]]) -> bytes:
    return _document(parameters_element(parameters))


def error_summary_document(error: ErrorSummary) -> bytes:
    return _document(error_summary_element(error))
