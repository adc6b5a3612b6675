"""What the UWS facade remembers beyond the custom resources: one small JSON object per job.

A custom resource knows whether it is suspended, not *why*: a PreprocessingJob created through
UWS waits suspended in PENDING until ``PHASE=RUN``, one aborted with ``PHASE=ABORT`` is
suspended too, and so is one paused with ``kubectl``. UWS also has an owner, a runId, an
execution-duration limit and a destruction time that the specs do not hold. So the facade keeps
the requests it was sent in the object store (the durable truth both backends share, and which
every API replica sees)::

    uws/preprocessing/<name>/<uid>.json     a PreprocessingJob's record
    uws/iterations/<experiment>/<uid>.json  an experiment's record (requests name the iteration)

The key holds the resource's uid, so a resource deleted and created again under the same name
starts with a clean record. Concurrent writers to one record: the last one wins (requests are a
log for people and for the phase mapping; nothing is counted from them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from oraculum.store import KeyNotFound, ObjectStore

PREFIX = "uws"
LISTS = ("preprocessing", "iterations")
_SAFE_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

Request = Literal["CREATE", "RUN", "ABORT"]


class UwsRequest(BaseModel):
    """One phase request: CREATE (created in PENDING), RUN or ABORT."""

    phase: Request
    at: datetime
    by: str = Field(description="Name of the token's holder, or 'oraculum' for the facade's own limits.")
    iteration: int | None = Field(None, description="For an experiment's record: the iteration it was about.")
    reason: str = ""


class UwsRecord(BaseModel):
    """The facade's record of one resource (see the module docstring)."""

    list: Literal["preprocessing", "iterations"]
    name: str
    uid: str
    owner: str | None = None
    run_id: str | None = None
    execution_duration: int = Field(0, ge=0, description="Seconds a job may execute; 0 = unlimited.")
    destruction: datetime | None = None
    requests: list[UwsRequest] = Field(default_factory=list)

    def last(self, iteration: int | None = None) -> UwsRequest | None:
        """The latest request (about ``iteration``, for an experiment's record)."""
        found = [r for r in self.requests if r.iteration == iteration]
        return found[-1] if found else None

    def first_run(self, iteration: int | None = None) -> datetime | None:
        """When the job was first asked to run (created running counts)."""
        runs = [r.at for r in self.requests if r.iteration == iteration and r.phase == "RUN"]
        return runs[0] if runs else None

    @property
    def has_limits(self) -> bool:
        return self.execution_duration > 0 or self.destruction is not None


def _uid_part(uid: str) -> str:
    """The uid as a key segment (hashed when it could not be one as it is)."""
    if _SAFE_UID.match(uid or "") and ".." not in uid:
        return uid
    return "h-" + hashlib.sha256((uid or "").encode()).hexdigest()[:32]


def record_key(list_name: str, name: str, uid: str) -> str:
    if list_name not in LISTS:
        raise ValueError(f"unknown UWS job list {list_name!r}")
    return f"{PREFIX}/{list_name}/{name}/{_uid_part(uid)}.json"


def read_record(store: ObjectStore, list_name: str, name: str, uid: str) -> UwsRecord:
    """The record, or an empty one (a resource the facade has not touched)."""
    try:
        raw = store.get_bytes(record_key(list_name, name, uid))
    except KeyNotFound:
        return UwsRecord(list=list_name, name=name, uid=uid)  # type: ignore[arg-type]
    try:
        return UwsRecord.model_validate_json(raw)
    except ValueError:  # unreadable: start again rather than fail every request on this job
        return UwsRecord(list=list_name, name=name, uid=uid)  # type: ignore[arg-type]


def write_record(store: ObjectStore, record: UwsRecord) -> None:
    data = json.dumps(record.model_dump(mode="json"), indent=1) + "\n"
    store.put_bytes(record_key(record.list, record.name, record.uid), data.encode())


def delete_record(store: ObjectStore, list_name: str, name: str, uid: str) -> None:
    store.delete(record_key(list_name, name, uid))


def list_records(store: ObjectStore) -> Iterator[tuple[str, str, str]]:
    """(key, list, name) of every record in the store."""
    for info in store.list(f"{PREFIX}/"):
        parts = info.key.split("/")
        if len(parts) == 4 and parts[1] in LISTS and parts[3].endswith(".json"):
            yield info.key, parts[1], parts[2]


def read_key(store: ObjectStore, key: str) -> UwsRecord | None:
    try:
        return UwsRecord.model_validate_json(store.get_bytes(key))
    except (KeyNotFound, ValueError):
        return None
