"""A small Kubernetes API server emulator on top of kmock, for tests (no real cluster exists here).

kmock 0.8 serves HTTP, discovery and request parsing; it does not assign uid, resourceVersion or
generation, separate the status subresource, apply label selectors, reject conflicting writes,
validate against CRD schemas, or garbage-collect owned objects (see ../shared/TESTING.md). This
subclass adds exactly that, so the real kopf operator and the real ``kubectl`` run against
API semantics close enough to matter:

* create: uid, ``resourceVersion`` (one global counter), ``generation`` 1, ``creationTimestamp``,
  ``generateName``; 409 AlreadyExists; CRD schema validation (422 Invalid), defaulting and pruning
  (400 on unknown fields with ``fieldValidation=Strict``); status dropped for resources with a
  status subresource;
* update (PATCH merge, strategic-merge approximated as merge, JSON patch with ``test`` ops; PUT):
  a stale ``metadata.resourceVersion`` gives 409 Conflict, a failed JSON-patch test 422;
  ``/status`` changes only the status and the main resource never does; ``generation`` grows
  when anything but metadata and status changes; no-op writes keep the resourceVersion;
* delete: finalizers honoured (``deletionTimestamp``), then owner-reference garbage collection
  (Background and Foreground; Orphan, which is the API default for Jobs, keeps dependents);
* list and watch: namespace, ``labelSelector`` (equality and set-based) and ``fieldSelector``
  (``metadata.name``, ``metadata.namespace``); watches start from a given ``resourceVersion``
  by replaying the event log, so nothing is lost between a list and the watch that follows;
* CRDs created through the API become discoverable resources (``kubectl get ale`` works);
* fault injection (:meth:`ClusterEmulator.inject`) for 409/503 answers, stored or not.

What it does not emulate: admission webhooks, RBAC (the test checks the operator's requests
against the checked-in role instead), server-side apply, CEL validation rules, and any
controller. Tests play the Job controller by writing Job status (:meth:`ClusterEmulator.set_status`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import apps, rendering

from oraculum.control.crds import validation_schema

Resource = tuple[str, str, str]  # group, version, plural
Key = tuple[str, str, str, str | None, str]  # group, version, plural, namespace, name

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Route:
    group: str
    version: str
    plural: str | None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def resource(self) -> Resource:
        return (self.group, self.version, self.plural or "")


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return Route(group, version, None)
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                 "/".join(rest[2:]) or None)


# -- selectors ---------------------------------------------------------------------------------


def _split_selector(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``,
    ``a in (x,y)``, ``a notin (x,y)``, joined by commas (and)."""
    for term in _split_selector(selector or ""):
        if match := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    for term in _split_selector(selector or ""):
        negate = "!=" in term
        key, value = (part.strip() for part in term.replace("==", "=").replace("!=", "=").split("=", 1))
        actual: Any = obj
        for part in key.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value) == negate:
            return False
    return True


