"""A real S3 endpoint for tests: moto in server mode on 127.0.0.1, spoken to over HTTP by the
real ``minio`` client. (No MinIO server binary can be had here; see TESTING.md. moto implements
the S3 REST protocol, so this exercises our S3 backend end to end, not a mock object.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from oraculum.settings import Settings


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at the moto endpoint, with a fresh bucket name per test."""
    for name in ("ORACULUM_STORE", "ORACULUM_S3_ENDPOINT", "ORACULUM_S3_ACCESS_KEY", "ORACULUM_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    return Settings(
        store=f"s3://{bucket}",
        s3_endpoint=s3_endpoint,
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_region="us-east-1",
        cache_dir=str(tmp_path / "cache"),
    )
