"""A small real world for the API tests: synthetic archive -> dataset -> an experiment with two
real iterations, made once per test session by the real engine (nothing hand-written).

* ``oraculum.ingest.pipeline.run_preprocess`` on ``synthetic:240?seed=3`` (real LAMOST-format FITS in the
  store under archive/, with labels.csv) -> dataset ``pool``;
* ``run_iteration`` k=0 (a cold start: random batch, no TensorFlow), answered by the simulated
  oracle, then k=1 (the tiny CNN trained on those labels, the pool scored, a batch chosen by
  entropy plus a blind estimation sample, a map, candidates as CSV and VOTable; metrics of k=0).

The experiment ``exp`` is registered in the local registry with the status the local runner
would have written (AwaitingLabels, iteration 1). Tests copy the folder (or upload it to the moto
S3 server) so each gets a pristine store. Every figure from this world comes from synthetic data.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from oraculum.manifests import parse_manifest
from oraculum.control.registry import LocalRegistry, status_key
from oraculum.store import LocalStore, ObjectStore

EXPERIMENT = "exp"
DATASET = "pool"
SOURCE = "synthetic:240?seed=3"
CLASSES = [
    {"name": "absorption", "hotkey": "1"},
    {"name": "emission", "hotkey": "2", "target": True},
    {"name": "double-peak", "hotkey": "3", "target": True},
]


def manifest(name: str = EXPERIMENT, **spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": DATASET,
        "classes": CLASSES,
        "model": {"preset": "tiny", "epochs": 8, "patience": 3, "batchSize": 32},
        "acquisition": {"strategy": "entropy", "batchSize": 12, "initialBatchSize": 40},
        "estimation": {"size": 6, "stratifiedSize": 6, "blind": True},
        "stopping": {"maxIterations": 5},
        "oracle": {"type": "human"},
    }
    spec.update(spec_changes)
    return {"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment",
            "metadata": {"name": name}, "spec": spec}


def ppj_manifest(name: str = "pool-job", dataset: str = "other", count: int = 20) -> dict[str, Any]:
    return {"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob", "metadata": {"name": name},
            "spec": {"source": {"synthetic": {"count": count, "seed": 5}}, "dataset": dataset}}


def status_document(iteration: int = 1) -> dict[str, Any]:
    return {"phase": "AwaitingLabels", "iteration": iteration, "observedGeneration": 1,
            "message": f"waiting for the oracle to label iteration {iteration}",
            "batch": {"size": 18, "labelled": 0}, "conditions": [], "history": [{"iteration": 0, "labels": 40}]}


def register(store: ObjectStore, name: str = EXPERIMENT, iteration: int = 1) -> None:
    registry = LocalRegistry(store)
    registry.apply(parse_manifest(manifest(name)), managed_by="api")
    store.put_bytes(status_key("activelearningexperiments", name), json.dumps(
        {"kind": "ActiveLearningExperiment", "name": name, "uid": "local-test", "generation": 1,
         "specHash": "", "status": status_document(iteration)}).encode())


def build(root: Path) -> dict[str, Any]:
    """Make the world under ``root`` (a local store); returns timings."""
    from oraculum.ingest.pipeline import run_preprocess
    from oraculum.learning.iteration import run_iteration
    from oraculum.manifests import ExperimentSpec
    from oraculum.learning.oracle import SimulatedOracle
    from oraculum.spectra.preprocessing import PreprocessingParameters
    from oraculum.settings import Settings

    store = LocalStore(root)
    settings = Settings(store=str(root))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    run_preprocess(SOURCE, DATASET, PreprocessingParameters(), settings, workers=1)
    timings["preprocess"] = time.perf_counter() - started
    spec = ExperimentSpec.model_validate(manifest()["spec"])
    started = time.perf_counter()
    run_iteration(EXPERIMENT, spec, 0, store, settings)
    labels = "archive/synthetic-240-s3/labels.csv"
    SimulatedOracle.from_spec(spec, store, labels).answer(store, EXPERIMENT, 0)
    timings["iteration0"] = time.perf_counter() - started
    started = time.perf_counter()
    run_iteration(EXPERIMENT, spec, 1, store, settings)
    timings["iteration1"] = time.perf_counter() - started
    register(store)
    return timings


def copy_world(source: Path, target: Path) -> LocalStore:
    shutil.copytree(source, target)
    return LocalStore(target)


def upload(source: Path, store: ObjectStore) -> None:
    """Copy every object of the local world into another store (the moto S3 server)."""
    local = LocalStore(source)
    for info in local.list(""):
        store.put_bytes(info.key, local.get_bytes(info.key))


if __name__ == "__main__":  # python tests/support/api_world.py /tmp/world: time the build
    import sys

    print(build(Path(sys.argv[1])))
