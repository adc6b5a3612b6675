"""What every page needs: the settings, the API client, the signed-in oracle's token, and links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import flask

from .client import ApiClient
from .config import DashboardSettings

#: The login cookie: the oracle's own API token (HttpOnly, SameSite=Strict, path = the prefix).
COOKIE = "oraculum_token"
#: Experiment and dataset names as the API accepts them (DNS labels): never a path.
NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


@dataclass
class Context:
    settings: DashboardSettings
    client: ApiClient

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    def href(self, path: str = "") -> str:
        """A link inside the dashboard (under the ingress prefix)."""
        return self.prefix + path.lstrip("/")

    def experiment_href(self, name: str, page: str = "label", **query: Any) -> str:
        search = "&".join(f"{k}={quote(str(v))}" for k, v in query.items() if v is not None)
        return self.href(f"e/{quote(name)}/{page}") + (f"?{search}" if search else "")

    def token(self) -> str | None:
        """The caller's API token: the login cookie, else the single-user default (if configured)."""
        token = None
        if flask.has_request_context():
            token = flask.request.cookies.get(COOKIE)
        if not token and self.settings.dashboard_token is not None:
            token = self.settings.dashboard_token.get_secret_value()
        return token or None

    def me(self) -> dict[str, str]:
        """Name and role of the caller (raises ApiError 401 when not signed in)."""
        return self.client.whoami(self.token())

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, self.token(), **params)

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.send(method, path, self.token(), body, **kwargs)


ROLE_LEVEL = {"viewer": 1, "oracle": 2, "admin": 3}


def allows(role: str | None, needed: str) -> bool:
    return ROLE_LEVEL.get(role or "", 0) >= ROLE_LEVEL[needed]
