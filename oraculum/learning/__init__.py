"""Learning: the active-learning loop itself, free of Kubernetes and the web.

- :mod:`~oraculum.learning.model`: the 1-D CNN of Škoda, Podsztavek & Tvrdík (2020), training and
  persistence (TensorFlow is imported only when a model is built or loaded);
- :mod:`~oraculum.learning.scoring` and :mod:`~oraculum.learning.scores`: streaming scoring of a
  pool and its Parquet score files;
- :mod:`~oraculum.learning.acquisition`: uncertainty strategies and the oracle batch;
- :mod:`~oraculum.learning.estimation`: performance estimates with confidence intervals;
- :mod:`~oraculum.learning.iteration`: one iteration (:func:`run_iteration`, :func:`evaluate_iteration`);
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
    submodules=["acquisition", "backtest", "estimation", "experiments", "iteration", "labels", "model",
                "oracle", "scores", "scoring"],
    submod_attrs={
        "iteration": ["evaluate_iteration", "run_iteration"],
        "backtest": ["run_backtest"],
        "oracle": ["SimulatedOracle"],
        "acquisition": ["Strategy"],
        "estimation": ["binomial_interval", "estimate_metrics"],
        "experiments": ["ExperimentError", "load_experiment"],
        "labels": ["LabelEvent", "current_labels", "read_events"],
    },
)
