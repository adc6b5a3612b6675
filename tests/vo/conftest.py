"""The VO tests' archives are real HTTP servers on 127.0.0.1 (:mod:`tests.support.vo_archive`).

The outbound fetch policy (:mod:`oraculum.vo.policy`) refuses loopback addresses, so every test
here names the test servers' address in the admin allow-list, the way an admin names an archive
on a private network: through ``ORACULUM_FETCH_ALLOW``, which the fetchers, the CLI and the
local runner's Job processes (they inherit the environment) all read. The policy itself is not
weakened; ``test_fetch_policy.py`` sets its own allow-lists.
"""

from __future__ import annotations

import pytest

from tests.support.vo_archive import LOOPBACK_ALLOW


@pytest.fixture(autouse=True)
def fetch_allow_loopback(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ORACULUM_FETCH_ALLOW", LOOPBACK_ALLOW)
    return LOOPBACK_ALLOW
