"""``oraculum demo``: the whole loop on one machine, through the doors a cluster has.

- :mod:`~oraculum.demo.tour`: :func:`run_demo`, the walk from a synthetic archive to a candidate
  catalogue;
- :mod:`~oraculum.demo.manifests`: the two manifests it applies (also ``examples/demo.yaml``);
- :mod:`~oraculum.demo.processes`: the API and dashboard as child processes;
- :mod:`~oraculum.demo.gateway`: what the demo asks of the API.

May import: :mod:`oraculum.client` and the core rooms; it starts the API and the dashboard only as
processes, never by import.
"""
