"""Reference pages generated from the project's sources of truth (``oraculum docs``).

- :mod:`~oraculum.docs.pages`: :class:`Page`, the shared table helpers, and writing or checking
  every page;
- :mod:`~oraculum.docs.manifests`: every field of every custom resource, from the CRDs;
- :mod:`~oraculum.docs.benchmarks`: every benchmark result with its hardware and targets.

May import: every core room (it describes them); nothing imports it but the CLI.
"""