# -- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# -- schemas -----------------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: a missing property with a default gets it (objects that exist only)."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in list(value):
                value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def prune(schema: dict[str, Any], value: Any, path: str, unknown: list[str]) -> Any:
    """Drop fields the schema does not know (as the API server does); record their paths."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and "properties" in schema:
        for name in list(value):
            if name not in schema["properties"]:
                unknown.append(f"{path}.{name}")
                del value[name]
            else:
                value[name] = prune(schema["properties"][name], value[name], f"{path}.{name}", unknown)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for name in list(value):
            value[name] = prune(schema["additionalProperties"], value[name], f"{path}.{name}", unknown)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(schema["items"], item, f"{path}[{i}]", unknown) for i, item in enumerate(value)]
    return value


@dataclass
class Fault:
    method: str
    plural: str
    subresource: str | None
    status: int
    times: int
    store: bool
    hits: int = 0


@dataclass
class _Watcher:
    route: Route
    label_selector: str | None
    field_selector: str | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class ClusterEmulator(kmock.KubernetesEmulator):
    """See the module docstring. Use inside ``async with ClusterEmulator() as api, kmock.Server(api):``."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store: dict[Key, dict[str, Any]] = {}
        self.resource_version = 0
        self.log: list[tuple[int, Resource, str, dict[str, Any] | None, dict[str, Any]]] = []
        self.watchers: list[_Watcher] = []
        self.schemas: dict[Resource, dict[str, Any]] = {}
        self.status_subresources: set[Resource] = {("batch", "v1", "jobs"), ("", "v1", "pods")}
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str, dict[str, str], str]] = []  # method, path, query, user agent
        self.resources.load_bundled()

    # -- helpers for tests --------------------------------------------------------------------

    def inject(self, method: str, plural: str, status: int, subresource: str | None = None, times: int = 1,
               store: bool = False) -> Fault:
        """Answer the next ``times`` matching requests with ``status``; ``store`` still applies them."""
        fault = Fault(method.upper(), plural, subresource, status, times, store)
        self.faults.append(fault)
        return fault

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.store.get((*resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: Resource, namespace: str | None = None, labels: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(obj) for (g, v, p, ns, _), obj in sorted(self.store.items(), key=lambda kv: str(kv[0]))
                if (g, v, p) == resource and (namespace is None or ns == namespace)
                and label_selector_matches(labels, obj.get("metadata", {}).get("labels") or {})]

    def set_status(self, resource: Resource, namespace: str | None, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write an object's status as its controller would (the tests' Job controller)."""
        current = self.store[(*resource, namespace, name)]
        new = copy.deepcopy(current)
        new["status"] = copy.deepcopy(status)
        return self._commit(Route(*resource, namespace, name, "status"), current, new)

    def patch(self, resource: Resource, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the main resource (what ``kubectl patch --type merge`` does)."""
        current = self.store[(*resource, namespace, name)]
        return self._commit(Route(*resource, namespace, name), current, merge_patch(current, patch))

    def remove(self, resource: Resource, namespace: str | None, name: str, propagation: str = "Background") -> None:
        self._delete(Route(*resource, namespace, name), propagation)

    # -- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        agent = (request.headers or {}).get("User-Agent", "")
        self.calls.append((str(request.method.value if hasattr(request.method, "value") else request.method),
                           request.url.path, dict(request.params or {}), agent))
        route = parse_route(request.url.path)
        if route is None or route.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery, /version: kmock's own
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        params = dict(request.params or {})
        fault = next((f for f in self.faults if f.method == method and f.plural == route.plural
                      and f.subresource == route.subresource and f.hits < f.times), None)
        if fault is not None:
            fault.hits += 1
            if fault.store:
                try:
                    self._dispatch(method, route, request, params)
                except kmock.KubernetesError:
                    pass
            reason = {409: "Conflict", 503: "ServiceUnavailable", 500: "InternalError"}.get(fault.status, "Injected")
            raise kmock.KubernetesError(status=fault.status, reason=reason, message=f"injected {fault.status} for a test")
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(route, request, params)
        status, payload = self._dispatch(method, route, request, params)
        if method == "GET" and "as=Table" in (request.headers or {}).get("Accept", "") and route.subresource is None:
            payload = self._table(route, payload["items"] if route.name is None else [payload])
        return aiohttp.web.json_response(payload, status=status)

    def _dispatch(self, method: str, route: Route, request: rendering.Request, params: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and route.name is None:
            return 200, self._list(route, params)
        if method == "GET":
            return 200, self._fetch(route)
        if method == "POST" and route.name is None:
            return 201, self._create(route, request.data, params)
        if method == "PUT" and route.name is not None:
            return 200, self._replace(route, request.data, params)
        if method == "PATCH" and route.name is not None:
            content_type = (request.headers or {}).get("Content-Type", "").split(";")[0].strip()
            return 200, self._patch(route, request.data, content_type, params)
        if method == "DELETE" and route.name is not None:
            return 200, self._delete(route, (request.data or {}).get("propagationPolicy") if isinstance(request.data, dict) else params.get("propagationPolicy"))
        if method == "DELETE":
            for obj in self._matching(route, params):
                self._delete(Route(route.group, route.version, route.plural, obj["metadata"].get("namespace"),
                                   obj["metadata"]["name"]), None)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise kmock.KubernetesError(status=405, reason="MethodNotAllowed", message=f"{method} is not supported here")

    # -- verbs --------------------------------------------------------------------------------

    def _info(self, route: Route) -> Any:
        for resource in self.resources:
            if (resource.group, resource.version, resource.plural) == route.resource:
                return self.resources[resource]
        raise kmock.KubernetesError(status=404, reason="NotFound",
                                    message=f"the server could not find the requested resource ({route.plural})")

    def _key(self, route: Route, name: str | None = None) -> Key:
        return (*route.resource, route.namespace, name or route.name or "")

    def _missing(self, route: Route) -> kmock.KubernetesError:
        return kmock.KubernetesError(status=404, reason="NotFound", message=f'{route.plural} "{route.name}" not found',
                                     details={"name": route.name, "kind": route.plural})

    def _matching(self, route: Route, params: dict[str, str]) -> list[dict[str, Any]]:
        return [obj for key, obj in self.store.items()
                if key[:3] == route.resource and (route.namespace is None or key[3] == route.namespace)
                and label_selector_matches(params.get("labelSelector"), obj.get("metadata", {}).get("labels") or {})
                and field_selector_matches(params.get("fieldSelector"), obj)]

    def _list(self, route: Route, params: dict[str, str]) -> dict[str, Any]:
        info = self._info(route)
        api_version = f"{route.group}/{route.version}" if route.group else route.version
        return {"apiVersion": api_version, "kind": f"{info.kind or route.plural}List",
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": copy.deepcopy(self._matching(route, params))}

    async def _serve_version(self, request: rendering.Request) -> Any:
        """Discovery as the API server gives it: subresources carry no short names or categories
        (kmock repeats them, which makes ``kubectl get ale`` warn about an ambiguity)."""
        payload = await super()._serve_version(request)
        for entry in payload.get("resources", []):
            if "/" in entry["name"]:
                entry["shortNames"], entry["categories"] = [], []
        return payload

    def _table(self, route: Route, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The server-side Table kubectl asks for, with a CRD's additionalPrinterColumns."""
        columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        paths: list[tuple[str, str]] = []
        for crd in self.store.values():
            spec = crd.get("spec", {})
            if crd.get("kind") == "CustomResourceDefinition" and (spec.get("group"), spec.get("names", {}).get("plural")) == (route.group, route.plural):
                for version in spec.get("versions", []):
                    if version["name"] == route.version:
                        for column in version.get("additionalPrinterColumns", []):
                            columns.append({"name": column["name"], "type": "string" if column["type"] == "date" else column["type"],
                                            "format": "", "description": column.get("description", ""),
                                            "priority": column.get("priority", 0)})
                            paths.append((column["jsonPath"], column["type"]))
        if not paths:
            columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
            paths.append((".metadata.creationTimestamp", "date"))
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for json_path, kind in paths:
                value: Any = obj
                for part in json_path.strip(".").split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if kind == "date" and isinstance(value, str):
                    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(value.replace("Z", "+00:00"))).total_seconds()
                    value = f"{int(seconds)}s" if seconds < 120 else f"{int(seconds // 60)}m"
                cells.append(value)
            rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                    "metadata": obj["metadata"]}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.resource_version)},
                "columnDefinitions": columns, "rows": rows}

    def _fetch(self, route: Route) -> dict[str, Any]:
        obj = self.store.get(self._key(route))
        if obj is None:
            raise self._missing(route)
        return copy.deepcopy(obj)

    def _invalid(self, kind: str, name: str, causes: list[str]) -> kmock.KubernetesError:
        return kmock.KubernetesError(
            status=422, reason="Invalid", message=f'{kind} "{name}" is invalid: ' + "; ".join(causes),
            details={"name": name, "kind": kind, "causes": [{"message": c} for c in causes]})

    def _validate(self, route: Route, obj: dict[str, Any], params: dict[str, str]) -> None:
        schema = self.schemas.get(route.resource)
        if schema is None:
            return
        import jsonschema

        unknown: list[str] = []
        for part in ("spec", "status"):
            if part in obj and part in schema.get("properties", {}):
                obj[part] = prune(schema["properties"][part], obj[part], part, unknown)
                obj[part] = apply_defaults(schema["properties"][part], obj[part])
        if unknown and params.get("fieldValidation") == "Strict":
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                        message="strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
        validator = jsonschema.Draft4Validator(validation_schema(schema))
        causes = [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
                  for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))]
        if causes:
            raise self._invalid(obj.get("kind", route.plural or ""), obj["metadata"].get("name", ""), causes)

    def _create(self, route: Route, body: Any, params: dict[str, str]) -> dict[str, Any]:
        info = self._info(route)
        if not isinstance(body, dict):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta.get("name") or ""
        if not _DNS_SUBDOMAIN.match(name):
            raise self._invalid(info.kind or "", name, [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required"])
        if info.namespaced:
            meta["namespace"] = route.namespace or meta.get("namespace") or "default"
        route = Route(route.group, route.version, route.plural, meta.get("namespace"), name)
        if self._key(route) in self.store:
            raise kmock.KubernetesError(status=409, reason="AlreadyExists",
                                        message=f'{route.plural}.{route.group} "{name}" already exists',
                                        details={"name": name, "group": route.group, "kind": route.plural})
        obj["apiVersion"] = f"{route.group}/{route.version}" if route.group else route.version
        obj["kind"] = info.kind or obj.get("kind")
        if route.resource in self.status_subresources or "status" in info.subresources:
            obj.pop("status", None)
        self._validate(route, obj, params)
        self.resource_version += 1
        meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self.resource_version), generation=1,
                    creationTimestamp=_now())
        meta.pop("generateName", None) if meta.get("name") else None
        self.store[self._key(route)] = obj
        self._emit(route.resource, "ADDED", None, obj)
        if route.resource == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(obj)
        return copy.deepcopy(obj)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            resource = (spec["group"], version["name"], names["plural"])
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names["kind"], singular=names.get("singular"), namespaced=spec.get("scope") == "Namespaced",
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
                shortnames=set(names.get("shortNames", [])), categories=set(names.get("categories", [])),
                subresources={"status"} if "status" in (version.get("subresources") or {}) else set(),
            )
            if "status" in (version.get("subresources") or {}):
                self.status_subresources.add(resource)
            self.schemas[resource] = version["schema"]["openAPIV3Schema"]
        crd["status"] = {"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"}],
                         "acceptedNames": names, "storedVersions": [v["name"] for v in spec["versions"]]}

    def _replace(self, route: Route, body: Any, params: dict[str, str]) -> dict[str, Any]:
        current = self.store.get(self._key(route))
        if current is None:
            raise self._missing(route)
        if not isinstance(body, dict):
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="the body must be a JSON object")
        given = (body.get("metadata") or {}).get("resourceVersion")
        if given and given != current["metadata"]["resourceVersion"]:
            raise self._conflict(route)
        return self._commit(route, current, copy.deepcopy(body), params)

    def _conflict(self, route: Route) -> kmock.KubernetesError:
        return kmock.KubernetesError(
            status=409, reason="Conflict",
            message=f'Operation cannot be fulfilled on {route.plural}.{route.group} "{route.name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
            details={"name": route.name, "kind": route.plural})

    def _patch(self, route: Route, body: Any, content_type: str, params: dict[str, str]) -> dict[str, Any]:
        current = self.store.get(self._key(route))
        if current is None:
            raise self._missing(route)
        if content_type == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(current, body)
            except jsonpatch.JsonPatchTestFailed as error:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=f"the test operation failed: {error}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error)) from None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise kmock.KubernetesError(status=400, reason="BadRequest", message="a merge patch must be an object")
            given = (body.get("metadata") or {}).get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise self._conflict(route)
            new = merge_patch(current, body)
        else:
            raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType",
                                        message=f"the emulator does not support {content_type or 'this'} patches")
        return self._commit(route, current, new, params)

    def _commit(self, route: Route, current: dict[str, Any], new: dict[str, Any],
                params: dict[str, str] | None = None) -> dict[str, Any]:
        has_status = route.resource in self.status_subresources
        if route.subresource == "status":
            new = {**copy.deepcopy(current), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif has_status:
            new["status"] = copy.deepcopy(current.get("status"))
            if new["status"] is None:
                new.pop("status")
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion"):
            if fixed in current["metadata"]:
                meta[fixed] = current["metadata"][fixed]
        if current["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = current["metadata"]["deletionTimestamp"]
        new["apiVersion"], new["kind"] = current.get("apiVersion"), current.get("kind")
        self._validate(route, new, params or {})
        if new == current:
            return copy.deepcopy(current)  # a no-op write changes nothing, not even the resourceVersion
        body_changed = {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")}
        if body_changed:
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self.resource_version += 1
        meta["resourceVersion"] = str(self.resource_version)
        key = self._key(route)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.store[key] = new
            self._delete(route, None, force=True)
            return copy.deepcopy(new)
        self.store[key] = new
        self._emit(route.resource, "MODIFIED", current, new)
        if route.resource == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(new)
        return copy.deepcopy(new)

    def _delete(self, route: Route, propagation: str | None, force: bool = False) -> dict[str, Any]:
        key = self._key(route)
        obj = self.store.get(key)
        if obj is None:
            raise self._missing(route)
        if propagation is None:
            propagation = "Orphan" if route.resource == ("batch", "v1", "jobs") else "Background"
        meta = obj["metadata"]
        if meta.get("finalizers") and not force:
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = _now()
                self.resource_version += 1
                new["metadata"]["resourceVersion"] = str(self.resource_version)
                self.store[key] = new
                self._emit(route.resource, "MODIFIED", obj, new)
                return copy.deepcopy(new)
            return copy.deepcopy(obj)
        del self.store[key]
        self.resource_version += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.resource_version)
        self._emit(route.resource, "DELETED", obj, gone)
        if propagation != "Orphan":
            self._collect_garbage(meta.get("uid"))
        return gone

    def _collect_garbage(self, uid: str | None) -> None:
        """Delete objects none of whose owners exist any more (Kubernetes' garbage collector)."""
        if not uid:
            return
        alive = {obj["metadata"].get("uid") for obj in self.store.values()}
        for key, obj in list(self.store.items()):
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if owners and any(o.get("uid") == uid for o in owners) and not any(o.get("uid") in alive for o in owners):
                if key in self.store:
                    self._delete(Route(*key), "Background")

    # -- watching -----------------------------------------------------------------------------

    def _emit(self, resource: Resource, kind: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.log.append((self.resource_version, resource, kind, copy.deepcopy(old), copy.deepcopy(new)))
        for watcher in self.watchers:
            event = self._event_for(watcher, resource, kind, old, new)
            if event is not None:
                watcher.queue.put_nowait(event)

    def _event_for(self, watcher: _Watcher, resource: Resource, kind: str, old: dict[str, Any] | None,
                   new: dict[str, Any]) -> dict[str, Any] | None:
        if resource != watcher.route.resource:
            return None
        namespace = new.get("metadata", {}).get("namespace")
        if watcher.route.namespace is not None and namespace != watcher.route.namespace:
            return None
        if watcher.route.name is not None and new.get("metadata", {}).get("name") != watcher.route.name:
            return None

        def matches(obj: dict[str, Any] | None) -> bool:
            return obj is not None and label_selector_matches(
                watcher.label_selector, obj.get("metadata", {}).get("labels") or {}) and field_selector_matches(
                watcher.field_selector, obj)

        now, before = matches(new), matches(old)
        if kind == "MODIFIED" and now and not before:
            kind = "ADDED"
        elif kind == "MODIFIED" and before and not now:
            kind = "DELETED"
        elif not now and not (kind == "DELETED" and before):
            return None
        return {"type": kind, "object": copy.deepcopy(new)}

    async def _watch(self, route: Route, request: rendering.Request, params: dict[str, str]) -> aiohttp.web.StreamResponse:
        self._info(route)
        watcher = _Watcher(route, params.get("labelSelector"), params.get("fieldSelector"))
        since = params.get("resourceVersion")
        if since and since not in ("0",) and since.isdigit():
            initial = [e for rv, res, kind, old, new in self.log if rv > int(since)
                       if (e := self._event_for(watcher, res, kind, old, new)) is not None]
        else:
            initial = [{"type": "ADDED", "object": copy.deepcopy(obj)} for obj in self._matching(route, params)
                       if route.name is None or obj["metadata"]["name"] == route.name]
        self.watchers.append(watcher)  # before the first await: no event can fall in between
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        try:
            await response.prepare(request._raw_request)
            for event in initial:
                await response.write(json.dumps(event).encode() + b"\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(watcher)
        return response
