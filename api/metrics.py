"""Prometheus metrics of the gateway (``GET /metrics``), one registry per application.

Requests are counted by method, route template (``/api/v1/experiments/{name}``, never the
concrete path, so the label set stays bounded) and status; latency is a histogram per route.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("oraculum_api_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r)
        self.latency = Histogram("oraculum_api_request_seconds", "Time to answer a request.", ["method", "route"],
                                 buckets=_BUCKETS, registry=r)
        self.label_events = Counter("oraculum_api_label_events", "Label events written to the store.", ["action", "bulk"],
                                    registry=r)
        self.labels_written = Counter("oraculum_api_labels_written", "Spectra labelled or cleared (items of events).",
                                      registry=r)
        self.label_write_seconds = Histogram("oraculum_api_label_write_seconds", "Label write, validation to answer.",
                                             buckets=_BUCKETS, registry=r)
        self.rebuilds = Counter("oraculum_api_label_cache_rebuilds", "Label caches rebuilt from the store.", registry=r)
        self.live_unavailable = Counter("oraculum_api_live_unavailable", "Operations that found Redis unreachable.",
                                        registry=r)
        self.event_streams = Gauge("oraculum_api_event_streams", "Open server-sent event streams.", registry=r)
        self.progress_reports = Counter("oraculum_api_progress_reports", "Progress reports from Jobs.", registry=r)
        self.rate_limited = Counter("oraculum_api_rate_limited", "Requests refused by a per-token rate limit (429).",
                                    ["kind"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: count and time every HTTP request by its route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    @staticmethod
    def _template(scope: dict[str, Any]) -> str:
        """The matched route's path template: the path with each path parameter's segment put back
        as ``{name}`` (the last matching segment first, so /iterations/1/labels/1 comes out right)."""
        if scope.get("endpoint") is None:
            return "unmatched"
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        segments = path.split("/")
        taken: set[int] = set()
        for name, value in reversed(list((scope.get("path_params") or {}).items())):
            for position in range(len(segments) - 1, -1, -1):
                if position not in taken and segments[position] == str(value):
                    segments[position] = "{" + name + "}"
                    taken.add(position)
                    break
        return "/".join(segments)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = self._template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status["code"])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
