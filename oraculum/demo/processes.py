"""The demo's servers as child processes, their tokens, and leaving no process behind.

The demo starts ``oraculum serve api --run-jobs`` and ``oraculum serve dashboard`` as
subprocesses (so the core never imports a web framework), each in a session of its own: a Ctrl-C
in the terminal reaches only the demo, which then stops them in order (the dashboard first, so
no event stream holds the API open; then the API, whose shutdown stops the local runner and
its Job subprocesses). Every descendant carries the environment variable
:data:`RUN_MARKER` with this run's id, so whatever is still alive after that (a Job whose parent
was killed) is found in ``/proc`` and stopped too: no orphans. Should the demo itself be killed
(SIGKILL), the servers get SIGTERM from the kernel (``PR_SET_PDEATHSIG``) and shut down as above.

Tokens live in ``<store>/demo/auth.yaml`` (mode 0600), made on the first run and reused, so the
token a person signed in with keeps working after a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

__all__ = [
    "RUN_MARKER",
    "ChildServer",
    "DemoError",
    "DemoTokens",
    "ensure_tokens",
    "free_port",
    "marked_processes",
    "port_is_free",
    "stop_marked",
]

#: Environment variable carried by every process the demo starts, directly or not.
RUN_MARKER = "ORACULUM_DEMO_RUN"

#: The demo's principals: (name, role). The person gets the admin token (labels and manages
#: experiments); the headless oracle labels as an oracle. (The Jobs' progress reports use a worker
#: token the API makes for its own runner, see ``oraculum.api.app``.)
PRINCIPALS = {"person": ("astronomer", "admin"), "oracle": ("simulated-oracle", "oracle")}


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and what to do."""


@dataclass(frozen=True)
class DemoTokens:
    path: Path
    created: bool
    person: str
    oracle: str


def ensure_tokens(folder: Path) -> DemoTokens:
    """The demo's tokens from ``folder/auth.yaml``, made (mode 0600) when missing or incomplete.

    The file is the API's ``ORACULUM_AUTH_FILE``: a YAML list of ``{name, role, token}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "auth.yaml"
    entries: list[dict[str, str]] = []
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        except (OSError, yaml.YAMLError) as error:
            raise DemoError(f"{path}: cannot read the demo's tokens ({error}); delete the file to make new ones") from None
        if not isinstance(loaded, list) or not all(isinstance(e, dict) for e in loaded):
            raise DemoError(f"{path}: expected a YAML list of {{name, role, token}}; delete the file to make new ones")
        entries = [{k: str(v) for k, v in e.items()} for e in loaded]
    found = {(e.get("name"), e.get("role")): e.get("token", "") for e in entries}
    created = False
    for name, role in PRINCIPALS.values():
        if len(found.get((name, role)) or "") < 16:
            entries = [e for e in entries if e.get("name") != name]
            entries.append({"name": name, "role": role, "token": secrets.token_urlsafe(24)})
            found[(name, role)] = entries[-1]["token"]
            created = True
    if created:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("# API tokens of `oraculum demo` (ORACULUM_AUTH_FILE); keep this file private.\n")
            yaml.safe_dump(entries, handle, sort_keys=False)
        os.replace(temporary, path)
    if path.stat().st_mode & 0o077:  # someone widened it: tokens are secrets
        path.chmod(0o600)
    return DemoTokens(path=path, created=created, **{key: found[value] for key, value in PRINCIPALS.items()})


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR as servers set it, so the
    TIME_WAIT connections of a server that just stopped do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


@dataclass
class ChildServer:
    """One server subprocess (``python -m oraculum.cli.main ARGS``) with its log file; ``probe`` is the
    path under ``url`` that answers 200 once it serves."""

    title: str
    args: list[str]
    env: dict[str, str]
    log: Path
    url: str
    probe: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> "ChildServer":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            handle.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.args)}\n".encode())
            handle.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "oraculum.cli.main", *self.args], env=self.env,
                                            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def failure(self) -> str | None:
        """Why the process is gone, with the end of its log; None while it runs."""
        if self.process is None or self.process.poll() is None:
            return None
        return (f"the {self.title} exited with status {self.process.returncode}; the end of {self.log}:\n"
                f"{_tail(self.log)}")

    def wait_ready(self, timeout: float, stopping: Callable[[], bool]) -> None:
        """Until ``probe`` answers 200; DemoError when the process dies or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not stopping():
            gone = self.failure()
            if gone:
                raise DemoError(gone)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url.rstrip("/") + self.probe, timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the {self.title} did not answer {self.probe} within {timeout:.0f} s; the end of "
                                f"{self.log}:\n{_tail(self.log)}")
            time.sleep(0.2)

    def stop(self, timeout: float, hurry: Callable[[], bool] = lambda: False) -> bool:
        """SIGTERM to its process group, SIGKILL after ``timeout`` (or as soon as ``hurry()``);
        True when it stopped in time."""
        if self.process is None or self.process.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not hurry():
            try:
                self.process.wait(timeout=0.2)
                return True
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        return False


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the demo dies, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``), so a killed demo never leaves a runner working on its store."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def marked_processes(run_id: str) -> list[int]:
    """Live processes (other than this one) whose environment carries ``RUN_MARKER=run_id``."""
    needle = f"{RUN_MARKER}={run_id}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the orderly shutdown has to do
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_marked(run_id: str, timeout: float = 10.0) -> int:
    """Stop every process left over from this run (SIGTERM, then SIGKILL); returns how many."""
    leftovers = marked_processes(run_id)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while marked_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in marked_processes(run_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(leftovers)
