"""Evaluating an iteration: its estimation sample's labels -> ``iterations/<k>/metrics.json``.

Run at the start of iteration ``k + 1`` (or on its own, ``oraculum evaluate``), once the oracle has
labelled the estimation sample of iteration ``k``: the estimates and their intervals come from
:mod:`oraculum.learning.metrics`, the sample from ``estimation.json``
(:func:`~oraculum.learning.estimation_sample.sample_from_dict`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from oraculum.learning.estimation_sample import sample_from_dict
from oraculum.learning.experiments import ExperimentError, iteration_key, read_json, write_json
from oraculum.learning.labels import current_labels, read_events
from oraculum.learning.metrics import estimate_metrics
from oraculum.manifests import ExperimentSpec
from oraculum.store import ObjectStore

__all__ = ["evaluate_iteration"]


def evaluate_iteration(name: str, spec: ExperimentSpec, k: int, store: ObjectStore) -> dict[str, Any]:
    """Metrics of iteration ``k`` from its estimation sample's labels -> ``iterations/<k>/metrics.json``.

    The document holds the :class:`~oraculum.learning.metrics.Metrics` fields (``target_precision``
    with its interval, ``predicted_target_count``, ``estimated_target_count`` with its interval,
    per-class precision, and accuracy/recall when a stratified sample was drawn) plus the
    strategy, the labels so far per class, and the training-set size of the iteration's model.
    A cold-start iteration has no model and no estimate: ``estimable`` is false.
    """
    batch = read_json(store, iteration_key(name, k, "batch"), f"batch of iteration {k} of experiment {name!r}")
    try:
        run = read_json(store, iteration_key(name, k, "run"))
    except ExperimentError:
        run = {}
    all_events = [event for event in read_events(store, name) if event.iteration <= k]
    so_far = current_labels(all_events)
    per_class = Counter(label.label for label in so_far.values())
    per_set = Counter(label.set for label in so_far.values())
    doc: dict[str, Any] = {
        "experiment": name,
        "iteration": k,
        "strategy": batch.get("strategy"),
        "dataset": batch.get("dataset"),
        "training_labels": (run.get("counts") or {}).get("training"),
        "labels_so_far": dict(sorted(per_class.items())),
        "labels_so_far_by_set": dict(sorted(per_set.items())),
        "labels_total": len(so_far),
        "batch_labelled": sum(1 for item in batch["items"] if int(item["index"]) in so_far),
        "batch_size": len(batch["items"]),
    }
    if batch.get("cold_start"):
        doc.update(estimable=False, notes=["cold start: no model in this iteration, so nothing to estimate"])
    else:
        sample = sample_from_dict(read_json(store, iteration_key(name, k, "estimation"), f"estimation sample of iteration {k}"))
        classes = {c: i for i, c in enumerate(spec.class_names)}
        events = current_labels(read_events(store, name, k))
        wanted = set(sample.indices_to_label().tolist())
        truth = {i: classes[label.label] for i, label in events.items() if i in wanted and label.label in classes}
        metrics = estimate_metrics(sample, truth, spec.estimation.confidence, spec.estimation.method,
                                   dict(enumerate(spec.class_names)))
        doc.update(estimable=True, **metrics.model_dump(mode="json"))
        unsure = sum(1 for i, label in events.items() if i in wanted and label.label not in classes)
        if unsure:
            doc["notes"] = [*doc.get("notes", []), f"{unsure} estimation spectra labelled unsure: left out (assumed missing at random)"]
    write_json(store, iteration_key(name, k, "metrics"), doc)
    return doc
