"""The cluster's API server, as oraculum's adapters reach it: one narrow door.

The operator (``oraculum.operator``) and the API's Kubernetes backend (``oraculum.api.backend``)
both talk to the API server through this room and nothing else: :class:`KubeClient` (a few verbs,
plain JSON over aiohttp), :class:`ApiError`, :func:`path` and :data:`KINDS`, and
:func:`make_login`. It sits above the core and below the adapters; the core never imports it.
"""

from oraculum.kube.client import KINDS, USER_AGENT, ApiError, KubeClient, path
from oraculum.kube.login import make_login

__all__ = ["KINDS", "USER_AGENT", "ApiError", "KubeClient", "make_login", "path"]
