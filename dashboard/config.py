"""Settings of the dashboard (``oraculum serve dashboard``), from ``ORACULUM_*`` environment variables.

The dashboard is a client of the API: it needs the API's address, nothing of the store. Kept
apart from the core's :class:`oraculum.settings.Settings` so that the core stays web-free; the
variable names are shared where the meaning is (``ORACULUM_ROOT_PATH``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORACULUM_", extra="ignore")

    api_url: str = Field("http://127.0.0.1:8000",
                         description="Base URL of the API gateway as the dashboard's server reaches it (no /api/v1).")
    root_path: str = Field("", description="Path prefix the dashboard is served under behind an ingress, e.g. "
                                           "/oraculum (no rewriting: requests arrive with the prefix).")
    dashboard_token: SecretStr | None = Field(
        None, description="Single-user machines only: the API token used when the browser has not logged in. "
                          "Anyone who can reach the dashboard then acts with this token.")
    dashboard_cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure flag of the login cookie: auto sets it when the request came over HTTPS "
                            "(X-Forwarded-Proto from the ingress counts).")
    dashboard_session_hours: float = Field(8.0, gt=0, le=24 * 90, description="How long a sign-in lasts at most.")
    dashboard_session_idle_minutes: float = Field(
        120.0, gt=0, description="A sign-in not used for this long ends (every page and label save uses it).")
    dashboard_session_file: str = Field(
        "", description="SQLite file of the sign-in sessions (the API tokens stay on the server; the browser "
                        "holds a random session id). Shared by the gunicorn workers that use the same file. "
                        "Empty: a file of this user's own in the temporary directory.")
    dashboard_api_timeout: float = Field(30.0, gt=0, description="Timeout of one API request (seconds).")
    dashboard_events_seconds: float = Field(
        300.0, gt=1, description="How long one proxied event stream lasts before the browser reconnects "
                                 "(bounds how long a worker thread is held).")
    dashboard_sky_url: str = Field(
        "https://aladin.cds.unistra.fr/AladinLite/?target={ra}%20{dec}&fov=0.05&survey=P%2FDSS2%2Fcolor",
        description="Aladin Lite sky view, {ra} and {dec} in degrees (needs internet access in the browser).")
    dashboard_samp_hub: str = Field(
        "http://127.0.0.1:21012",
        description="The SAMP Web Profile hub as the oracle's browser reaches it (the standard address; TOPCAT "
                    "and SPLAT run one): 'Send to SAMP' posts there from the browser.")

    @field_validator("api_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("dashboard_samp_hub")
    @classmethod
    def _hub(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not a hub address: give an http:// URL such as http://127.0.0.1:21012")
        return value.rstrip("/")

    @property
    def prefix(self) -> str:
        """The URL prefix of every dashboard route: ``/`` or ``/oraculum/``."""
        stripped = self.root_path.strip("/")
        return f"/{stripped}/" if stripped else "/"
