"""The real API for the client and upload tests: ``oraculum serve api`` as a uvicorn subprocess on
a free port, over a local store or a bucket of the moto S3 server (tests/support/s3server.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.api_fixtures import TOKEN_LIST, TOKENS, ApiProcess
from oraculum.client import Client
from oraculum.settings import Settings


def local_env(store: Path, **extra: str) -> dict[str, str]:
    return {"ORACULUM_STORE": str(store), "ORACULUM_API_TOKENS": TOKEN_LIST, "ORACULUM_API_BACKEND": "local",
            "ORACULUM_REDIS_URL": "", "ORACULUM_AUTH_FILE": "", **extra}


def s3_settings_for(endpoint: str, bucket: str, cache: Path) -> Settings:
    return Settings(store=f"s3://{bucket}", s3_endpoint=endpoint, s3_access_key="testing", s3_secret_key="testing",
                    s3_region="us-east-1", cache_dir=str(cache))


def s3_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {"ORACULUM_STORE": settings.store, "ORACULUM_S3_ENDPOINT": str(settings.s3_endpoint),
            "ORACULUM_S3_ACCESS_KEY": "testing", "ORACULUM_S3_SECRET_KEY": "testing", "ORACULUM_S3_REGION": "us-east-1",
            "ORACULUM_API_TOKENS": TOKEN_LIST, "ORACULUM_API_BACKEND": "local", "ORACULUM_REDIS_URL": "",
            "ORACULUM_AUTH_FILE": "", "ORACULUM_CACHE_DIR": str(settings.cache_dir), **extra}


@contextlib.contextmanager
def running_api(env: dict[str, str], log: Path) -> Iterator[ApiProcess]:
    """The API process, stopped (SIGTERM, then SIGKILL) whatever happens."""
    api = ApiProcess(env, log).start()
    try:
        yield api
    finally:
        api.stop()


def client(api: ApiProcess, who: str = "admin") -> Client:
    return Client(api.url, token=TOKENS[who])
