"""Reading reconcile inputs from a real (local) store: batch progress, evaluation, signals, datasets."""

from __future__ import annotations

from pathlib import Path

from oraculum.learning.experiments import iteration_key, write_json
from oraculum.learning.labels import LabelEvent, LabelItem, append_event
from oraculum.manifests import ExperimentSpec
from oraculum.control.observe import observe_dataset, observe_experiment, observe_iteration, submit_labels, submitted_iteration
from oraculum.store import LocalStore

SPEC = ExperimentSpec.model_validate({"dataset": "pool", "classes": [{"name": "a"}, {"name": "b", "target": True}]})


def batch(store: LocalStore, k: int, size: int = 4) -> None:
    items = [{"index": 10 * k + i, "id": f"s{10 * k + i}", "set": "oracle"} for i in range(size)]
    write_json(store, iteration_key("exp", k, "batch"), {"items": items})
    write_json(store, iteration_key("exp", k, "run"), {"durations_s": {"train": 2.5}})


def label(store: LocalStore, k: int, indices: list[int], value: str | None = "a", action: str = "set") -> None:
    items = [LabelItem(index=i, id=f"s{i}", label=value) for i in indices]
    append_event(store, "exp", LabelEvent(who="t", iteration=k, action=action, items=items))  # type: ignore[arg-type]


def test_iteration_progress_follows_the_label_events(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert observe_iteration(store, "exp", 0).finished is False
    batch(store, 0)
    seen = observe_iteration(store, "exp", 0)
    assert (seen.finished, seen.batch_size, seen.labelled, seen.labels_complete) == (True, 4, 0, False)
    assert seen.durations == {"train": 2.5}
    label(store, 0, [0, 1, 2, 99])  # 99 is not in the batch
    label(store, 0, [1], None, action="clear")  # an undo
    assert observe_iteration(store, "exp", 0).labelled == 2
    label(store, 0, [1, 3], "unsure")  # "cannot tell" is an answer too
    assert observe_iteration(store, "exp", 0).labels_complete
    assert not observe_iteration(store, "exp", 0).evaluated
    write_json(store, iteration_key("exp", 0, "metrics"), {"batch_size": 4, "batch_labelled": 3, "labels_total": 4})
    assert not observe_iteration(store, "exp", 0).evaluated  # computed before the batch was complete
    write_json(store, iteration_key("exp", 0, "metrics"), {
        "batch_size": 4, "batch_labelled": 4, "labels_total": 5, "predicted_target_count": 7,
        "target_precision": {"estimate": 0.75, "low": 0.3, "high": 0.95}})
    seen = observe_iteration(store, "exp", 0)
    assert seen.evaluated and (seen.estimate, seen.low, seen.high, seen.predicted_targets, seen.labels_total) == (0.75, 0.3, 0.95, 7, 5)


def test_experiment_observation_dataset_labels_and_signal(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    missing = observe_experiment(store, "exp", SPEC, 0)
    assert not missing.dataset_ready and "apply a PreprocessingJob with dataset: pool" in missing.dataset_message
    store.put_bytes("datasets/pool/part-00000.json", b"{}")
    partial = observe_experiment(store, "exp", SPEC, 0)
    assert not partial.dataset_ready and "incomplete" in partial.dataset_message
    store.put_bytes("datasets/pool/index.json", b"{}")
    write_json(store, iteration_key("exp", 0, "metrics"), {"labels_total": 30})
    batch(store, 1)
    label(store, 1, [10, 11])
    seen = observe_experiment(store, "exp", SPEC, 1, annotation_submitted=None)
    assert seen.dataset_ready and seen.labels_total == 32 and seen.labels_submitted is None
    submit_labels(store, "exp", 0)
    assert submitted_iteration(store, "exp") == 0
    assert observe_experiment(store, "exp", SPEC, 1, annotation_submitted=1).labels_submitted == 1
    submit_labels(store, "exp", 1)
    assert observe_experiment(store, "exp", SPEC, 1).labels_submitted == 1


def test_dataset_observation_counts_shard_manifests(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert observe_dataset(store, "d").shards_done == 0
    write_json(store, "datasets/d/part-00000.json", {"count": 90, "rejected": 2})
    write_json(store, "datasets/d/part-00001.json", {"count": 80, "rejected": 1})
    partial = observe_dataset(store, "d")
    assert (partial.complete, partial.shards_done, partial.processed, partial.rejected) == (False, 2, 170, 3)
    write_json(store, "datasets/d/index.json", {"count": 250, "rejected": 4, "shards": [{}, {}, {}]})
    done = observe_dataset(store, "d")
    assert (done.complete, done.shards_done, done.processed, done.rejected) == (True, 3, 250, 4)
