"""oraculum: human-in-the-loop active deep learning on large astronomical spectra archives.

This package is the science core. It imports no Kubernetes, web or Dash code, so everything in
it runs in a notebook as well as inside a Kubernetes Job.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oraculum")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
