"""The labelled set of an iteration: what the network trains on, and what must never be chosen again.

Iteration ``k`` of an experiment trains on the initial labels (``spec.initial``, possibly spectra
of another dataset on the same wavelength grid) plus the oracle's current labels from the
iterations before ``k`` (estimation labels only with ``estimation.useForTraining``; ``unsure``
never). Every pool spectrum with any label, in any set, is excluded from selection, so the oracle
is never asked twice. :func:`load_labelled_set` reads all of that from the store into a
:class:`LabelledSet`; nothing else passes between iterations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from oraculum.learning.experiments import ExperimentError, read_reference
from oraculum.learning.labels import CurrentLabel, current_labels, read_events, read_label_csv
from oraculum.learning.oracle import UNSURE, map_label
from oraculum.manifests import ExperimentSpec
from oraculum.settings import Settings
from oraculum.spectra.datasets import Dataset, DatasetError
from oraculum.store import ObjectStore

__all__ = ["ID_BATCH", "LabelledSet", "load_labelled_set"]

#: Rows per step when only the ids of a dataset are streamed (no flux): 4x the scoring step.
ID_BATCH = 16_384


@dataclass
class LabelledSet:
    """The training set of one iteration and the spectra that must never be chosen again.

    Attributes:
        pool_indices, pool_labels: pool spectra to train on (global index, class id).
        external_flux, external_labels: labelled spectra from another dataset (``initial.dataset``).
        exclude: every pool index with any current label (any set, ``unsure`` included).
        known: pool index -> current label name (for the candidate catalogue's ``label`` column).
        notes: what was dropped and why.
    """

    pool_indices: np.ndarray
    pool_labels: np.ndarray
    external_flux: np.ndarray | None
    external_labels: np.ndarray
    exclude: np.ndarray
    known: dict[int, str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Spectra to train on."""
        return int(self.pool_indices.size + self.external_labels.size)


def _find_ids(dataset: Dataset, wanted: Iterable[str]) -> dict[str, int]:
    """Global indices of the ``wanted`` ids, by streaming the dataset's ids (no flux)."""
    remaining = set(wanted)
    found: dict[str, int] = {}
    if not remaining:
        return found
    for batch in dataset.iter_batches(ID_BATCH, flux=False):
        for sid, index in zip(batch.ids.tolist(), batch.index.tolist()):
            if sid in remaining:
                found[sid] = int(index)
        if len(found) == len(remaining):
            break
    return found


def _initial_labels(
    store: ObjectStore, spec: ExperimentSpec, pool: Dataset, settings: Settings | None
) -> tuple[dict[int, str], np.ndarray | None, list[str], list[str]]:
    """(pool index -> class, external flux, external labels, notes) of ``spec.initial``."""
    assert spec.initial is not None
    raw = read_reference(store, spec.initial.labels, "initial.labels")
    try:
        mapping = read_label_csv(raw, f"initial.labels ({spec.initial.labels})")
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    notes: list[str] = []
    labels = {sid: map_label(label, spec.class_names) for sid, label in mapping.items()}
    unknown = Counter(mapping[sid] for sid, label in labels.items() if label == UNSURE)
    if unknown:
        notes.append(f"initial labels not among the classes (left out): {dict(unknown)}")
    labels = {sid: label for sid, label in labels.items() if label != UNSURE}
    if not labels:
        raise ExperimentError(f"initial.labels ({spec.initial.labels}): no label names one of the classes {spec.class_names}")
    external = spec.initial.dataset not in (None, spec.dataset)
    source = pool
    if external:
        try:
            source = Dataset.open(store, spec.initial.dataset, settings.cache_dir if settings else None)  # type: ignore[arg-type]
        except DatasetError as error:
            raise ExperimentError(f"initial.dataset: {error}") from None
        if source.grid != pool.grid:
            raise ExperimentError(
                f"initial.dataset {source.name!r} has a different wavelength grid than the pool {pool.name!r}: "
                "preprocess both with the same grid parameters"
            )
    found = _find_ids(source, labels)
    missing = len(labels) - len(found)
    if not found:
        raise ExperimentError(
            f"initial.labels ({spec.initial.labels}): none of its {len(labels)} ids is in dataset {source.name!r}"
        )
    if missing:
        notes.append(f"{missing} initial label id(s) not found in dataset {source.name!r} (left out)")
    if not external:
        return {found[sid]: labels[sid] for sid in sorted(found)}, None, [], notes
    ids = sorted(found, key=lambda sid: found[sid])
    batch = source.take([found[sid] for sid in ids])
    return {}, batch.flux, [labels[sid] for sid in ids], notes


def load_labelled_set(
    store: ObjectStore, name: str, spec: ExperimentSpec, k: int, pool: Dataset, settings: Settings | None = None
) -> LabelledSet:
    """The training set of iteration ``k`` and the spectra excluded from selection (see module doc)."""
    classes = {c: i for i, c in enumerate(spec.class_names)}
    notes: list[str] = []
    train: dict[int, str] = {}
    known: dict[int, str] = {}
    external_flux, external_labels = None, []
    counts: dict[str, Counter[str]] = {"initial": Counter(), "oracle": Counter(), "estimation": Counter(), "unsure": Counter()}
    if spec.initial is not None:
        initial, external_flux, external_labels, initial_notes = _initial_labels(store, spec, pool, settings)
        notes += initial_notes
        train.update(initial)
        known.update(initial)
        counts["initial"].update(list(initial.values()) + list(external_labels))
    events = [event for event in read_events(store, name) if event.iteration < k]
    current: dict[int, CurrentLabel] = current_labels(events)
    for index, label in sorted(current.items()):
        if index >= len(pool):
            raise ExperimentError(f"label for spectrum {index} ({label.id}) is outside dataset {pool.name!r}: wrong dataset?")
        known[index] = label.label
        usable = label.label in classes and (label.set != "estimation" or spec.estimation.use_for_training)
        if label.label not in classes:
            counts["unsure"][label.label] += 1
            train.pop(index, None)  # an oracle's 'unsure' overrides an initial label
        elif usable:
            train[index] = label.label
            counts["estimation" if label.set == "estimation" else "oracle"][label.label] += 1
        else:
            counts["estimation"][label.label] += 1
            train.pop(index, None)
    indices = np.array(sorted(train), dtype=np.int64)
    return LabelledSet(
        pool_indices=indices,
        pool_labels=np.array([classes[train[i]] for i in indices.tolist()], dtype=np.int64),
        external_flux=external_flux,
        external_labels=np.array([classes[c] for c in external_labels], dtype=np.int64),
        exclude=np.array(sorted(known), dtype=np.int64),
        known=known,
        counts={key: dict(sorted(value.items())) for key, value in counts.items()},
        notes=notes,
    )

