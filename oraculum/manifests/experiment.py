"""The spec of an ``ActiveLearningExperiment``: one active-learning campaign over a pool dataset.

The classes the oracle assigns (at least one a target), an optional labelled set to start from,
the network, how the oracle batch is chosen, the performance-estimation sample, when to stop and
who answers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from oraculum.manifests.common import NAME_PATTERN, ResourcesSpec, SpecModel, cel_rule, cel_rules

__all__ = [
    "COMPOSITION_SHARES",
    "AcquisitionSpec",
    "ClassSpec",
    "EstimationSpec",
    "ExperimentSpec",
    "InitialLabelsSpec",
    "ModelSpec",
    "OracleSpec",
    "PlateauSpec",
    "StoppingSpec",
]


class ClassSpec(SpecModel):
    """One class the oracle can assign."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$", description="Class name.")
    hotkey: str | None = Field(
        None, pattern=r"^[0-9a-tv-y]$", max_length=1,
        description="Dashboard key for this class (a digit or letter; u and z are reserved for unsure and undo).",
    )
    target: bool = Field(False, description="Whether this is a class the campaign is looking for (e.g. emission).")


class InitialLabelsSpec(SpecModel):
    """A labelled set to start from, instead of random labels in iteration 0."""

    labels: str = Field(
        min_length=1,
        description="CSV with columns id,label (label = class name) in the object store (key) or a local path.",
    )
    dataset: str | None = Field(
        None, pattern=NAME_PATTERN,
        description="Dataset holding the labelled spectra, when not the pool (e.g. a high-resolution archive).",
    )


class ModelSpec(SpecModel):
    """The network and how it is trained."""

    preset: Literal["podsztavek2020", "tiny"] = Field(
        "podsztavek2020",
        description="podsztavek2020: the published 1-D CNN (Conv 64-64/128-128/256-256, dense 512-512, dropout 0.5); "
        "tiny: a narrow version for demos and tests.",
    )
    epochs: int = Field(50, ge=1, le=10_000, description="Maximum training epochs (early stopping may end sooner).")
    batch_size: int = Field(64, ge=1, le=65_536, description="Training mini-batch size.")
    learning_rate: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    patience: int = Field(5, ge=1, le=1000, description="Early-stopping patience in epochs, on validation loss.")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="Weight classes by inverse frequency (handles rare targets) or not."
    )
    seed: int = Field(0, ge=0, description="Seed for weights, data order, sampling: same seed, same iteration.")


#: The reasons a spectrum can be in the oracle batch, and what each share of ``composition`` means
#: (each key's description in the CRD, so ``kubectl explain`` shows it).
COMPOSITION_SHARES: dict[str, str] = {
    "uncertainty": "Share of the batch taken from the top of the uncertainty ranking (the strategy).",
    "diversity": "Share chosen for diversity: k-means over the network's embedding of the next most uncertain "
    "candidates, the most uncertain member of each cluster.",
    "random": "Share drawn uniformly at random from the unlabelled pool (keeps the training set from drifting).",
}
_SHARES_SUM_TO_ONE = "composition shares must sum to 1"
#: How far from 1 the shares may sum (floating-point rounding of e.g. 0.7 + 0.2 + 0.1).
_SHARES_TOLERANCE = 1e-6
Share = Annotated[float, Field(ge=0, le=1)]
#: The sum of the shares as CEL (an absent share counts 0).
_TOTAL = " + ".join(f"(has(self.{key}) ? self.{key} : 0.0)" for key in COMPOSITION_SHARES)


class AcquisitionSpec(SpecModel):
    """How the oracle batch is chosen."""

    strategy: Literal["entropy", "margin", "least-confidence", "bald", "random"] = Field(
        "entropy", description="Uncertainty measure (entropy is the published method; bald uses MC dropout)."
    )
    batch_size: int = Field(100, ge=1, le=100_000, description="Spectra the oracle labels per iteration.")
    composition: dict[Literal["uncertainty", "diversity", "random"], Share] = Field(
        default_factory=lambda: {"uncertainty": 1.0},
        description="Shares of the batch by reason, each in [0, 1] and summing to 1, e.g. "
        "{uncertainty: 0.8, random: 0.2}; diversity = k-means over the network's embedding of the top candidates.",
        json_schema_extra={
            "x-key-descriptions": COMPOSITION_SHARES,
            **cel_rules(cel_rule(f"{_TOTAL} >= {1 - _SHARES_TOLERANCE!r} && {_TOTAL} <= {1 + _SHARES_TOLERANCE!r}",
                                 _SHARES_SUM_TO_ONE)),
        },
    )
    mc_samples: int = Field(20, ge=2, le=1000, description="Monte-Carlo dropout passes (strategy bald).")
    initial_batch_size: int | None = Field(
        None, ge=1, le=100_000,
        description="Random spectra labelled in iteration 0 when there is no initial labelled set (default batchSize).",
    )

    @field_validator("composition")
    @classmethod
    def _shares_sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if abs(sum(value.values()) - 1.0) > _SHARES_TOLERANCE:
            raise ValueError(f"{_SHARES_SUM_TO_ONE}, they sum to {sum(value.values()):g}")
        return value


