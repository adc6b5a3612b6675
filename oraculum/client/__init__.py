"""The oraculum API from Python: notebooks, scripts, the dashboard and the demo.

- :class:`Client` and :class:`ClientError` (:mod:`~oraculum.client.rest`): every resource of the
  API over HTTP with a bearer token (apply and follow manifests, label batches, read results);
- :mod:`~oraculum.client.records`: what the calls return (:class:`Resource`, :class:`BatchData`,
  :class:`LabelledBatch`, ...);
- :mod:`~oraculum.client.manifests`: a manifest read and checked before it is sent, and what
  differs from a resource that exists;
- :mod:`~oraculum.client.upload`: resumable, checksummed uploads of files and folders;
- :mod:`~oraculum.client.samp`: send spectra and tables to SPLAT, TOPCAT or Aladin;
- :mod:`~oraculum.client.errors`: the message of an API error, without the client's dependencies.

May import: the rooms below it (:mod:`oraculum.control` and :mod:`oraculum.manifests` to compare a
manifest with a resource, :mod:`oraculum.spectra` for grids, the floor); never the API's own code
(it speaks HTTP).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["errors", "manifests", "records", "rest", "samp", "upload"],
    submod_attrs={
        "rest": ["Client"],
        "records": ["BatchData", "DatasetInfo", "LabelledBatch", "Resource", "Spectrum"],
        "manifests": ["read_manifest", "spec_differences"],
        "upload": ["UploadReport", "upload_files"],
        "errors": ["ClientError", "response_error"],
    },
)
