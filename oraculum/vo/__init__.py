"""Spectra from the Virtual Observatory and plain HTTP archives into the object store.

Modules by concept: :mod:`~oraculum.vo.transport` (HTTP with retries and backoff),
:mod:`~oraculum.vo.listing` (URL lists, HTML index pages), :mod:`~oraculum.vo.votable` (access
references in a VOTable), :mod:`~oraculum.vo.datalink` (DataLink ``#this`` and SODA cutouts),
:mod:`~oraculum.vo.naming` (store keys), :mod:`~oraculum.vo.plan` (what a source promises, in
shards), :mod:`~oraculum.vo.fetch` (bounded, resumable downloads with a failure report) and
:mod:`~oraculum.vo.spec` (the ``votable:``/``urls:``/``index:`` source strings that
``oraculum fetch``, ``oraculum preprocess`` and Jobs take) and :mod:`~oraculum.vo.sources` (those
sources as ingestion sees them: plans, archive folders, fetching shard by shard).

Nothing here imports a web framework; importing this package imports nothing heavy, because
ingestion asks :mod:`oraculum.vo.sources` about every source.
"""
