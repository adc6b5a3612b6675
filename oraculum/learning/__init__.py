"""Learning: the active-learning loop itself, free of Kubernetes and the web.

- :mod:`~oraculum.learning.model`: the 1-D CNN of Škoda, Podsztavek & Tvrdík (2020), training and
  persistence (TensorFlow is imported only when a model is built or loaded);
- :mod:`~oraculum.learning.scoring` and :mod:`~oraculum.learning.scores`: streaming scoring of a
  pool and its Parquet score files;
- choosing the oracle batch: :mod:`~oraculum.learning.uncertainty` (the strategies' scores),
  :mod:`~oraculum.learning.reservoirs` (keyed, mergeable bounded-memory selection over a streamed
  pool) and :mod:`~oraculum.learning.acquisition` (diversity and the batch's composition);
- estimating performance: :mod:`~oraculum.learning.estimation_sample` (what the oracle labels for
  it), :mod:`~oraculum.learning.intervals` (binomial confidence intervals) and
  :mod:`~oraculum.learning.metrics` (the estimates in ``metrics.json``);
- one iteration: :mod:`~oraculum.learning.iteration` (:func:`run_iteration`), with
  :mod:`~oraculum.learning.labelled_set` (what it trains on and excludes),
  :mod:`~oraculum.learning.candidates` (the candidate catalogue, CSV and VOTable) and
  :mod:`~oraculum.learning.batch_maps` (2-D maps of the batch); and
  :mod:`~oraculum.learning.evaluation` (:func:`evaluate_iteration`, once its labels are in);
- :mod:`~oraculum.learning.experiments` and :mod:`~oraculum.learning.labels`: an experiment's
  records in the store and its durable label events;
- :mod:`~oraculum.learning.oracle`: the simulated oracle; :mod:`~oraculum.learning.backtest`:
  learning curves of several strategies on the same pool.

May import: :mod:`oraculum.manifests`, :mod:`oraculum.ingest`, :mod:`oraculum.spectra` and the
foundation; never :mod:`oraculum.control` or anything above it.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["acquisition", "backtest", "batch_maps", "candidates", "estimation_sample", "evaluation",
                "experiments", "intervals", "iteration", "labelled_set", "labels", "metrics", "model", "oracle",
                "reservoirs", "scores", "scoring", "uncertainty"],
    submod_attrs={
        "iteration": ["run_iteration"],
        "evaluation": ["evaluate_iteration"],
        "backtest": ["run_backtest"],
        "oracle": ["SimulatedOracle"],
        "uncertainty": ["Strategy"],
        "intervals": ["binomial_interval"],
        "metrics": ["estimate_metrics"],
        "experiments": ["ExperimentError", "load_experiment"],
        "labels": ["LabelEvent", "current_labels", "read_events"],
    },
)
