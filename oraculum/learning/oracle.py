"""The simulated oracle: answers a batch from a file of known labels, exactly as the API would.

Backtests, CI and benchmarks need the loop to run without a person. This oracle reads
``iterations/<k>/batch.json`` (and ``batch-predictions.json`` for blind estimation items) and
writes one :class:`~oraculum.learning.labels.LabelEvent` per sample (``set`` ``oracle`` and
``estimation``), with ``who = "simulated-oracle"`` and the prediction that would have been shown
(none for blind estimation items), into the same durable event log the API writes.

Label files are CSV with a header, an id column (``id``, ``filename``, ``spectrum`` or ``key``)
and a ``label`` column (``oraculum synth`` writes one as ``labels.csv``). A file label becomes an
experiment class when the names agree ignoring case and the separators ``-``, ``_`` and space;
anything else (e.g. synthetic ``bad``, which ingestion rejects anyway) and spectra missing from
the file are answered ``unsure``, as a careful astronomer would.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from oraculum.learning.experiments import ExperimentError, iteration_key, read_json, read_reference
from oraculum.learning.labels import LabelEvent, LabelItem, append_event, current_labels, read_events, read_label_csv
from oraculum.manifests import ExperimentSpec
from oraculum.store import ObjectStore

__all__ = ["UNSURE", "WHO", "AnswerSummary", "SimulatedOracle", "load_label_file", "map_label"]

#: The label for "cannot tell": excluded from training and from estimates.
UNSURE = "unsure"
#: ``LabelEvent.who`` of every event this oracle writes.
WHO = "simulated-oracle"


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


def map_label(raw: str | None, class_names: Sequence[str]) -> str:
    """The experiment class a file label stands for, or :data:`UNSURE`."""
    if raw is None:
        return UNSURE
    lookup = {_norm(name): name for name in class_names}
    return lookup.get(_norm(raw), UNSURE)


def load_label_file(store: ObjectStore, reference: str, what: str = "oracle.labels") -> dict[str, str]:
    """id -> label from a label file given as a local path or a store key (ids without extension).

    Each id is also registered under its last path component, so a file listing
    ``spec-x.fits`` answers for a dataset whose ids carry a folder prefix, and vice versa.
    """
    data = read_reference(store, reference, what)
    try:
        mapping = read_label_csv(data, f"{what} ({reference})")
    except (UnicodeDecodeError, KeyError) as error:
        raise ExperimentError(f"{what} ({reference}): not a CSV label file: {error}") from None
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    if not mapping:
        raise ExperimentError(f"{what} ({reference}): the label file has no rows")
    out = dict(mapping)
    for key, label in mapping.items():
        out.setdefault(key.rsplit("/", 1)[-1], label)
    return out


@dataclass
class AnswerSummary:
    """What the oracle answered for one iteration."""

    iteration: int
    oracle: int = 0
    estimation: int = 0
    skipped: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    event_keys: list[str] = field(default_factory=list)


class SimulatedOracle:
    """Answers batches from known labels; see the module docstring."""

    def __init__(self, truth: Mapping[str, str], class_names: Sequence[str], who: str = WHO) -> None:
        self.class_names = list(class_names)
        self.who = who
        self._truth = {key: map_label(label, self.class_names) for key, label in truth.items()}

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, store: ObjectStore, labels: str | None = None) -> "SimulatedOracle":
        """The oracle of a spec with ``oracle.type: simulated`` (or any spec, given ``labels``)."""
        reference = labels or spec.oracle.labels
        if not reference:
            raise ExperimentError(
                "a simulated oracle needs a label file: set oracle.type: simulated and oracle.labels "
                "(CSV with columns id or filename, and label)"
            )
        return cls(load_label_file(store, reference, "oracle.labels"), spec.class_names)

    def label_of(self, spectrum_id: str) -> str:
        """The class of a spectrum, or :data:`UNSURE` if the file does not know it."""
        found = self._truth.get(spectrum_id)
        if found is None:
            found = self._truth.get(spectrum_id.rsplit("/", 1)[-1], UNSURE)
        return found

    def answer(self, store: ObjectStore, experiment: str, iteration: int) -> AnswerSummary:
        """Label every not-yet-labelled item of the iteration's batch (idempotent)."""
        batch = read_json(store, iteration_key(experiment, iteration, "batch"), f"batch of iteration {iteration}")
        try:
            hidden = read_json(store, iteration_key(experiment, iteration, "batch_predictions"))
        except ExperimentError:
            hidden = {}
        hidden_items = hidden.get("items", {}) if isinstance(hidden, dict) else {}
        done = current_labels(read_events(store, experiment, iteration))
        summary = AnswerSummary(iteration=iteration)
        counts: Counter[str] = Counter()
        by_set: dict[str, list[LabelItem]] = {"oracle": [], "estimation": []}
        for item in batch["items"]:
            index = int(item["index"])
            if index in done:
                summary.skipped += 1
                continue
            label = self.label_of(str(item["id"]))
            shown = item.get("probabilities")  # absent for blind estimation items: nothing shown
            by_set[item["set"]].append(LabelItem(index=index, id=str(item["id"]), label=label, shown_prediction=shown))
            counts[label] += 1
            if item["set"] == "estimation" and shown is None and str(index) not in hidden_items and batch.get("blind"):
                # a blind item must have its prediction stored for the API to reveal later
                raise ExperimentError(f"iteration {iteration}: blind estimation item {index} has no stored prediction")
        for set_name, items in by_set.items():
            if items:
                event = LabelEvent(who=self.who, iteration=iteration, set=set_name, items=items)  # type: ignore[arg-type]
                summary.event_keys.append(append_event(store, experiment, event))
        summary.oracle = len(by_set["oracle"])
        summary.estimation = len(by_set["estimation"])
        summary.labels = dict(sorted(counts.items()))
        return summary
