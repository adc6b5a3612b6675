"""``oraculum demo``: the whole loop on one machine, through the doors a cluster has.

- :mod:`~oraculum.demo.tour`: :func:`run_demo`, the walk from a synthetic archive to a candidate
  catalogue;
- :mod:`~oraculum.demo.manifests`: the two manifests it applies (also ``examples/demo.yaml``);
- :mod:`~oraculum.demo.processes`: the API and dashboard as child processes;
- :mod:`~oraculum.demo.performance`: the table it prints at the end.

It speaks to the API only through the public :class:`oraculum.client.Client`, as a notebook would.

May import: :mod:`oraculum.client` and the core rooms; it starts the API and the dashboard only as
processes, never by import.
"""
