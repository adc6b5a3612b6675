"""Sign-in sessions of the dashboard, kept on the server.

The browser's cookie holds only a random session id (256 bits); the API token it stands for stays
on the server, in a small SQLite file that the gunicorn workers of one process tree share
(``ORACULUM_DASHBOARD_SESSION_FILE``; by default a file of its own in the temporary directory,
readable by this user only). Only a hash of the id is stored, so the file does not hold live
cookie values. A session ends at the first of: its absolute lifetime
(``ORACULUM_DASHBOARD_SESSION_HOURS``), the idle timeout (``ORACULUM_DASHBOARD_SESSION_IDLE_MINUTES``)
and signing out, which deletes it here: a copied cookie is worthless afterwards.

Each session also has its own random form token (``csrf``): the sign-out form carries it, so a
page elsewhere cannot sign the oracle out (on top of the ``SameSite=Strict`` cookie).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: How often a session's last use is written back (its idle clock), at most.
TOUCH_SECONDS = 60.0
#: Longest cookie value looked up (the ids are 43 characters).
MAX_ID = 128


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    csrf: str
    name: str
    role: str
    expires: float

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())


def default_file(api_url: str, prefix: str) -> Path:
    """A session file per (API, prefix) in a folder of this user's only."""
    folder = Path(tempfile.gettempdir()) / f"oraculum-dashboard-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():  # someone else's folder: do not put tokens there
        raise RuntimeError(f"{folder} belongs to another user: set ORACULUM_DASHBOARD_SESSION_FILE")
    digest = hashlib.sha256(f"{api_url} {prefix}".encode()).hexdigest()[:16]
    return folder / f"sessions-{digest}.sqlite"


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions in one SQLite file (one connection per thread; any number of processes)."""

    def __init__(self, path: str | Path, lifetime: float, idle: float, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, token TEXT NOT NULL, "
                       "csrf TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL, "
                       "seen REAL NOT NULL, expires REAL NOT NULL)")
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                                  check_same_thread=False)
        yield db

    def create(self, token: str, name: str, role: str) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), token, secrets.token_urlsafe(24), name, role,
                          now + self.lifetime)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE expires < ? OR seen < ?", (now, now - self.idle))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (_key(session.id), token, session.csrf, name, role, now, now, session.expires))
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None (unknown, expired, idle too long)."""
        if not session_id or len(session_id) > MAX_ID:
            return None
        now = self.clock()
        key = _key(session_id)
        with self._db() as db:
            row = db.execute("SELECT token, csrf, name, role, seen, expires FROM sessions WHERE key = ?",
                             (key,)).fetchone()
            if row is None:
                return None
            token, csrf, name, role, seen, expires = row
            if now >= expires or now - seen >= self.idle:
                db.execute("DELETE FROM sessions WHERE key = ?", (key,))
                return None
            if now - seen >= TOUCH_SECONDS:
                db.execute("UPDATE sessions SET seen = ? WHERE key = ?", (now, key))
        return Session(session_id, token, csrf, name, role, expires)

    def delete(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_ID:
            with self._db() as db:
                db.execute("DELETE FROM sessions WHERE key = ?", (_key(session_id),))
