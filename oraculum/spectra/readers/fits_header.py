"""A fast reader of FITS header cards, for the LAMOST fast path (no astropy).

Opening a file with astropy costs about ten times more than all the useful work for a LAMOST
low-resolution spectrum: astropy parses every card of the header into objects. The fast path
needs a couple of dozen keywords, so this module finds just those in the raw bytes: it copies
the 8-byte keyword fields of the header into one small bytes object (a strided numpy view), and
looks keywords up with ``bytes.find`` at 8-byte-aligned positions, parsing a card's value only
when it is asked for.

The contract is *certainty or nothing*: values are returned exactly as astropy's
``Header.get`` would (same Python types, same floats), and :class:`Unsure` is raised whenever
the header holds anything whose astropy reading this module does not reproduce with certainty:
keyword fields with characters other than ``A-Z 0-9 - _`` or with leading blanks (astropy
upper-cases and strips them, so they could alias a wanted keyword), HIERARCH or CONTINUE cards,
blank or non-standard values, strings with embedded quotes, a missing or malformed END card, or
a header longer than :data:`MAX_HEADER_BYTES`. The caller then falls back to astropy.

Value parsing mirrors ``astropy.io.fits.Card._parse_value``: integers with ``int()``, reals with
``float()`` after a D exponent is turned into E, logicals ``T``/``F``, strings between quotes
with trailing blanks stripped.
"""

from __future__ import annotations

import re

import numpy as np

CARD_BYTES = 80
BLOCK_BYTES = 2880
#: Headers longer than this (36 blocks, 1296 cards) are left to astropy.
MAX_HEADER_BYTES = 36 * BLOCK_BYTES
_FIRST_WINDOW_BYTES = 8 * BLOCK_BYTES  # LAMOST headers are 3-4 blocks: look there first

_END = b"END     "
_BLANK_KEY = b"        "
_BLANK_END_REST = b" " * (CARD_BYTES - 8)
# Bytes allowed in a keyword field by the FITS standard; anything else -> astropy decides.
_KEYWORD_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_ "

# The value field of a card, from the value indicator in column 9. Groups: s = string content
# (no embedded quotes), b = logical, i = integer, f = real. A blank value matches no group.
_VALUE = re.compile(
    rb"= +(?:'(?P<s>[ -&(-~]+)'|(?P<b>[TF])|(?P<i>[+-]?\d+)"
    rb"|(?P<f>[+-]?(?:\.\d+|\d+(?:\.\d*)?)(?:[DEde][+-]?\d+)?))? *(?:/.*)?",
    re.DOTALL,
)
# Record-valued keyword cards ('AXIS.1: 2') change what astropy returns for a keyword; anything
# that starts like one is left to astropy.
_RVKC = re.compile(r"[a-zA-Z_][\w.]*: +[+-]?[.\d]")
_D_TO_E = bytes.maketrans(b"Dd", b"Ee")

Value = bool | int | float | str


class Unsure(Exception):
    """The header holds something whose astropy reading cannot be reproduced with certainty."""


def parse_value(card: bytes) -> Value:
    """The value of one 80-byte ``KEYWORD = value / comment`` card, as astropy reads it.

    One compiled regular expression does the dispatch (cheaper in CPython than a handful of
    bytes operations). Raises :class:`Unsure` for anything outside the plain forms.
    """
    match = _VALUE.fullmatch(card, 8)
    if match is None:
        raise Unsure(f"card not in a plain form: {card[:40]!r}")
    kind = match.lastgroup
    if kind == "f":
        return float(match.group("f").translate(_D_TO_E))
    if kind == "i":
        return int(match.group("i"))
    if kind == "s":
        string = match.group("s").rstrip(b" ").decode("ascii")
        if string.endswith("&") or _RVKC.match(string):
            raise Unsure(f"long-string or record-valued card: {card[:40]!r}")
        return string
    if kind == "b":
        return match.group("b") == b"T"
    raise Unsure(f"blank value: {card[:40]!r}")


