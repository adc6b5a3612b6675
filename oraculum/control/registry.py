"""The local runner's resources: what ``kubectl apply`` and the API server are on a cluster.

On one machine there is no API server to hold PreprocessingJobs and ActiveLearningExperiments,
so the store holds them, beside the status the local runner already keeps::

    local/<plural>/<name>/manifest.json   the desired state: the applied manifest (written by the
                                          API gateway, or by `oraculum run` for its files)
    local/<plural>/<name>/status.json     the runner's status (see oraculum.control.runner)

A resource exists while its ``manifest.json`` does. ``managedBy`` says which process runs its Jobs:
``oraculum-run`` (an `oraculum run FILE` process, which applies its files here) or ``api`` (the
gateway's embedded runner, ``oraculum serve api --run-jobs``). Either way the runner re-reads the
desired state, so a suspend, resume or delete through the API reaches whichever process runs it.
Deleting a resource removes only these two objects: like deleting a custom resource on a cluster,
it leaves the datasets, models and label events in the store.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from oraculum.manifests import Manifest, ManifestError, parse_manifest
from oraculum.store import KeyNotFound, ObjectStore

__all__ = [
    "KIND_PLURALS",
    "AlreadyExists",
    "LocalRegistry",
    "RegisteredResource",
    "manifest_key",
    "spec_hash",
    "status_key",
]

KIND_PLURALS = {"ActiveLearningExperiment": "activelearningexperiments", "PreprocessingJob": "preprocessingjobs"}


class AlreadyExists(Exception):
    """A resource of that kind and name is registered already (a cluster's 409 AlreadyExists)."""


def manifest_key(plural: str, name: str) -> str:
    return f"local/{plural}/{name}/manifest.json"


def status_key(plural: str, name: str) -> str:
    return f"local/{plural}/{name}/status.json"


def spec_hash(raw_spec: dict[str, Any]) -> str:
    """The runner's identity of a spec: a change means a new generation."""
    return hashlib.sha256(json.dumps(raw_spec, sort_keys=True).encode()).hexdigest()


def normalised(manifest: Manifest) -> dict[str, Any]:
    """The manifest as stored: camelCase, defaults filled in, no nulls."""
    return manifest.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass
class RegisteredResource:
    """One resource of the registry: desired manifest plus the runner's status."""

    kind: str
    name: str
    manifest: dict[str, Any]
    uid: str
    created: str
    managed_by: str
    status: dict[str, Any] = field(default_factory=dict)
    generation: int = 1

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.manifest.get("spec") or {})

    def parsed(self) -> Manifest:
        return parse_manifest(self.manifest, f"local/{KIND_PLURALS[self.kind]}/{self.name}/manifest.json")


class LocalRegistry:
    """Create, read, change and delete the local runner's resources in a store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def plural(kind: str) -> str:
        try:
            return KIND_PLURALS[kind]
        except KeyError:
            raise ManifestError(f"kind {kind!r} is not one of {', '.join(KIND_PLURALS)}") from None

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(key))
        except KeyNotFound:
            return None

    def get(self, kind: str, name: str) -> RegisteredResource | None:
        plural = self.plural(kind)
        document = self._read(manifest_key(plural, name))
        if document is None:
            return None
        saved = self._read(status_key(plural, name)) or {}
        return RegisteredResource(
            kind=kind, name=name, manifest=document["manifest"], uid=document.get("uid", ""),
            created=document.get("created", ""), managed_by=document.get("managedBy", "api"),
            status=saved.get("status") or {}, generation=int(saved.get("generation") or 1),
        )

    def names(self, kind: str) -> list[str]:
        prefix = f"local/{self.plural(kind)}/"
        found = []
        for info in self.store.list(prefix):
            parts = info.key[len(prefix):].split("/")
            if len(parts) == 2 and parts[1] == "manifest.json":
                found.append(parts[0])
        return sorted(found)

    def list(self, kind: str) -> list[RegisteredResource]:
        resources = [self.get(kind, name) for name in self.names(kind)]
        return [r for r in resources if r is not None]

    def apply(self, manifest: Manifest, managed_by: str = "api", create_only: bool = False) -> RegisteredResource:
        """Register ``manifest`` (replacing the spec of an existing resource unless ``create_only``)."""
        kind, name = manifest.kind, manifest.metadata.name
        key = manifest_key(self.plural(kind), name)
        existing = self._read(key)
        if existing is not None and create_only:
            raise AlreadyExists(f"{kind} {name!r} exists already")
        document = {
            "manifest": normalised(manifest),
            "uid": (existing or {}).get("uid") or f"local-{uuid.uuid4()}",
            "created": (existing or {}).get("created") or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "managedBy": managed_by,
        }
        if existing is None or existing.get("manifest") != document["manifest"] or existing.get("managedBy") != document["managedBy"]:
            self.store.put_bytes(key, (json.dumps(document, indent=2) + "\n").encode())
        found = self.get(kind, name)
        assert found is not None
        return found

    def set_suspend(self, kind: str, name: str, suspend: bool) -> RegisteredResource | None:
        """Change ``spec.suspend``; None when there is no such resource."""
        resource = self.get(kind, name)
        if resource is None:
            return None
        manifest = dict(resource.manifest)
        manifest["spec"] = {**resource.spec, "suspend": bool(suspend)}
        return self.apply(parse_manifest(manifest, f"{kind} {name}"), managed_by=resource.managed_by)

    def delete(self, kind: str, name: str) -> bool:
        """Remove the resource (its manifest and status); False when there was none."""
        plural = self.plural(kind)
        existed = self.store.exists(manifest_key(plural, name))
        self.store.delete(manifest_key(plural, name))
        self.store.delete(status_key(plural, name))
        return existed
