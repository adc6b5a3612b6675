"""Process-wide settings: flags override environment variables (``ORACULUM_*``), which override
these defaults.

The embedded default needs no configuration at all: a local folder as the object store and
in-process state instead of Redis. Each real backend is chosen by setting its URL.
"""

from __future__ import annotations

from typing import Literal

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
    s3_timeout: float = Field(
        300.0, gt=0, le=3600, description="Seconds an S3 request may take to connect, and to answer (each)."
    )
    s3_retries: int = Field(
        5, ge=0, le=20, description="Retries of an S3 request that failed to connect or got a 5xx answer."
    )
    redis_url: str | None = Field(
        None, description="Redis URL for live state; unset means in-process state."
    )
    cache_dir: str | None = Field(
        None,
        description="Local folder for copies of remote dataset shards; a temporary folder if unset.",
    )

    # -- the API gateway (``oraculum serve api``); plain values, so the core stays web-free ----------
    auth_file: str | None = Field(
        None,
        description="API tokens: a YAML or JSON list of {name, role, token} (roles viewer, oracle, admin, "
        "worker), e.g. mounted from a Kubernetes Secret; re-read when it changes.",
    )
    api_tokens: str | None = Field(
        None, description="API tokens as 'name:role:token,name:role:token' (added to those of auth_file)."
    )
    root_path: str = Field("", description="Path prefix the API is served under behind an ingress, e.g. /oraculum.")
    api_max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body the API accepts (larger: 413)."
    )
    api_backend: Literal["auto", "local", "kubernetes"] = Field(
        "auto",
        description="Where the API finds experiments: kubernetes (custom resources), local (the local "
        "runner's registry in the store), or auto (kubernetes inside a cluster, else local).",
    )
    namespace: str | None = Field(
        None, description="Kubernetes namespace of the API's resources (default: the pod's own, else 'default')."
    )
    api_run_jobs: bool = Field(
        False,
        description="Local backend only: run the Jobs of resources created through the API in this process "
        "(the local runner, as `oraculum run` does).",
    )
    api_lock_seconds: float = Field(
        120.0, gt=0, le=86_400, description="How long an oracle's claim on a batch item lasts unless renewed."
    )
    api_url: str | None = Field(
        None,
        description="The API gateway as Jobs reach it, e.g. http://oraculum-api.oraculum.svc:8000: running Jobs "
        "report their progress there. `serve api --run-jobs` sets it to its own address; the operator uses "
        "it when ORACULUM_JOB_API_URL is unset.",
    )
    api_share_secret: str | None = Field(
        None, min_length=32,
        description="Key of the signed, expiring links the API hands out for SAMP tools (SPLAT, TOPCAT fetch "
        "them without a token). Set the same value on every API replica; unset: a random key per process "
        "(links then work only against the process that signed them).",
    )
    api_share_seconds: int = Field(
        900, ge=10, le=7 * 86_400, description="How long a signed link is valid unless the caller asks for less."
    )
    # -- gateway limits (docs/api.md, "Limits") -------------------------------------------------------
    api_upload_max_bytes: int = Field(
        16 * 1024**3, ge=0, le=2**40, description="Largest file an upload may declare (larger: 422 naming this limit)."
    )
    api_upload_max_chunks: int = Field(
        100_000, ge=1, description="Most chunks one upload may take (size / chunk size; more: 422 naming this limit)."
    )
    api_upload_abort_seconds: float = Field(
        2.0, gt=0, le=600,
        description="How long an abort (DELETE /uploads/{id}) waits for its parts to be deleted before it "
        "answers; the rest are deleted in the background.",
    )
    api_upload_expire_seconds: float = Field(
        7 * 86_400, gt=0,
        description="An upload with no activity for this long is discarded with its parts (checked hourly).",
    )
    api_rate_limits: str = Field(
        "logs=2/20,maps=5/30,exports=2/20,raw=10/60,uploads=50/500",
        description="Per-token rate limits of the expensive endpoints, 'kind=per_second/burst,...' (kinds: logs = "
        "label-event logs, maps, exports = candidates, raw = archive files, uploads); beyond them 429 with "
        "Retry-After. Empty: no limits.",
    )
    api_header_timeout: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds a client has to send a request's line and headers (a slow or silent client is "
        "disconnected after that).",
    )
    api_keep_alive_timeout: int = Field(5, ge=1, le=3600, description="Seconds an idle keep-alive connection stays open.")
    api_max_header_bytes: int = Field(
        32 * 1024, ge=4096, le=1024 * 1024, description="Largest request line plus headers (larger: 431/400)."
    )
    max_decompressed_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024,
        description="Largest size a gzip-compressed archive file may decompress to (larger: rejected, with the reason).",
    )
    archive_url_template: str = Field(
        "https://www.lamost.org/dr7/v2.0/spectrum/view?obsid={obsid}",
        description="Archive page of a spectrum, from its obsid (the LAMOST archive by default).",
    )

    # -- the outbound fetch policy of every server-side fetch (oraculum/vo/policy.py) ---------------
    fetch_allow: str = Field(
        "",
        description="Non-public addresses the VO fetchers (VOTables, URL lists, index pages, DataLink, SODA, "
        "redirects) may reach anyway, comma-separated: CIDR ranges or addresses (10.20.0.0/16, 127.0.0.1/32) "
        "and host names (archive.internal, *.svc.cluster.local). Empty: public addresses only; private, "
        "loopback, link-local (cloud metadata) and other special ranges are refused.",
    )
    fetch_max_bytes: int = Field(
        512 * 1024**2, ge=1024,
        description="Largest file or document a fetch may bring back, counted while it streams (larger: refused).",
    )


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (flag) values taking precedence."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)
