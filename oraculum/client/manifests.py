"""Manifests on the client's side: reading one (a dict, a YAML/JSON file or YAML text), the
collection its kind lives in, and what differs between a manifest and a resource that exists.

What ``kubectl apply -f`` takes, checked before any request is sent, so that a mistyped path or
a second document in the file is a clear ``ValueError`` rather than an answer from the API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oraculum.safe_parse import DocumentError, load_yaml_all

__all__ = ["KINDS", "plural", "read_manifest", "spec_differences"]

#: Short kind -> (the manifest's kind, the API's collection).
KINDS = {"experiment": ("ActiveLearningExperiment", "experiments"),
         "preprocessingjob": ("PreprocessingJob", "preprocessingjobs")}


def plural(kind: str) -> str:
    """The API's collection of ``kind``: experiment (or ale, ActiveLearningExperiment) or
    preprocessingjob (ppj, PreprocessingJob), in any case, singular or plural."""
    key = kind.lower().replace("-", "").replace("_", "").rstrip("s")
    key = {"activelearningexperiment": "experiment", "ale": "experiment", "ppj": "preprocessingjob"}.get(key, key)
    if key not in KINDS:
        raise ValueError(f"kind {kind!r}: use 'experiment' or 'preprocessingjob'")
    return KINDS[key][1]


def manifest_plural(document: dict[str, Any]) -> str:
    """The collection of a manifest's kind; ValueError for a kind the API does not take."""
    kind = str(document.get("kind", ""))
    found = next((p for k, p in KINDS.values() if k == kind), None)
    if found is None:
        raise ValueError(f"manifest kind {kind!r}: expected one of {', '.join(k for k, _ in KINDS.values())}")
    return found


def read_manifest(manifest: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """One manifest as a dict: ``manifest`` itself, the one document of a YAML/JSON file, or YAML
    text; ValueError (naming the file) for anything else."""
    if isinstance(manifest, dict):
        return manifest
    text = str(manifest)
    origin = "the manifest text"
    if isinstance(manifest, os.PathLike) or ("\n" not in text and Path(text).expanduser().is_file()):
        origin = os.fspath(manifest)
        try:
            text = Path(origin).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"manifest file {origin}: cannot read it: {getattr(error, 'strerror', None) or error}") from None
    elif "\n" not in text.strip() and not text.lstrip().startswith("{"):
        # one line that is not a file: a mistyped path far more often than a manifest
        raise ValueError(f"manifest {text!r}: no such file (nor a manifest); give an existing YAML/JSON file, "
                         "the manifest's YAML text, or a dict")
    try:
        documents = load_yaml_all(text, origin)
    except DocumentError as error:  # the same wording as before the safe loader: YAML or JSON is accepted
        raise ValueError(str(error).replace(": not valid YAML:", ": not YAML or JSON:", 1)) from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ValueError(f"{origin}: expected exactly one manifest (a mapping), found {len(documents)} document(s)")
    return documents[0]


def spec_differences(wanted: dict[str, Any], existing_spec: dict[str, Any]) -> list[str]:
    """Fields (``spec.a.b: old -> new``) where the manifest ``wanted`` differs from a resource's
    ``existing_spec``, both normalised as the registry stores them (defaults filled in), so only
    real changes count."""
    from oraculum.control.registry import normalised
    from oraculum.manifests import ManifestError, parse_manifest

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out.update(flat(item, f"{prefix}.{key}"))
            return out or {prefix: {}}
        return {prefix: value}

    def spec_of(spec: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(normalised(parse_manifest({**wanted, "spec": spec})).get("spec") or {})
        except ManifestError:
            return dict(spec)

    new, old = flat(spec_of(wanted["spec"]), "spec"), flat(spec_of(existing_spec), "spec")
    return [f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
            for key in sorted(set(new) | set(old)) if new.get(key) != old.get(key)]
