"""What the object store says about a resource: the inputs of the reconcile functions.

The store is the durable truth (DESIGN.md): an iteration is done when its ``run.json`` is there,
labelled when every batch item has a label event, evaluated when ``metrics.json`` covers the whole
batch. The driver (:mod:`oraculum.control.driver`), for the operator and ``oraculum run`` alike,
calls these readers and hands the result to the pure functions of :mod:`oraculum.control.reconcile`.

Also here: the *labels-submitted* signal of the embedded default. On a cluster the API sets the
annotation ``oraculum.dev/labels-submitted: "<k>"`` on the experiment; with no cluster it writes
``experiments/<name>/signals/labels-submitted-<k>.json`` instead (:func:`submit_labels`), after
the labels themselves are stored. Either way the reconcile advances only when the store holds
a label for every item of the batch.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from oraculum.spectra.datasets import index_key
from oraculum.learning.experiments import experiment_prefix, iteration_key
from oraculum.learning.labels import current_labels, read_events
from oraculum.manifests import ExperimentSpec
from oraculum.control.decision import DatasetObservation, ExperimentObservation, IterationObservation
from oraculum.store import KeyNotFound, ObjectStore

__all__ = [
    "labels_submitted_key",
    "observe_dataset",
    "observe_experiment",
    "observe_iteration",
    "submit_labels",
    "submitted_iteration",
]

_SIGNAL = re.compile(r"labels-submitted-(\d+)\.json$")


def labels_submitted_key(experiment: str, iteration: int) -> str:
    return f"{experiment_prefix(experiment)}/signals/labels-submitted-{int(iteration)}.json"


def submit_labels(store: ObjectStore, experiment: str, iteration: int, who: str = "oracle") -> str:
    """Signal that the oracle finished iteration ``iteration`` (call after the labels are stored)."""
    key = labels_submitted_key(experiment, iteration)
    document = {"iteration": int(iteration), "who": who, "when": datetime.now(timezone.utc).isoformat()}
    store.put_bytes(key, (json.dumps(document) + "\n").encode())
    return key


def submitted_iteration(store: ObjectStore, experiment: str) -> int | None:
    """The highest iteration with a labels-submitted signal object, or None."""
    found = [int(m.group(1)) for info in store.list(f"{experiment_prefix(experiment)}/signals/")
             if (m := _SIGNAL.search(info.key))]
    return max(found) if found else None


def _json(store: ObjectStore, key: str) -> Any | None:
    try:
        return json.loads(store.get_bytes(key))
    except KeyNotFound:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def observe_iteration(store: ObjectStore, experiment: str, iteration: int) -> IterationObservation:
    """Batch progress and results of one iteration, from the store."""
    run = _json(store, iteration_key(experiment, iteration, "run"))
    if run is None:
        return IterationObservation(iteration=iteration)
    batch = _json(store, iteration_key(experiment, iteration, "batch")) or {"items": []}
    wanted = {int(item["index"]) for item in batch.get("items", [])}
    labelled = current_labels(read_events(store, experiment, iteration))
    done = sum(1 for index in wanted if index in labelled)
    metrics = _json(store, iteration_key(experiment, iteration, "metrics"))
    evaluated = bool(
        metrics is not None
        and int(metrics.get("batch_size", -1)) == len(wanted)
        and int(metrics.get("batch_labelled", -1)) >= len(wanted)
    )
    precision = (metrics or {}).get("target_precision") or {}
    durations = {str(k): float(v) for k, v in (run.get("durations_s") or {}).items() if _number(v) is not None}
    return IterationObservation(
        iteration=iteration,
        finished=True,
        batch_size=len(wanted),
        labelled=done,
        evaluated=evaluated,
        estimate=_number(precision.get("estimate")) if evaluated else None,
        low=_number(precision.get("low")) if evaluated else None,
        high=_number(precision.get("high")) if evaluated else None,
        predicted_targets=int(metrics["predicted_target_count"]) if evaluated and metrics.get(
            "predicted_target_count") is not None else None,
        labels_total=int(metrics["labels_total"]) if evaluated and metrics.get("labels_total") is not None else None,
        durations=durations,
    )


def observe_experiment(
    store: ObjectStore, experiment: str, spec: ExperimentSpec | None, iteration: int,
    annotation_submitted: int | None = None,
) -> ExperimentObservation:
    """Everything the experiment's reconcile needs from the store, for ``iteration``.

    ``spec`` None (an invalid spec) skips the dataset check. Labels so far are the labels of the
    previous evaluated iteration plus this iteration's, so no reconcile reads every event ever.
    """
    dataset_ready, dataset_message = True, ""
    if spec is not None and not store.exists(index_key(spec.dataset)):
        dataset_ready = False
        partial = any(True for _ in store.list(f"datasets/{spec.dataset}/"))
        dataset_message = (
            f"dataset {spec.dataset!r} is incomplete in {store.url}: its PreprocessingJob is still running (or failed)"
            if partial else
            f"dataset {spec.dataset!r} is not in {store.url}: apply a PreprocessingJob with dataset: {spec.dataset}"
        )
    current = observe_iteration(store, experiment, iteration)
    before = 0
    if iteration > 0:
        previous = _json(store, iteration_key(experiment, iteration - 1, "metrics"))
        before = int((previous or {}).get("labels_total") or 0)
    total = current.labels_total if current.labels_total is not None else before + current.labelled
    file_signal = submitted_iteration(store, experiment)
    signals = [value for value in (annotation_submitted, file_signal) if value is not None]
    return ExperimentObservation(
        current=current,
        dataset_ready=dataset_ready,
        dataset_message=dataset_message,
        labels_total=total,
        labels_submitted=max(signals) if signals else None,
    )


def observe_dataset(store: ObjectStore, dataset: str) -> DatasetObservation:
    """Shards done, spectra processed and files rejected so far, from the shard manifests."""
    prefix = f"datasets/{dataset}/"
    complete = store.exists(index_key(dataset))
    if complete:
        index = _json(store, index_key(dataset)) or {}
        return DatasetObservation(
            dataset=dataset, complete=True, shards_done=len(index.get("shards", [])),
            processed=int(index.get("count", 0)), rejected=int(index.get("rejected", 0)),
        )
    shards = processed = rejected = 0
    for info in store.list(prefix):
        name = info.key[len(prefix):]
        if re.fullmatch(r"part-\d+\.json", name):
            manifest = _json(store, info.key) or {}
            shards += 1
            processed += int(manifest.get("count", 0))
            rejected += int(manifest.get("rejected", 0))
    return DatasetObservation(dataset=dataset, complete=False, shards_done=shards, processed=processed, rejected=rejected)
