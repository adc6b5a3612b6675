"""Parsing untrusted JSON and YAML documents (manifests, request bodies) within limits.

What a plain ``yaml.safe_load`` or ``json.loads`` lets through, and what is refused here with a
:class:`DocumentError` whose message names the place and the problem:

* YAML aliases that expand to more than :attr:`Limits.nodes` nodes ("billion laughs": 581 bytes
  that become 400 MB once serialised), and recursive aliases (a node inside itself). The size is
  counted on libyaml's event stream *before* anything is built: the expanded document never
  exists. Ordinary anchors and merge keys (``<<: *defaults``) stay allowed.
* Nesting deeper than :attr:`Limits.depth` (aliases included), checked on the same event stream
  for YAML (so libyaml's recursive composer never sees it) and after ``json.loads`` for JSON (its
  own recursion stops at about 1000 levels and is answered as too deep, not as a crash).
* Values JSON cannot carry: NaN and infinities, strings with lone UTF-16 surrogates (``"\\ud800"``:
  valid JSON text, but no UTF-8 encoding exists, so storing them fails later), bytes (``!!binary``),
  sets and other non-JSON types; YAML timestamps are kept as the strings they were written as,
  and scalar mapping keys become strings (as ``kubectl`` converts YAML to JSON).
* Text larger than :attr:`Limits.bytes` and text that is not UTF-8.

The API (manifests, every JSON request body) and the command line share these functions, so a
manifest means the same, and is refused for the same reason, wherever it is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml: about ten times faster, and its parser is not recursive
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

#: Deepest nesting accepted (a Kubernetes pod template's affinity rules need about 12).
MAX_DEPTH = 64
#: Most nodes (scalars, lists, mappings, aliases expanded) in one document.
MAX_NODES = 200_000
#: Largest text accepted (the API's body limit is usually lower).
MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    depth: int = MAX_DEPTH
    nodes: int = MAX_NODES
    bytes: int = MAX_BYTES


DEFAULT = Limits()


class DocumentError(ValueError):
    """A document that cannot be accepted; the message says where and why. ``status`` is the
    HTTP status an API answers with (413 for a document too large, else 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, with timestamps kept as strings (JSON has no dates; ``kubectl`` keeps them
    as text too)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _BaseLoader.construct_yaml_str)


def _text(raw: bytes | str, origin: str, limits: Limits) -> str:
    size = len(raw)
    if size > limits.bytes:
        raise DocumentError(f"{origin}: {size} bytes is more than the {limits.bytes} accepted", 413)
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DocumentError(f"{origin}: not UTF-8 text (byte {error.start}: {error.reason})") from None


Path = tuple[Any, ...] | None  # a linked list, innermost last: (outer path, key or index)


def _where(path: Path) -> str:
    """A path like ``spec.classes[0].name`` (``the top level`` for the document itself)."""
    parts: list[Any] = []
    while path is not None:
        path, part = path
        parts.append(part)
    out = ""
    for part in reversed(parts[-8:] if len(parts) > 10 else parts):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(parts) > 10:  # the innermost levels only
        return f"<{len(parts) - 8} levels>{'' if out.startswith('[') else '.'}{out}"
    return out or "the top level"


def _string(value: str, origin: str, path: Path) -> str:
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DocumentError(f"{origin}: {_where(path)}: the text has a lone UTF-16 surrogate "
                            f"(\\u{ord(value[error.start]):04x} at character {error.start}), which no UTF-8 "
                            "text can hold") from None
    return value


def _key(key: Any, origin: str, path: Path) -> str:
    if isinstance(key, str):
        return _string(key, origin, path)
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
        return json.dumps(key)
    if key is None:
        return "null"
    raise DocumentError(f"{origin}: {_where(path)}: a mapping key must be text, not a {type(key).__name__}")


def _scalar(value: Any, origin: str, path: Path) -> bool:
    """Check a scalar; False when ``value`` is a list or a mapping (the caller walks into it)."""
    kind = type(value)
    if kind is int or kind is bool or value is None:
        return True
    if kind is str:
        _string(value, origin, path)
        return True
    if kind is float:
        if not math.isfinite(value):
            raise DocumentError(f"{origin}: {_where(path)}: {value} is not a number JSON can carry "
                                "(NaN and infinities are refused)")
        return True
    if kind is dict or kind is list:
        return False
    shown = {"bytes": "binary data (!!binary)", "set": "a set (!!set)"}.get(kind.__name__, f"a {kind.__name__}")
    raise DocumentError(f"{origin}: {_where(path)}: {shown} is not allowed: use text, numbers, true/false, null, "
                        "lists and mappings")


