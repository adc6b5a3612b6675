"""Fixtures of the API tests: real processes (redis-server, uvicorn), the synthetic world, clients.

``redis-server`` comes from Debian (``scripts/test-services`` installs it; ``make test`` runs that
script). Each test module starts its own on a free port with no persistence and kills it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.support.api_world as api_world
from oraculum.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

TOKENS = {
    "viewer": "viewer-token-0123456789abcdef",
    "oracle": "oracle-token-0123456789abcdef",
    "oracle2": "oracle2-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
    "worker": "worker-token-0123456789abcdef",
}
NAMES = {"viewer": "vera", "oracle": "olga", "oracle2": "otto", "admin": "ada", "worker": "iter-job"}
ROLES = {"viewer": "viewer", "oracle": "oracle", "oracle2": "oracle", "admin": "admin", "worker": "worker"}
TOKEN_LIST = ",".join(f"{NAMES[k]}:{ROLES[k]}:{TOKENS[k]}" for k in TOKENS)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM (a server's clean shutdown), then SIGKILL if it has not ended within ``timeout`` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class RedisServer:
    """A real redis-server on a free port; :meth:`kill` is SIGKILL, :meth:`start` starts it again
    (empty: no persistence, like a Redis that lost everything)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/test-services (make test does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, process=self.process)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def flushall(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic world (see api_world), built once per session (also across test modules:
    the folder is shared and built under a file lock)."""
    base = tmp_path_factory.getbasetemp()
    folder = base / "api-world"
    with open(base / "api-world.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            api_world.build(folder / "store")
            (folder / "done").touch()
    return folder / "store"


@pytest.fixture
def local_store(world: Path, tmp_path: Path) -> Path:
    """A pristine copy of the world for one test."""
    target = tmp_path / "store"
    shutil.copytree(world, target)
    return target


def settings_for(store: Path | str, **values: Any) -> Settings:
    return Settings(store=str(store), api_tokens=TOKEN_LIST, api_backend=values.pop("api_backend", "local"), **values)


@contextlib.asynccontextmanager
async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``app`` (lifespan run in this event loop)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as client:
            yield client


class ApiProcess:
    """``oraculum serve api`` as a real uvicorn subprocess."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ApiProcess":
        env = {**os.environ, **self.env}
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oraculum.cli.main", "serve", "api", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"], env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=str(ROOT))
        handle.close()
        try:
            wait_port(self.port, timeout=60, process=self.process)
        except RuntimeError:
            raise RuntimeError(f"the API did not start: {self.log.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
