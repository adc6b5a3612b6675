"""Signed, expiring links: how a SAMP tool fetches one object without a token.

SPLAT or TOPCAT receive a URL in a SAMP message and fetch it themselves, with no bearer token. So a
signed-in caller (viewer or more) asks the API for a link, and the link carries its own permission:
``expires`` (Unix seconds) and ``signature``, the HMAC-SHA256 of ``oraculum-link-v1``, the link's
*scope* and ``expires`` under the API's key (``ORACULUM_API_SHARE_SECRET``), base64url without
padding. The scope is the link's path below ``/api/v1`` (e.g.
``/shared/spectra/pool/17/preprocessed.fits``), so a signature opens that one object in that one
format and nothing else: changing the index, the format or the expiry breaks it.

The check is in constant time (:func:`hmac.compare_digest`). A missing or wrong signature is 403;
a right one past its expiry is 410 (Gone), so a tool that kept a link says why it no longer works.
Nothing is stored: links cannot be withdrawn one by one, only all at once by changing the key,
which is why their lifetime is short (``ORACULUM_API_SHARE_SECONDS``, 15 minutes by default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from urllib.parse import urlencode

from oraculum.settings import Settings

log = logging.getLogger("oraculum.api")

_CONTEXT = b"oraculum-link-v1"
#: Longest lifetime a link may be signed for (also the bound of ``ORACULUM_API_SHARE_SECONDS``).
MAX_SECONDS = 7 * 86_400


class LinkRefused(Exception):
    """The link may not be followed: ``status`` 403 (bad signature) or 410 (expired)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LinkSigner:
    """Signs and checks links with one key (see the module docstring)."""

    def __init__(self, key: bytes, default_seconds: int = 900) -> None:
        if len(key) < 32:
            raise ValueError("the link key must be at least 32 bytes")
        self._key = key
        self.default_seconds = default_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> "LinkSigner":
        if settings.api_share_secret:
            return cls(settings.api_share_secret.encode("utf-8"), settings.api_share_seconds)
        log.info("ORACULUM_API_SHARE_SECRET is unset: signed links use a random key of this process only")
        return cls(secrets.token_bytes(32), settings.api_share_seconds)

    def signature(self, scope: str, expires: int) -> str:
        message = b"\n".join((_CONTEXT, scope.encode("utf-8"), str(int(expires)).encode("ascii")))
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, scope: str, seconds: int | None = None, now: float | None = None) -> tuple[str, int]:
        """(query string ``expires=...&signature=...``, expiry in Unix seconds) for ``scope``."""
        lifetime = self.default_seconds if seconds is None else int(seconds)
        if not 1 <= lifetime <= MAX_SECONDS:
            raise ValueError(f"a link lives 1 to {MAX_SECONDS} seconds, not {lifetime}")
        expires = int(now if now is not None else time.time()) + lifetime
        return urlencode({"expires": expires, "signature": self.signature(scope, expires)}), expires

    def verify(self, scope: str, expires: str | None, signature: str | None, now: float | None = None) -> None:
        """Return if the link may be followed, else raise :class:`LinkRefused` saying why."""
        if not expires or not signature:
            raise LinkRefused(403, "this address needs a signed link (expires and signature in the query): ask the "
                                   "API for one with a token, e.g. GET .../share")
        try:
            when = int(expires)
        except ValueError:
            raise LinkRefused(403, f"expires={expires[:40]!r} is not a Unix time in seconds: this is not a signed link "
                                   "the API made") from None
        expected = self.signature(scope, when)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "surrogatepass")):
            raise LinkRefused(403, "the link's signature does not match this address: it was changed, or signed by "
                                   "another API key; ask for a new link")
        if (now if now is not None else time.time()) > when:
            raise LinkRefused(410, f"the link expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))}: "
                                   "send the spectrum or table again for a new one")
