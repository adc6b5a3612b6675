"""Shared pytest fixtures.

The fixtures of ``tests/support`` reach every test through ``pytest_plugins`` below, never by
importing them by name: ``s3_endpoint``/``s3_settings`` (a moto S3 server) and ``redis_server``,
``world`` and ``local_store`` (the API's prepared store), ``control_plane`` (a real etcd,
kube-apiserver and kube-controller-manager on loopback, with a process stand-in for kubelet; see
``tests/support/controlplane.py``). Helpers that are not fixtures (process
harnesses, the emulator, constants) are imported from ``tests.support.<module>`` as usual.

``shared_data``: the folder of real archive spectra (``../shared/data`` next to the repository,
see its README). It is never copied into the repository, so tests that need it skip cleanly on
a fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.s3server", "tests.support.api_fixtures", "tests.support.controlplane"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real spectra folder {SHARED_DATA} is absent")
    return SHARED_DATA
