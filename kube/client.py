"""A small asynchronous Kubernetes API client for the operator's own requests.

kopf watches and dispatches; the reconciler creates Jobs, lists them, writes status and posts
Events itself. These few verbs need no generated client: plain JSON over aiohttp, authenticated
with the same :class:`kopf.ConnectionInfo` kopf logs in with (service account in a cluster,
kubeconfig outside one, or a test server). Every request goes through :meth:`KubeClient.request`,
which is also where the RBAC test reads which verbs and resources the operator uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from oraculum import __version__

log = logging.getLogger("oraculum.operator")

USER_AGENT = f"oraculum-operator/{__version__}"


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP code, ``reason`` its Status reason."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """``/api/v1/...`` or ``/apis/<group>/<version>/...`` for a resource (and object)."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


#: kind -> (apiVersion, plural) of every kind the operator creates, reads or changes.
KINDS: dict[str, tuple[str, str]] = {
    "ActiveLearningExperiment": ("oraculum.dev/v1alpha1", "activelearningexperiments"),
    "PreprocessingJob": ("oraculum.dev/v1alpha1", "preprocessingjobs"),
    "Job": ("batch/v1", "jobs"),
    "ConfigMap": ("v1", "configmaps"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
}


class KubeClient:
    """JSON requests to the API server; raises :class:`ApiError` on any non-2xx answer."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo], user_agent: str = USER_AGENT) -> None:
        self._login = login
        self._user_agent = user_agent  # the API gateway reuses this client under its own name
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            info = self._info = self._login()
            ssl: Any = info.as_ssl_context() if info.server.startswith("https") else False
            if info.insecure:
                ssl = False
            headers = {"User-Agent": self._user_agent, **info.as_http_headers()}
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/") + "/", headers=headers,
                connector=aiohttp.TCPConnector(ssl=ssl), timeout=aiohttp.ClientTimeout(total=60),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url: str, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        for attempt in (1, 2):
            session = await self._open()
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            async with session.request(method, url.lstrip("/"), data=data, params=params, headers=headers) as response:
                text = await response.text()
                if response.status == 401 and attempt == 1:  # rotated token: log in again
                    await self.close()
                    continue
                if response.status >= 400:
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = {}
                    raise ApiError(response.status, payload.get("reason") or response.reason or "",
                                   payload.get("message") or text[:300], method, url)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    # -- verbs ------------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        api_version, plural = KINDS[kind]
        try:
            return await self.request("GET", path(api_version, plural, namespace, name))
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def list(self, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        api_version, plural = KINDS[kind]
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        result = await self.request("GET", path(api_version, plural, namespace), params=params)
        return list((result or {}).get("items") or [])

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create an object; False when it already exists (409: a retry, or a restarted operator)."""
        api_version, plural = KINDS[obj["kind"]]
        try:
            await self.request("POST", path(api_version, plural, obj["metadata"].get("namespace")), obj)
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete in the background (dependents are collected); a missing object is fine."""
        api_version, plural = KINDS[kind]
        try:
            await self.request("DELETE", path(api_version, plural, namespace, name),
                               {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
        except ApiError as error:
            if not error.not_found:
                raise

    async def merge_patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
                          subresource: str | None = None) -> dict[str, Any]:
        api_version, plural = KINDS[kind]
        return await self.request("PATCH", path(api_version, plural, namespace, name, subresource), patch,
                                  content_type="application/merge-patch+json")

    async def replace_status(self, kind: str, namespace: str | None, name: str, resource_version: str,
                             status: dict[str, Any]) -> dict[str, Any]:
        """Write the whole status, only if the object is still at ``resource_version`` (else 409).

        Optimistic concurrency: the status was computed from that version; if the spec or an
        annotation changed since, the caller must look again rather than overwrite.
        """
        patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.merge_patch(kind, namespace, name, patch, subresource="status")

    async def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``involved`` (shown by ``kubectl describe``); failures only logged."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'oraculum')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"), "name": meta.get("name"),
                "namespace": namespace, "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": "oraculum-operator"},
            "reportingComponent": "oraculum.dev/operator",
            "reportingInstance": "oraculum-operator",
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }
        try:
            await self.request("POST", path("v1", "events", namespace), event)
        except (ApiError, aiohttp.ClientError) as error:  # an Event is advice; never fail a reconcile on it
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), error)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