class HeaderCards:
    """The cards of one FITS header in a byte buffer, looked up lazily by keyword.

    Construction raises :class:`Unsure` if the header is not certainly understood (see the
    module docstring). ``data_offset`` is where the HDU's data starts.
    """

    __slots__ = ("_data", "_offset", "_keys", "data_offset", "n_cards")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        keys = b""
        end = -1
        for window in (_FIRST_WINDOW_BYTES, MAX_HEADER_BYTES):
            n_max = min(len(data) - offset, window) // CARD_BYTES
            if n_max <= 0:
                break
            fields = np.ndarray(
                (n_max, 8), dtype=np.uint8, buffer=data, offset=offset, strides=(CARD_BYTES, 1)
            )
            keys = fields.tobytes()
            end = keys.find(_END)
            while end != -1 and end & 7:
                end = keys.find(_END, end + 1)
            if end != -1 or n_max * CARD_BYTES < window:
                break
        if end == -1:
            raise Unsure("no END card within the scanned bytes")
        n_cards = end >> 3
        end_card = offset + n_cards * CARD_BYTES
        if data[end_card + 8 : end_card + CARD_BYTES] != _BLANK_END_REST:
            raise Unsure("END card with trailing characters")
        keys = keys[:end]
        if keys.translate(None, _KEYWORD_BYTES):
            raise Unsure("keyword with characters astropy normalises (lower case, tabs, ...)")
        starts = keys[::8]
        blank = starts.find(b" ")
        while blank != -1:
            if keys[blank * 8 : blank * 8 + 8] != _BLANK_KEY:
                raise Unsure("indented keyword")
            blank = starts.find(b" ", blank + 1)
        self._data = data
        self._offset = offset
        self._keys = keys
        self.n_cards = n_cards
        header_bytes = (n_cards + 1) * CARD_BYTES
        self.data_offset = offset + -(-header_bytes // BLOCK_BYTES) * BLOCK_BYTES
        if self.index("HIERARCH") != -1 or self.index("CONTINUE") != -1:
            raise Unsure("HIERARCH or CONTINUE cards")

    def index(self, keyword: str) -> int:
        """Position of the first card with ``keyword``, or -1."""
        field = _FIELDS.get(keyword) or _field(keyword)
        keys = self._keys
        position = keys.find(field)
        while position & 7 and position != -1:
            position = keys.find(field, position + 1)
        return position if position == -1 else position >> 3

    def card(self, index: int) -> bytes:
        """The 80-byte image of card ``index``."""
        start = self._offset + index * CARD_BYTES
        return self._data[start : start + CARD_BYTES]

    def get(self, keyword: str) -> Value | None:
        """The value of the first ``keyword`` card as astropy reads it, None when absent.

        Raises :class:`Unsure` when the card is present but not in a plain form. (The body
        repeats :meth:`index` and :meth:`card` inline: this runs ~20 times per file.)
        """
        field = _FIELDS.get(keyword) or _field(keyword)
        keys = self._keys
        position = keys.find(field)
        while position & 7 and position != -1:
            position = keys.find(field, position + 1)
        if position == -1:
            return None
        start = self._offset + (position >> 3) * CARD_BYTES
        return parse_value(self._data[start : start + CARD_BYTES])

    def __contains__(self, keyword: str) -> bool:
        return self.index(keyword) != -1

    def values(self, fields: tuple[tuple[str, bytes], ...]) -> dict[str, Value]:
        """``{keyword: value}`` for every keyword of ``fields`` (from :func:`keyword_fields`)
        present in the header, first occurrence, as astropy reads it.

        One call for many keywords: the per-file hot loop of the fast path. Raises
        :class:`Unsure` when one of the cards is not in a plain form.
        """
        keys = self._keys
        data = self._data
        offset = self._offset
        found: dict[str, Value] = {}
        for keyword, field in fields:
            position = keys.find(field)
            while position & 7 and position != -1:
                position = keys.find(field, position + 1)
            if position != -1:
                start = offset + (position >> 3) * CARD_BYTES
                found[keyword] = parse_value(data[start : start + CARD_BYTES])
        return found


def keyword_fields(*keywords: str) -> tuple[tuple[str, bytes], ...]:
    """``(keyword, 8-byte blank-padded field)`` pairs for :meth:`HeaderCards.values`."""
    return tuple((keyword, keyword.encode("ascii").ljust(8)) for keyword in keywords)


_FIELDS: dict[str, bytes] = {}


def _field(keyword: str) -> bytes:
    """The 8-byte blank-padded keyword field (memoised in ``_FIELDS``)."""
    field = _FIELDS[keyword] = keyword.encode("ascii").ljust(8)
    return field
