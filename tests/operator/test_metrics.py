"""The operator's Prometheus metrics: served on a port (``ORACULUM_OPERATOR_METRICS_PORT``), counting
what a cluster operator alerts on, and the chart's side (the port on the Deployment, a Service, and
a ServiceMonitor when ``operator.metrics.serviceMonitor.enabled``)."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oraculum.operator.main import OperatorConfig
from tests.deploy.test_chart import by_kind, helm, one, render, values_file  # noqa: F401 (helm: a fixture)
from tests.operator.test_operator import dataset_ready, experiment
from tests.support.operator_harness import ALE, cluster


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of the metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, found), v in samples.items() if n == name and set(labels.items()) <= found)


@pytest.mark.asyncio
async def test_metrics_count_reconciles_errors_job_outcomes_and_iteration_durations(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        dataset_ready(c.store)
        c.kubelet.policy = lambda job: "fail" if job["metadata"]["name"] == "bad-iter-0" else "succeed"
        c.api.inject("PATCH", "activelearningexperiments", 500, subresource="status", times=1)
        async with c.operator(poll_interval=0.2, operator_config=OperatorConfig(metrics_port=0)) as reconciler:
            port = reconciler.metrics.port
            assert port
            c.create(ALE, "exp", experiment(stopping={"maxIterations": 2}))
            c.create(ALE, "bad", experiment())
            await c.wait_phase(ALE, "exp", "Succeeded", timeout=30)
            await c.wait_phase(ALE, "bad", "Failed")
            await asyncio.sleep(0.3)
            samples = await asyncio.to_thread(scrape, port)
    kind = "ActiveLearningExperiment"
    assert value(samples, "oraculum_operator_reconciles_total", kind=kind, result="ok") >= 10
    assert value(samples, "oraculum_operator_reconcile_errors_total", kind=kind, error="ApiError") == 1
    assert value(samples, "oraculum_operator_reconciles_total", kind=kind, result="error") == 1
    assert value(samples, "oraculum_operator_reconcile_seconds_count", kind=kind) >= 10
    for purpose in ("iterate", "answer", "evaluate"):  # each once per iteration, counted once
        assert value(samples, "oraculum_operator_job_outcomes_total", purpose=purpose, outcome="succeeded") == 2
    assert value(samples, "oraculum_operator_job_outcomes_total", purpose="iterate", outcome="failed") == 1
    assert value(samples, "oraculum_operator_iteration_duration_seconds_count", step="train") == 2
    assert value(samples, "oraculum_operator_iteration_duration_seconds_sum", step="total") == pytest.approx(4.0)
    assert value(samples, "oraculum_operator_resources", kind=kind, phase="Succeeded") == 1
    assert value(samples, "oraculum_operator_resources", kind=kind, phase="Failed") == 1
    assert value(samples, "oraculum_operator_resources", kind=kind, phase="Training") == 0


def test_no_metrics_port_serves_nothing() -> None:
    assert OperatorConfig().metrics_port is None  # the chart sets it; tests and `oraculum operator` by hand do not


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_chart_exposes_the_metrics_port_and_a_service_monitor_on_request(helm: Path, tmp_path: Path) -> None:
    import kubernetes_validate

    from tests.deploy.test_chart import KUBE_VERSIONS

    docs = render(helm, values_file(tmp_path, {}))
    deployment = one(docs, "Deployment", "-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = _env(container)
    assert OperatorConfig.model_validate({"metrics_port": env["ORACULUM_OPERATOR_METRICS_PORT"]}).metrics_port == 8081
    service = one(docs, "Service", "-operator")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not by_kind(docs, "ServiceMonitor")  # off by default: the Prometheus Operator's CRD may be missing

    docs = render(helm, values_file(tmp_path, {"operator": {"metrics": {"port": 9102, "serviceMonitor": {
        "enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}}}}}))
    (monitor,) = by_kind(docs, "ServiceMonitor")
    service = one(docs, "Service", "-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    # only the operator's Service is selected, not the API's
    others = [d for d in by_kind(docs, "Service") if d is not service]
    assert not any(monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items() for d in others)
    deployment = one(docs, "Deployment", "-operator")
    assert _env(deployment["spec"]["template"]["spec"]["containers"][0])["ORACULUM_OPERATOR_METRICS_PORT"] == "9102"
    for doc in (service, deployment):
        kubernetes_validate.validate(doc, KUBE_VERSIONS[1], strict=True)

    docs = render(helm, values_file(tmp_path, {"operator": {"metrics": {"enabled": False,
                                                                       "serviceMonitor": {"enabled": True}}}}))
    assert not by_kind(docs, "ServiceMonitor") and not [d for d in by_kind(docs, "Service") if
                                                         d["metadata"]["name"].endswith("-operator")]
    assert "ORACULUM_OPERATOR_METRICS_PORT" not in _env(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]
                                                        ["containers"][0])
