"""Control: how a custom resource becomes work, the same on a cluster and on one machine.

- :mod:`~oraculum.control.reconcile`: the state machines, pure functions
  ``(spec, status, observed Jobs, store, now) -> Decision``, with their data
  (:mod:`~oraculum.control.decision`), stopping criteria (:mod:`~oraculum.control.stopping`) and
  shared status machinery (:mod:`~oraculum.control.transitions`);
- :mod:`~oraculum.control.observe`: what the object store says about a resource (their inputs);
- :mod:`~oraculum.control.driver`: the one "observe, decide, apply" step, over a small
  :class:`~oraculum.control.driver.Runtime` that the operator and the local runner implement;
- :mod:`~oraculum.control.jobs`: child Job and ConfigMap manifests as plain dicts;
- :mod:`~oraculum.control.crds`: the CustomResourceDefinitions, generated from the spec models;
- :mod:`~oraculum.control.registry`, :mod:`~oraculum.control.runner` and
  :mod:`~oraculum.control.local_jobs`: the local runner's resources, its loop and its subprocess Jobs.

May import: :mod:`oraculum.learning` and below; never kopf, kubernetes, the API or the dashboard.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["crds", "decision", "driver", "jobs", "local_jobs", "observe", "reconcile", "registry", "runner",
                "stopping", "transitions"],
    submod_attrs={
        "reconcile": ["Decision", "reconcile_experiment", "reconcile_preprocessing"],
        "driver": ["Resource", "Runtime", "drive", "drive_now"],
        "jobs": ["JobConfig"],
        "registry": ["LocalRegistry"],
        "runner": ["LocalRunner"],
    },
)
