"""Dependencies shared by the routers: the application state and authentication by role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import Principal, allows
from .models import DATASET_PATTERN, MAX_INDEX, MAX_ITERATION, NAME_PATTERN
from .state import AppState

_bearer = HTTPBearer(auto_error=False, description="A token from ORACULUM_AUTH_FILE or ORACULUM_API_TOKENS.")


def get_state(request: Request) -> AppState:
    return request.app.state.oraculum  # type: ignore[no-any-return]


async def _state(request: Request) -> AppState:
    """:func:`get_state` as a dependency. ``async`` on purpose: FastAPI runs a plain ``def``
    dependency on a worker thread, and that hop cost about a third of the CPU of a small request."""
    return get_state(request)


State = Annotated[AppState, Depends(_state)]


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the bearer token and requires ``role`` (or more)."""

    async def dependency(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise HTTPException(401, "authentication required: send Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = get_state(request).tokens.lookup(credentials.credentials)
        if principal is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if not allows(principal.role, role):
            raise HTTPException(403, f"{principal.name} ({principal.role}) may not do this: it needs the role {role}")
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


#: One dependency per role: a route that names the same one twice (e.g. through a rate limit,
#: :mod:`oraculum.api.ratelimit`) authenticates once.
ROLE_DEPENDENCIES = {role: require(role) for role in ("viewer", "oracle", "admin", "worker")}
Viewer = Annotated[Principal, Depends(ROLE_DEPENDENCIES["viewer"])]
Oracle = Annotated[Principal, Depends(ROLE_DEPENDENCIES["oracle"])]
Admin = Annotated[Principal, Depends(ROLE_DEPENDENCIES["admin"])]
Worker = Annotated[Principal, Depends(ROLE_DEPENDENCIES["worker"])]

ExperimentName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="metadata.name of the experiment.")]
ResourceName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="metadata.name of the resource.")]
DatasetName = Annotated[str, Path(pattern=DATASET_PATTERN, max_length=63, description="Dataset name.")]
Iteration = Annotated[int, Path(ge=0, le=MAX_ITERATION, description="Iteration number (0 = the first).")]
Index = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Global index of the spectrum in the pool dataset.")]
