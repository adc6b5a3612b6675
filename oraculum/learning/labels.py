"""Labels: every decision the oracle makes, as durable events in the object store.

Nothing a person did is ever lost. Each label change is an immutable :class:`LabelEvent` object
written to the store *before* anyone is told it was saved (one object per event: an S3 bucket has
no append, and separate objects never conflict between two writers). The current label of a
spectrum is a fold over its events in time order (:func:`current_labels`): the last ``set`` wins,
a ``clear`` removes it. Layout::

    experiments/<name>/labels/<iteration:05d>/<time_ns:020d>-<uuid>.json

Events carry both the spectrum id (stable, human-readable) and its global index in the pool.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from oraculum.store import KeyNotFound, ObjectStore

LabelSet = Literal["oracle", "estimation", "initial", "bulk"]


class LabelItem(BaseModel):
    """One spectrum's label in an event. ``label`` None with action ``clear`` removes it."""

    index: int = Field(ge=0, description="Global index of the spectrum in the pool dataset.")
    id: str = Field(description="Spectrum id.")
    label: str | None = Field(None, description="Class name, or 'unsure'.")
    shown_prediction: dict[str, float] | None = Field(
        None, description="Class probabilities shown to the oracle when labelling (None when blind)."
    )


class LabelEvent(BaseModel):
    """One change by one person (or the simulated oracle), possibly covering many spectra."""

    who: str
    when: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    iteration: int = Field(ge=0)
    action: Literal["set", "clear"] = "set"
    set: LabelSet = Field("oracle", description="Which sample the spectra belong to.")
    bulk: bool = Field(False, description="Labelled as a group (lasso selection).")
    comment: str | None = None
    items: list[LabelItem] = Field(min_length=1)


def labels_prefix(experiment: str) -> str:
    return f"experiments/{experiment}/labels/"


def append_event(store: ObjectStore, experiment: str, event: LabelEvent) -> str:
    """Write an event durably; returns its key. Keys sort in time order."""
    key = f"{labels_prefix(experiment)}{event.iteration:05d}/{time.time_ns():020d}-{uuid.uuid4().hex}.json"
    store.put_bytes(key, event.model_dump_json().encode())
    return key


def read_events(store: ObjectStore, experiment: str, iteration: int | None = None) -> list[LabelEvent]:
    """Events of one iteration (or all), in the order they were written."""
    prefix = labels_prefix(experiment) + (f"{iteration:05d}/" if iteration is not None else "")
    events = []
    for info in store.list(prefix):
        try:
            events.append(LabelEvent.model_validate_json(store.get_bytes(info.key)))
        except KeyNotFound:  # deleted between listing and reading
            continue
    events.sort(key=lambda event: (event.when, event.iteration))
    return events


class CurrentLabel(BaseModel):
    index: int
    id: str
    label: str
    set: LabelSet
    iteration: int


def current_labels(events: Iterable[LabelEvent]) -> dict[int, CurrentLabel]:
    """Global index -> its current label, folding events in order."""
    state: dict[int, CurrentLabel] = {}
    for event in events:
        for item in event.items:
            if event.action == "clear" or item.label is None:
                state.pop(item.index, None)
            else:
                state[item.index] = CurrentLabel(
                    index=item.index, id=item.id, label=item.label, set=event.set, iteration=event.iteration
                )
    return state


def read_label_csv(data: bytes, origin: str) -> dict[str, str]:
    """A label file: CSV with a header, an id column (``id``, ``filename`` or ``spectrum``) and a
    ``label`` column. Returns id -> label; ids are normalised like spectrum ids (no extension)."""
    from oraculum.spectra.archive import spectrum_id

    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    fields = [name.strip().lower() for name in reader.fieldnames or []]
    id_column = next((name for name in ("id", "filename", "spectrum", "key") if name in fields), None)
    if id_column is None or "label" not in fields:
        raise ValueError(f"{origin}: a label file needs columns id (or filename) and label; found {fields}")
    mapping = {}
    for row in reader:
        row = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
        mapping[spectrum_id(row[id_column])] = row["label"]
    return mapping
