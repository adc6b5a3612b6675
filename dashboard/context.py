"""What every page needs: the settings, the API client, the signed-in oracle's session and token,
links, and the checks that turn what a browser sends into the experiment a callback acts on.

A callback's inputs come from the browser, and a forged request can send anything (Dash's
``/_dash-update-component`` takes any component id and value): so no callback builds an API path
from them as they are. An experiment name must be one the API lists for the caller
(:meth:`Context.experiment_name`); what follows from the experiment (its dataset, its current
iteration) comes from the API, never from the page (:meth:`Context.dataset`,
:meth:`Context.current_iteration`); numbers are made numbers, and actions come from a fixed table
(:data:`ACTIONS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import flask

from .client import ApiClient, ApiError
from .config import DashboardSettings
from .sessions import Session, SessionStore, default_file

#: The sign-in cookie: a random session id (HttpOnly, SameSite=Strict, path = the prefix); the API
#: token it stands for stays on the server (:mod:`oraculum.dashboard.sessions`).
COOKIE = "oraculum_session"
#: The cookie of earlier versions, which held the API token itself: deleted at sign-in and sign-out.
LEGACY_COOKIE = "oraculum_token"
#: Experiment and dataset names as the API accepts them (DNS labels): never a path.
NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
#: What the experiments page may ask of an experiment, and the API path (under it) of each.
ACTIONS = {"suspend": "suspend", "resume": "resume"}


def _sessions(settings: DashboardSettings) -> SessionStore:
    path = settings.dashboard_session_file or default_file(settings.api_url, settings.prefix)
    return SessionStore(path, settings.dashboard_session_hours * 3600, settings.dashboard_session_idle_minutes * 60)


@dataclass
class Context:
    settings: DashboardSettings
    client: ApiClient
    sessions: SessionStore = field(default=None)  # type: ignore[assignment]  # made from the settings

    def __post_init__(self) -> None:
        if self.sessions is None:
            self.sessions = _sessions(self.settings)

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    def href(self, path: str = "") -> str:
        """A link inside the dashboard (under the ingress prefix)."""
        return self.prefix + path.lstrip("/")

    def experiment_href(self, name: str, page: str = "label", **query: Any) -> str:
        search = "&".join(f"{k}={quote(str(v))}" for k, v in query.items() if v is not None)
        return self.href(f"e/{quote(name)}/{page}") + (f"?{search}" if search else "")

    # -- who is asking ----------------------------------------------------------------------------

    def session(self) -> Session | None:
        """The request's live sign-in session (None outside a request, or when not signed in)."""
        if not flask.has_request_context():
            return None
        if "oraculum_session" not in flask.g:
            flask.g.oraculum_session = self.sessions.get(flask.request.cookies.get(COOKIE))
        return flask.g.oraculum_session  # type: ignore[no-any-return]

    def token(self) -> str | None:
        """The caller's API token: their session's, else the single-user default (if configured)."""
        session = self.session()
        if session is not None:
            return session.token
        if self.settings.dashboard_token is not None:
            return self.settings.dashboard_token.get_secret_value() or None
        return None

    def me(self) -> dict[str, str]:
        """Name and role of the caller (raises ApiError 401 when not signed in)."""
        return self.client.whoami(self.token())

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, self.token(), **params)

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.send(method, path, self.token(), body, **kwargs)

    # -- what a callback may act on ---------------------------------------------------------------

    def experiment_name(self, claimed: Any) -> str:
        """``claimed`` (sent by the browser) if it is an experiment the API lists for the caller;
        raises ApiError otherwise, before any path is built from it."""
        if not isinstance(claimed, str) or not NAME.match(claimed):
            raise ApiError(400, "the page asked for something that is not an experiment name")
        token = self.token()
        if claimed not in self.client.experiment_names(token) and \
                claimed not in self.client.experiment_names(token, fresh=True):  # made a moment ago?
            raise ApiError(404, f"there is no experiment {claimed} (or it is not yours to see)")
        return claimed

    def dataset(self, claimed_experiment: Any) -> tuple[str, str]:
        """(experiment, its dataset): the experiment checked, the dataset as the API tells it."""
        name = self.experiment_name(claimed_experiment)
        dataset = self.client.experiment_dataset(self.token(), name)
        if not NAME.match(dataset):
            raise ApiError(502, f"the API gave experiment {name} no usable dataset name")
        return name, dataset

    def current_iteration(self, name: str, claimed: Any) -> int:
        """The experiment's current iteration (from the API), if the page's ``claimed`` one is it:
        a page that shows an older batch must not act on it."""
        current = self.get(f"/experiments/{name}").get("iteration")
        if current is None or str(claimed) != str(current):
            raise ApiError(409, f"experiment {name} is at iteration {current} now, not {str(claimed)[:20]}: reload the page")
        return int(current)


def whole(value: Any, what: str = "spectrum index") -> int:
    """A number the browser sent (a spectrum index, an iteration) as a whole number >= 0; ApiError
    400 otherwise, before any path is built from it."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ApiError(400, f"the page sent a {what} that is not a whole number")
    return int(value)


ROLE_LEVEL = {"viewer": 1, "oracle": 2, "admin": 3}


def allows(role: str | None, needed: str) -> bool:
    return ROLE_LEVEL.get(role or "", 0) >= ROLE_LEVEL[needed]
