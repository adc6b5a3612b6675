"""Process-wide settings: flags override environment variables (``ORACULUM_*``), which override
these defaults.

The embedded default needs no configuration at all: a local folder as the object store and
in-process state instead of Redis. Each real backend is chosen by setting its URL.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where oraculum keeps its data and how it reaches its backends."""

    model_config = SettingsConfigDict(env_prefix="ORACULUM_", extra="ignore")

    store: str = Field(
        "./oraculum-data",
        description="Object store: a local folder (the embedded default) or s3://bucket[/prefix].",
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3/MinIO endpoint URL for s3:// stores, e.g. http://minio:9000.",
    )
    s3_access_key: str | None = Field(
        None, description="S3 access key; falls back to AWS_ACCESS_KEY_ID."
    )
    s3_secret_key: str | None = Field(
        None, description="S3 secret key; falls back to AWS_SECRET_ACCESS_KEY."
    )
    s3_region: str | None = Field(None, description="S3 region, if the endpoint needs one.")
    redis_url: str | None = Field(
        None, description="Redis URL for live state; unset means in-process state."
    )
    cache_dir: str | None = Field(
        None,
        description="Local folder for copies of remote dataset shards; a temporary folder if unset.",
    )


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (flag) values taking precedence."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)
