"""``docs/reference/manifests.md``: every field of every custom resource, from the CRDs in ``crds/``.

The CRDs are themselves generated from the pydantic spec models (:mod:`oraculum.control.crds`), so this page
shows exactly what the API server validates and ``kubectl explain`` prints: each field's path, type,
default, allowed values or range and description, plus the resource's names and printer columns.
Reading the YAML (not the models) keeps the page honest about what a cluster really receives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from oraculum.docs.page import banner, table

__all__ = ["field_rows", "manifest_reference", "type_name"]


def manifest_reference(crd_dir: Path) -> str:
    """The whole page, one section per kind (in the order of the CRD file names)."""
    files = sorted(crd_dir.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no CRD YAML files in {crd_dir}: run `oraculum crds --out {crd_dir}` first")
    crds = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in files]
    kinds = ", ".join(f"[{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})" for c in crds)
    parts = [
        banner("the CRDs in crds/ (themselves generated from oraculum/manifests.py by `oraculum crds`)"),
        "# Manifest reference\n",
        f"The custom resources of oraculum: {kinds}. Every field below is checked by the API server "
        "(and by `oraculum run` on one machine) exactly as listed; `kubectl explain <kind>.spec.<field>` "
        "prints the same descriptions on a cluster. Field names are camelCase in manifests. "
        "`a[].b` is field `b` of each item of list `a`; `<key>` stands for any map key. "
        "Ready-to-apply manifests are in [examples/](../../examples/); the walk-through is the "
        "[tutorial](../tutorial.md).\n",
    ]
    for crd, path in zip(crds, files):
        parts.append(_kind_section(crd, path.name))
    return "\n".join(parts)


def _kind_section(crd: dict[str, Any], file_name: str) -> str:
    names = crd["spec"]["names"]
    out = [f"## {names['kind']}\n"]
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        short = ", ".join(f"`{name}`" for name in names.get("shortNames", [])) or "none"
        categories = ", ".join(f"`{name}`" for name in names.get("categories", [])) or "none"
        out.append(
            f"`apiVersion: {crd['spec']['group']}/{version['name']}`, {crd['spec']['scope'].lower()}; "
            f"plural `{names['plural']}`, short name {short}, category {categories} "
            f"(CRD [crds/{file_name}](../../crds/{file_name}); served: {str(version.get('served')).lower()}, "
            f"storage: {str(version.get('storage')).lower()}"
            + ("; status is a subresource" if "status" in version.get("subresources", {}) else "")
            + ").\n"
        )
        out.append(f"{schema.get('description', '')}\n")
        columns = version.get("additionalPrinterColumns", [])
        if columns:
            out.append(f"`kubectl get {names.get('shortNames', [names['plural']])[0]}` shows:\n")
            out.append(table(["column", "type", "JSON path", "meaning"],
                             [(c["name"], c["type"], f"`{c['jsonPath']}`", c.get("description", "")) for c in columns]))
        for part in ("spec", "status"):
            node = schema.get("properties", {}).get(part)
            if node is None:
                continue
            out.append(f"### {names['kind']} `.{part}`\n")
            if node.get("description"):
                out.append(f"{node['description']}\n")
            out.append(table(["field", "type", "default", "allowed", "description"],
                             field_rows(node, part, part in schema.get("required", []))[1:]))
    return "\n".join(out)


def type_name(node: dict[str, Any]) -> str:
    """The field's type as a reader thinks of it: ``integer``, ``list of object``, ``map of string``."""
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        kind = "object (any fields)"
    elif node.get("type") == "array":
        kind = "list of " + type_name(node.get("items", {}))
    elif node.get("type") == "object" and "additionalProperties" in node:
        kind = "map of " + type_name(node["additionalProperties"])
    else:
        kind = str(node.get("type", "any"))
    if node.get("format"):
        kind += f" ({node['format']})"
    return kind


def _allowed(node: dict[str, Any]) -> str:
    """Enum, range, lengths, pattern and CEL rules of one node, as one line."""
    rules = []
    if "enum" in node:
        rules.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None or high is not None:
        left = f"{_number(low)} {'<' if node.get('exclusiveMinimum') else '≤'} " if low is not None else ""
        right = f" {'<' if node.get('exclusiveMaximum') else '≤'} {_number(high)}" if high is not None else ""
        rules.append(f"{left}x{right}")
    for key, what in (("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                      ("maxItems", "items ≤")):
        if key in node:
            rules.append(f"{what} {node[key]}")
    if "pattern" in node:
        rules.append(f"pattern `{node['pattern']}`")
    for rule in node.get("x-kubernetes-validations", []):
        rules.append(f"{rule.get('message', '')} (`{rule['rule']}`)")
    return "; ".join(rules)


def _number(value: float | int) -> str:
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else f"{value:g}"


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list)):
        return f"`{yaml.safe_dump(value, default_flow_style=True).strip()}`"
    return f"`{value}`"


def field_rows(node: dict[str, Any], path: str, required: bool) -> list[tuple[str, str, str, str, str]]:
    """Rows (field, type, default, allowed, description) for ``node`` and everything under it."""
    label = f"`{path}`" + (" (required)" if required else "") + (" (nullable)" if node.get("nullable") else "")
    rows = [(label, type_name(node), _default(node), _allowed(node), node.get("description", ""))]
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        rows += field_rows(node["items"], f"{path}[]", False)[1:]
        items = node["items"]
        if "properties" not in items and not items.get("x-kubernetes-preserve-unknown-fields"):
            extra = _allowed(items)
            if extra:
                rows[0] = (*rows[0][:3], "; ".join(part for part in (rows[0][3], f"each item: {extra}") if part), rows[0][4])
    if isinstance(node.get("additionalProperties"), dict):
        rows += field_rows(node["additionalProperties"], f"{path}.<key>", False)[1:]
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        rows += field_rows(child, f"{path}.{name}", name in needed)
    return rows