class EstimationSpec(SpecModel):
    """The performance-estimation sample labelled alongside the oracle batch."""

    size: int = Field(30, ge=0, le=100_000, description="Random spectra predicted as targets to label (estimates precision).")
    stratified_size: int = Field(
        0, ge=0, le=100_000, description="Extra stratified sample over all predicted classes (accuracy, recall)."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    method: Literal["wilson", "clopper-pearson"] = Field("wilson", description="Binomial interval method.")
    blind: bool = Field(True, description="Hide the network's prediction from the oracle for estimation items.")
    use_for_training: bool = Field(
        False, description="Also train on estimation labels (biases later estimates; off by default)."
    )


class PlateauSpec(SpecModel):
    """Stop when the estimate stops improving."""

    iterations: int = Field(3, ge=1, le=1000, description="Consecutive iterations without improvement.")
    tolerance: float = Field(0.01, ge=0, le=1, description="Smallest change of the estimate that counts as improvement.")


class StoppingSpec(SpecModel):
    """When the loop ends (whichever comes first)."""

    max_iterations: int = Field(10, ge=1, le=10_000, description="Iterations to run at most.")
    label_budget: int | None = Field(None, ge=1, description="Total labels at most (oracle plus estimation).")
    plateau: PlateauSpec | None = Field(None, description="Stop when the precision estimate plateaus.")
    target_precision: float | None = Field(
        None, gt=0, le=1, description="Stop when the lower bound of the precision interval reaches this."
    )


_SIMULATED_NEEDS_LABELS = "oracle.labels is required when oracle.type is simulated"


class OracleSpec(SpecModel):
    """Who answers: a person in the dashboard, or a label file (backtests, tests)."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel_rule(
        "self.type != 'simulated' || (has(self.labels) && size(self.labels) > 0)", _SIMULATED_NEEDS_LABELS)))

    type: Literal["human", "simulated"] = Field("human", description="human: labels come from the dashboard/API.")
    labels: str | None = Field(
        None, description="For simulated: CSV with true labels (columns id,label or filename,label), store key or path."
    )

    @model_validator(mode="after")
    def _simulated_needs_labels(self) -> "OracleSpec":
        if self.type == "simulated" and not self.labels:
            raise ValueError(_SIMULATED_NEEDS_LABELS)
        return self


_NAMES_UNIQUE = "class names must be unique"
_HOTKEYS_UNIQUE = "class hotkeys must be unique"
_ONE_TARGET = "at least one class must have target: true (what the campaign looks for)"


class ExperimentSpec(SpecModel):
    """One active-learning campaign over a pool dataset."""

    dataset: str = Field(pattern=NAME_PATTERN, description="The pool: a dataset written by a PreprocessingJob.")
    classes: list[ClassSpec] = Field(
        min_length=2, max_length=50,
        description="Classes the oracle assigns: unique names and hotkeys, at least one target.",
        json_schema_extra=cel_rules(
            cel_rule("self.all(c, self.exists_one(d, d.name == c.name))", _NAMES_UNIQUE),
            cel_rule("self.all(c, !has(c.hotkey) || self.exists_one(d, has(d.hotkey) && d.hotkey == c.hotkey))",
                     _HOTKEYS_UNIQUE),
            cel_rule("self.exists(c, has(c.target) && c.target)", _ONE_TARGET),
        ),
    )
    initial: InitialLabelsSpec | None = Field(None, description="Optional labelled set to start from.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Network and training.")
    acquisition: AcquisitionSpec = Field(default_factory=AcquisitionSpec, description="Oracle batch selection.")
    estimation: EstimationSpec = Field(default_factory=EstimationSpec, description="Performance estimation sample.")
    stopping: StoppingSpec = Field(default_factory=StoppingSpec, description="Stopping criteria.")
    oracle: OracleSpec = Field(default_factory=OracleSpec, description="Who labels.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute for iteration Jobs.")
    suspend: bool = Field(False, description="Pause the loop (no new Jobs) without losing anything.")

    @model_validator(mode="after")
    def _classes_consistent(self) -> "ExperimentSpec":
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"{_NAMES_UNIQUE}, got {names}")
        keys = [c.hotkey for c in self.classes if c.hotkey]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{_HOTKEYS_UNIQUE}, got {keys}")
        if not any(c.target for c in self.classes):
            raise ValueError(_ONE_TARGET)
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def target_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.classes) if c.target]
