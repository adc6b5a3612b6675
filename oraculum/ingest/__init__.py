"""Ingestion: raw archive files in a folder, a bucket or the Virtual Observatory -> a sharded,
gridded dataset, with every rejected file and its reason.

- :mod:`~oraculum.ingest.sources`: :func:`open_source` (folder, file, ``s3://``, ``synthetic:``,
  VO) and :func:`archive_store` (where a dataset's raw files can be read again);
- :mod:`~oraculum.ingest.pipeline`: :func:`run_preprocess` (all shards, on worker processes),
  :func:`process_shard` (one pod of an Indexed Job) and :func:`finalize` (the dataset index).

May import: :mod:`oraculum.spectra`, :mod:`oraculum.vo` and the foundation (store, settings,
progress).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["pipeline", "sources"],
    submod_attrs={
        "sources": ["archive_store", "open_source"],
        "pipeline": ["PreprocessReport", "finalize", "process_shard", "run_preprocess"],
    },
)
