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


def _find_mapped_folders_in_checkout() -> None:
    """Let ``oraculum.operator`` (and ``oraculum.api``, ``oraculum.dashboard``, ``oraculum.kube``) import from a
    source checkout too.

    Those folders sit beside this one and have no ``__init__.py`` (so ``operator/`` never shadows
    the standard library); setuptools maps them into the package on install. But with the checkout
    first on ``sys.path`` (``python -m pytest`` or ``python -c`` from the repository root) this
    folder is imported instead of the installed link tree, so the mapping is lost. Adding the
    checkout's root to the package path makes ``oraculum.operator`` resolve to ``<root>/operator``
    as a namespace portion. A wheel install has no ``pyproject.toml`` beside it and is unchanged.
    """
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and str(root) not in __path__:
        __path__.append(str(root))


_find_mapped_folders_in_checkout()
