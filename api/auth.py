"""Bearer tokens and roles.

Tokens come from ``ORACULUM_AUTH_FILE`` (a YAML or JSON list of ``{name, role, token}``, normally a
mounted Kubernetes Secret; re-read when the file changes, so a rotated Secret takes effect without
a restart) and from ``ORACULUM_API_TOKENS`` (``name:role:token,...``). Roles are ordered
``viewer < oracle < admin``; ``worker`` stands apart: it may only report Job progress (an admin may
too). Tokens are compared in constant time against every configured token (digests of equal
length, no early exit), so neither the token nor which entry matched leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from oraculum.settings import Settings

log = logging.getLogger("oraculum.api")

Role = Literal["viewer", "oracle", "admin", "worker"]
ROLES: tuple[str, ...] = ("viewer", "oracle", "admin", "worker")
_LEVEL = {"viewer": 1, "oracle": 2, "admin": 3}
#: Shortest token accepted from configuration: anything shorter is guessable.
MIN_TOKEN_LENGTH = 16


class AuthConfigError(ValueError):
    """The token configuration is invalid; the message says which entry and why."""


class Principal(BaseModel):
    """Who made a request: the token's name and role."""

    name: str = Field(description="Name of the token's holder (recorded as 'who' in label events).")
    role: Role = Field(description="viewer (read), oracle (label), admin (create, delete), worker (progress).")


class TokenEntry(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
    role: Role
    token: str = Field(min_length=MIN_TOKEN_LENGTH, max_length=4096)


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what needs ``needed`` (``any``: every valid token)."""
    if needed == "any":
        return role in ROLES
    if needed == "worker":
        return role in ("worker", "admin")
    if role == "worker":
        return False
    return _LEVEL.get(role, 0) >= _LEVEL[needed]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_token_list(text: str) -> list[TokenEntry]:
    """``name:role:token,name:role:token`` (the token itself may contain ':')."""
    entries = []
    for number, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        pieces = part.split(":", 2)
        if len(pieces) != 3:
            raise AuthConfigError(f"ORACULUM_API_TOKENS entry {number + 1}: use name:role:token")
        entries.append(_entry({"name": pieces[0], "role": pieces[1], "token": pieces[2]}, f"ORACULUM_API_TOKENS entry {number + 1}"))
    return entries


def _entry(raw: object, origin: str) -> TokenEntry:
    try:
        return TokenEntry.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise AuthConfigError(f"{origin}: {problems}") from None


def parse_token_file(data: str, origin: str) -> list[TokenEntry]:
    """A YAML or JSON list of {name, role, token} (or a mapping with such a list under ``tokens``)."""
    try:
        document = yaml.safe_load(data) if data.strip() else []
    except yaml.YAMLError as error:
        raise AuthConfigError(f"{origin}: not YAML or JSON: {error}") from None
    if isinstance(document, dict) and "tokens" in document:
        document = document["tokens"]
    if not isinstance(document, list):
        raise AuthConfigError(f"{origin}: expected a list of {{name, role, token}}")
    return [_entry(item, f"{origin} entry {i + 1}") for i, item in enumerate(document)]


@dataclass(frozen=True)
class _Known:
    digest: bytes
    principal: Principal


class TokenTable:
    """The configured tokens; :meth:`lookup` finds a presented token's principal."""

    def __init__(self, entries: list[TokenEntry], auth_file: str | None = None, env_entries: list[TokenEntry] | None = None) -> None:
        self._auth_file = auth_file
        self._env_entries = list(env_entries or [])
        self._file_stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._known = self._build(entries)

    @staticmethod
    def _build(entries: list[TokenEntry]) -> list[_Known]:
        seen: dict[bytes, str] = {}
        known = []
        for entry in entries:
            digest = _digest(entry.token)
            if digest in seen:
                raise AuthConfigError(f"tokens of {seen[digest]!r} and {entry.name!r} are the same: give each its own")
            seen[digest] = entry.name
            known.append(_Known(digest, Principal(name=entry.name, role=entry.role)))
        return known

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenTable":
        env_entries = parse_token_list(settings.api_tokens) if settings.api_tokens else []
        file_entries = cls._read_file(settings.auth_file) if settings.auth_file else []
        table = cls(file_entries + env_entries, settings.auth_file, env_entries)
        table._file_stamp = cls._stamp(settings.auth_file)
        table._checked = time.monotonic()
        return table

    @staticmethod
    def _stamp(path: str | None) -> tuple[float, int] | None:
        if not path:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    @staticmethod
    def _read_file(path: str) -> list[TokenEntry]:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise AuthConfigError(f"ORACULUM_AUTH_FILE={path}: cannot read: {error.strerror}") from None
        if path.endswith(".json"):
            try:
                json.loads(text)
            except ValueError as error:
                raise AuthConfigError(f"ORACULUM_AUTH_FILE={path}: not JSON: {error}") from None
        return parse_token_file(text, f"ORACULUM_AUTH_FILE={path}")

    def _maybe_reload(self) -> None:
        """Re-read the token file when it changed (a rotated Secret), at most every 2 s."""
        if not self._auth_file or time.monotonic() - self._checked < 2.0:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._stamp(self._auth_file)
            if stamp == self._file_stamp or stamp is None:
                return
            try:
                self._known = self._build(self._read_file(self._auth_file) + self._env_entries)
                self._file_stamp = stamp
                log.info("reloaded API tokens from %s", self._auth_file)
            except AuthConfigError as error:  # keep the tokens that worked; say why the new ones don't
                log.error("keeping the previous API tokens: %s", error)

    def add(self, entry: TokenEntry) -> None:
        """Accept one more token for the life of this process (kept when the token file is re-read),
        e.g. the worker token the embedded local runner hands its Jobs for progress reports."""
        digest = _digest(entry.token)
        with self._lock:
            if any(hmac.compare_digest(digest, known.digest) for known in self._known):
                raise AuthConfigError(f"the token of {entry.name!r} is already configured: give it its own")
            self._env_entries.append(entry)
            self._known = [*self._known, _Known(digest, Principal(name=entry.name, role=entry.role))]

    def __len__(self) -> int:
        return len(self._known)

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or None. Constant time in the token's content."""
        self._maybe_reload()
        presented = _digest(token)
        found: Principal | None = None
        for known in self._known:  # no early exit: every entry is compared
            if hmac.compare_digest(presented, known.digest):
                found = known.principal
        return found
