"""The status of both custom resources: written by the operator and by ``oraculum run``, never by users.

Unlike the specs, a status parses tolerantly (unknown fields are ignored), so a status written by
a newer operator can still be read.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "BatchStatus",
    "ChildJob",
    "Condition",
    "EstimateStatus",
    "ExperimentPhase",
    "ExperimentStatus",
    "HistoryEntry",
    "PreprocessingJobStatus",
    "PreprocessingPhase",
    "StatusModel",
]


class StatusModel(BaseModel):
    """camelCase like the specs, but tolerant: a status written by a newer operator still parses."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


ExperimentPhase = Literal["Pending", "Training", "AwaitingLabels", "Succeeded", "Failed", "Suspended"]
PreprocessingPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class Condition(StatusModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Kind of condition, e.g. Progressing, Succeeded, Failed, Schedulable, SpecValid.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition, for machines.")
    message: str = Field("", description="What happened and what to do, for people.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="metadata.generation the condition was set from.")


class ChildJob(StatusModel):
    """A Kubernetes Job the resource started (named deterministically, so never duplicated)."""

    name: str = Field(description="Job name.")
    purpose: Literal["iterate", "answer", "evaluate", "preprocess"] = Field(
        description="iterate: train and choose a batch; answer: the simulated oracle labels it; evaluate: "
        "estimate performance from the labels; preprocess: the Indexed Job of a PreprocessingJob."
    )
    iteration: int | None = Field(None, description="Iteration the Job belongs to (experiments only).")
    state: Literal["Created", "Pending", "Running", "Succeeded", "Failed", "Suspended"] = Field(
        description="Created (asked for, not seen yet), Pending (waiting for a node), Running, Succeeded, Failed "
        "or Suspended."
    )
    failed_pods: int = Field(0, description="Pods of the Job that failed so far (retried up to backoffLimit).")


class BatchStatus(StatusModel):
    """The current oracle batch (oracle items plus estimation items)."""

    size: int = Field(0, description="Spectra to label in this iteration.")
    labelled: int = Field(0, description="Spectra of the batch labelled so far (any label, unsure included).")


class EstimateStatus(StatusModel):
    """The latest precision estimate of the predicted targets."""

    iteration: int = Field(description="Iteration the estimate belongs to.")
    value: float | None = Field(None, description="Estimated precision of the predicted targets.")
    low: float | None = Field(None, description="Lower bound of the confidence interval.")
    high: float | None = Field(None, description="Upper bound of the confidence interval.")
    summary: str = Field("", description="The estimate and interval as text (the Estimate column).")


class HistoryEntry(StatusModel):
    """What one finished iteration achieved."""

    iteration: int = Field(description="Iteration number (0 = the first).")
    labels: int = Field(0, description="Labels in the store after this iteration (oracle plus estimation).")
    estimate: float | None = Field(None, description="Estimated precision of the predicted targets.")
    low: float | None = Field(None, description="Lower bound of its confidence interval.")
    high: float | None = Field(None, description="Upper bound of its confidence interval.")
    predicted_targets: int | None = Field(None, description="Spectra the network predicts as targets.")
    durations: dict[str, float] = Field(default_factory=dict, description="Seconds per step of the iteration Job.")


class ExperimentStatus(StatusModel):
    """Where an ActiveLearningExperiment is; written only by its controller."""

    phase: ExperimentPhase = Field("Pending", description="Pending, Training, AwaitingLabels, Succeeded, Failed or Suspended.")
    iteration: int = Field(0, description="Current iteration (0 = the first).")
    observed_generation: int | None = Field(None, description="metadata.generation this status was computed from.")
    message: str = Field("", description="One line about what happens now.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    batch: BatchStatus | None = Field(None, description="The current batch, once the iteration chose it.")
    labels: int = Field(0, description="Labels in the store so far (oracle plus estimation).")
    estimate: EstimateStatus | None = Field(None, description="The latest estimate.")
    history: list[HistoryEntry] = Field(default_factory=list, description="One entry per evaluated iteration.")
    jobs: list[ChildJob] = Field(default_factory=list, description="Child Jobs of the current iteration.")


class PreprocessingJobStatus(StatusModel):
    """Where a PreprocessingJob is; written only by its controller."""

    phase: PreprocessingPhase = Field("Pending", description="Pending, Running, Succeeded, Failed or Suspended.")
    observed_generation: int | None = Field(None, description="metadata.generation this status was computed from.")
    message: str = Field("", description="One line about what happens now.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    shards: int = Field(0, description="Shards (pods of the Indexed Job) in total.")
    shards_done: int = Field(0, description="Shards written to the store.")
    processed: int = Field(0, description="Spectra stored in the dataset so far.")
    rejected: int = Field(0, description="Files rejected so far (see the dataset's rejected.jsonl).")
    dataset: str = Field("", description="The dataset being written.")
    jobs: list[ChildJob] = Field(default_factory=list, description="The Indexed Job.")
