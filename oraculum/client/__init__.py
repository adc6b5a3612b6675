"""The oraculum API from Python: notebooks, scripts, the dashboard and the demo.

- :class:`Client` and :class:`ClientError` (:mod:`~oraculum.client.rest`): every resource of the
  API over HTTP with a bearer token;
- :mod:`~oraculum.client.upload`: resumable, checksummed uploads of files and folders;
- :mod:`~oraculum.client.samp`: send spectra and tables to SPLAT, TOPCAT or Aladin;
- :mod:`~oraculum.client.errors`: the message of an API error, without the client's dependencies.

May import: the foundation and :mod:`oraculum.spectra`; never the API's own code (it speaks HTTP).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["errors", "rest", "samp", "upload"],
    submod_attrs={
        "rest": ["BatchData", "Client", "DatasetInfo", "Resource", "Spectrum"],
        "upload": ["UploadReport", "upload_files"],
        "errors": ["ClientError", "response_error"],
    },
)