def plain(document: Any, origin: str = "the document", limits: Limits = DEFAULT) -> Any:
    """``document`` as plain JSON data (dict with str keys, list, str, int, finite float, bool,
    None), checked for depth, size and content; a copy only where a key had to become a string.
    Walks iteratively (a deep document is refused, not a crash), scalars without a stack entry."""
    if _scalar(document, origin, None):
        return document
    root: list[Any] = [document]
    nodes = 1
    # (container, slot in it, list or mapping, depth, path): a mapping whose keys change goes back in its slot
    stack: list[tuple[Any, Any, Any, int, Path]] = [(root, 0, document, 0, None)]
    while stack:
        parent, slot, value, depth, path = stack.pop()
        if depth >= limits.depth:
            raise DocumentError(f"{origin}: {_where(path)}: nested more than {limits.depth} levels deep")
        nodes += len(value)
        if nodes > limits.nodes:
            raise DocumentError(f"{origin}: more than {limits.nodes} values: too large a document", 413)
        if type(value) is list:
            items: Any = enumerate(value)
        else:
            if any(type(key) is not str for key in value):
                value = {_key(key, origin, (path, str(key))): item for key, item in value.items()}
                parent[slot] = value
            else:
                for key in value:
                    _string(key, origin, path)
            items = value.items()
        for key, item in items:
            if type(item) is int or not _scalar(item, origin, (path, key)):
                if type(item) is not int:
                    stack.append((value, key, item, depth + 1, (path, key)))
    return root[0]


def load_json(raw: bytes | str, origin: str = "the document", limits: Limits = DEFAULT) -> Any:
    """One JSON document as plain data (see the module docstring for what is refused)."""
    text = _text(raw, origin, limits)
    try:  # NaN and Infinity are let through here, to be refused by plain() naming their place
        document = json.loads(text)
    except RecursionError:
        raise DocumentError(f"{origin}: nested more than {limits.depth} levels deep") from None
    except json.JSONDecodeError as error:
        raise DocumentError(f"{origin}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise DocumentError(f"{origin}: not valid JSON: {str(error)[:200]}") from None
    return plain(document, origin, limits)


def _check_events(text: str, origin: str, limits: Limits) -> None:
    """Walk libyaml's event stream: depth and expanded size (aliases count as what they name)
    per document, before anything is built. Raises :class:`DocumentError`."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of the node it names
    open_nodes: list[list[Any]] = []  # per open collection: [anchor, nodes so far, height so far]
    total = 0

    def count(nodes: int) -> None:
        nonlocal total
        total += nodes
        if total > limits.nodes:
            raise DocumentError(f"{origin}: has more than {limits.nodes} values (aliases expanded): refused "
                                "before building it", 413)

    def finished(nodes: int, height: int) -> None:  # a complete node inside the open collection
        if len(open_nodes) + height - 1 > limits.depth:
            raise DocumentError(f"{origin}: nested more than {limits.depth} levels deep (aliases included)")
        if open_nodes:
            open_nodes[-1][1] += nodes
            open_nodes[-1][2] = max(open_nodes[-1][2], height + 1)

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise DocumentError(f"{origin}: alias *{event.anchor} refers to a node that is not complete or "
                                    "not defined before it (recursive aliases are refused)")
            count(sizes[event.anchor][0])
            finished(*sizes[event.anchor])
        elif isinstance(event, yaml.ScalarEvent):
            count(1)
            finished(1, 1)
            if event.anchor:
                sizes[event.anchor] = (1, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            count(1)
            open_nodes.append([event.anchor, 1, 1])
            if len(open_nodes) > limits.depth:
                raise DocumentError(f"{origin}: nested more than {limits.depth} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes, height = open_nodes.pop()
            if anchor:
                sizes[anchor] = (nodes, height)
            finished(nodes, height)
        elif isinstance(event, yaml.DocumentStartEvent):
            sizes.clear()


def load_yaml_all(raw: bytes | str, origin: str = "the document", limits: Limits = DEFAULT) -> list[Any]:
    """Every YAML document of a ``---``-separated stream as plain data (empty documents left
    out); JSON is YAML, so this reads JSON too."""
    text = _text(raw, origin, limits)
    try:
        _check_events(text, origin, limits)
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as error:
        raise DocumentError(f"{origin}: not valid YAML: {str(error)[:300]}") from None
    except RecursionError:
        raise DocumentError(f"{origin}: nested more than {limits.depth} levels deep") from None
    except (ValueError, TypeError) as error:  # an integer of 4300+ digits, an unhashable key, a bad encoding
        if isinstance(error, DocumentError):
            raise
        raise DocumentError(f"{origin}: cannot be read: {str(error)[:300]}") from None
    if len(documents) > 1:
        return [plain(d, f"{origin} (document {i + 1})", limits) for i, d in enumerate(documents)]
    return [plain(d, origin, limits) for d in documents]


def load_yaml(raw: bytes | str, origin: str = "the document", limits: Limits = DEFAULT) -> Any:
    """Exactly one YAML (or JSON) document as plain data."""
    documents = load_yaml_all(raw, origin, limits)
    if len(documents) != 1:
        raise DocumentError(f"{origin}: send exactly one document, got {len(documents)}")
    return documents[0]
