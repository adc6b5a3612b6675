"""How oraculum's own Kubernetes requests log in: the same way kopf does.

Both the operator and the API's Kubernetes backend use this, so they reach the API server as the
same identity kopf watches with (the pod's service account in a cluster, the kubeconfig outside).
"""

from __future__ import annotations

from collections.abc import Callable

import kopf


def make_login(connection: kopf.ConnectionInfo | None = None) -> Callable[[], kopf.ConnectionInfo]:
    """How to reach the API server: ``connection`` if given (tests), else the pod's service
    account, else the kubeconfig. kopf and the reconciler's client use the same one."""

    def login() -> kopf.ConnectionInfo:
        if connection is not None:
            return connection
        settings = kopf.OperatorSettings()
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise kopf.LoginError("no service account token and no kubeconfig: cannot reach a Kubernetes API server")
        return info

    return login
