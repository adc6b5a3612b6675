"""Where an experiment lives in the object store, and small helpers to read and write it.

Layout (see DESIGN.md; ``k`` is the iteration number, not zero-padded)::

    experiments/<name>/iterations/<k>/model.keras          the trained network (none in a cold start)
    experiments/<name>/iterations/<k>/scores.parquet       one row per pool spectrum (oraculum.learning.scores)
    experiments/<name>/iterations/<k>/batch.json           what the oracle labels (oracle + estimation items)
    experiments/<name>/iterations/<k>/batch-predictions.json  predictions hidden from the oracle (blind estimation)
    experiments/<name>/iterations/<k>/estimation.json      the estimation sample and its sampling frame
    experiments/<name>/iterations/<k>/map.json             2-D maps (PCA, t-SNE, UMAP) of the batch
    experiments/<name>/iterations/<k>/candidates.csv       spectra predicted as target classes
    experiments/<name>/iterations/<k>/candidates.vot       the same as a VOTable (TOPCAT)
    experiments/<name>/iterations/<k>/metrics.json         estimates with intervals, after labelling
    experiments/<name>/iterations/<k>/run.json             checksums, spec, seeds, versions, durations
    experiments/<name>/labels/...                          label events (oraculum.learning.labels)

Everything here is plain data access: no TensorFlow, Kubernetes or web code.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from oraculum.manifests import ActiveLearningExperiment, ExperimentSpec, ManifestError, load_manifests
from oraculum.store import KeyNotFound, ObjectStore

__all__ = [
    "ARTIFACTS",
    "ExperimentError",
    "experiment_prefix",
    "iteration_key",
    "iteration_prefix",
    "list_iterations",
    "load_experiment",
    "read_json",
    "read_reference",
    "select_experiment",
    "write_json",
]

#: File names of an iteration's artifacts.
ARTIFACTS = {
    "model": "model.keras",
    "scores": "scores.parquet",
    "batch": "batch.json",
    "batch_predictions": "batch-predictions.json",
    "estimation": "estimation.json",
    "map": "map.json",
    "candidates_csv": "candidates.csv",
    "candidates_vot": "candidates.vot",
    "metrics": "metrics.json",
    "run": "run.json",
}


class ExperimentError(Exception):
    """An experiment cannot run as asked; the message says what is missing and how to fix it."""


def experiment_prefix(name: str) -> str:
    """``experiments/<name>`` (no trailing slash)."""
    if not name or "/" in name or name in (".", ".."):
        raise ExperimentError(f"invalid experiment name {name!r}")
    return f"experiments/{name}"


def iteration_prefix(name: str, k: int) -> str:
    """``experiments/<name>/iterations/<k>`` (no trailing slash)."""
    if int(k) < 0:
        raise ExperimentError(f"iteration must be non-negative, got {k}")
    return f"{experiment_prefix(name)}/iterations/{int(k)}"


def iteration_key(name: str, k: int, artifact: str) -> str:
    """Key of one artifact (a name from :data:`ARTIFACTS` or a file name) of iteration ``k``."""
    return f"{iteration_prefix(name, k)}/{ARTIFACTS.get(artifact, artifact)}"


def list_iterations(store: ObjectStore, name: str) -> list[int]:
    """Iterations that have a batch (i.e. that ran), ascending."""
    found = set()
    prefix = f"{experiment_prefix(name)}/iterations/"
    for info in store.list(prefix):
        parts = info.key[len(prefix):].split("/")
        if len(parts) == 2 and parts[1] == ARTIFACTS["batch"] and parts[0].isdigit():
            found.add(int(parts[0]))
    return sorted(found)


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(store: ObjectStore, key: str, value: Any) -> None:
    """Write ``value`` as indented JSON (NaN written as null)."""
    store.put_bytes(key, (json.dumps(json_safe(value), indent=2, sort_keys=False) + "\n").encode())


def read_json(store: ObjectStore, key: str, what: str | None = None) -> Any:
    """Parse a JSON object; :class:`ExperimentError` naming ``what`` if it is missing."""
    try:
        return json.loads(store.get_bytes(key))
    except KeyNotFound:
        raise ExperimentError(f"{what or key} not found: no object {key!r} in {store.url}") from None


def read_reference(store: ObjectStore, reference: str, what: str) -> bytes:
    """A file named in a manifest: a key in the store, or a local path (absolute paths and
    ``file://`` URLs are local only; a relative name is looked up in the store first).

    ``what`` names the manifest field in the error (e.g. ``oracle.labels``).
    """
    if reference.startswith("file://"):
        reference = reference[len("file://"):]
    path = Path(os.path.expanduser(reference))
    if not path.is_absolute():
        try:
            return store.get_bytes(reference)
        except (KeyNotFound, ValueError):
            pass
    if path.is_file():
        return path.read_bytes()
    raise ExperimentError(
        f"{what}: {reference!r} not found, neither as a key in the store {store.url} nor as a local file"
    )


def select_experiment(manifests: list[Any], name: str | None = None, origin: str = "manifest") -> tuple[str, ExperimentSpec]:
    """The ActiveLearningExperiment among ``manifests`` (by ``metadata.name`` if several)."""
    experiments = [m for m in manifests if isinstance(m, ActiveLearningExperiment)]
    if not experiments:
        raise ExperimentError(f"{origin}: no ActiveLearningExperiment in the file")
    if name is not None:
        chosen = [m for m in experiments if m.metadata.name == name]
        if not chosen:
            names = ", ".join(m.metadata.name for m in experiments)
            raise ExperimentError(f"{origin}: no ActiveLearningExperiment named {name!r} (found: {names})")
        return name, chosen[0].spec
    if len(experiments) > 1:
        names = ", ".join(m.metadata.name for m in experiments)
        raise ExperimentError(f"{origin}: several ActiveLearningExperiments ({names}); choose one with --name")
    return experiments[0].metadata.name, experiments[0].spec


def load_experiment(path: str | os.PathLike[str], name: str | None = None) -> tuple[str, ExperimentSpec]:
    """Read a manifest file and pick its experiment; :class:`ManifestError` or
    :class:`ExperimentError` with the file name otherwise."""
    manifests = load_manifests(path)
    return select_experiment(manifests, name, str(path))


__all__ += ["ManifestError"]
