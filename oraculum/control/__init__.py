"""Control: how a custom resource becomes work, the same on a cluster and on one machine.

- :mod:`~oraculum.control.reconcile`: the state machines, pure functions
  ``(spec, status, observed Jobs, store, now) -> Decision``;
- :mod:`~oraculum.control.observe`: what the object store says about a resource (their inputs);
- :mod:`~oraculum.control.jobs`: child Job and ConfigMap manifests as plain dicts;
- :mod:`~oraculum.control.crds`: the CustomResourceDefinitions, generated from the spec models;
- :mod:`~oraculum.control.registry` and :mod:`~oraculum.control.runner`: the local runner's
  resources and its subprocess Jobs.

May import: :mod:`oraculum.learning` and below; never kopf, kubernetes, the API or the dashboard.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["crds", "jobs", "observe", "reconcile", "registry", "runner"],
    submod_attrs={
        "reconcile": ["Decision", "reconcile_experiment", "reconcile_preprocessing"],
        "jobs": ["JobConfig"],
        "registry": ["LocalRegistry"],
        "runner": ["LocalRunner"],
    },
)
