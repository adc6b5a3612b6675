"""The documentation stays true: generated references match their sources, links resolve, every
`oraculum <verb>` the README and the tutorial show exists, the README's resource table names real
fields, and the API reference's roles are the ones the API enforces."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from oraculum.docs.benchmarks import benchmark_page
from oraculum.cli.main import main
from oraculum.manifests import ExperimentSpec, PreprocessingJobSpec

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
REGENERATE = "oraculum docs"


# --- generated pages ---------------------------------------------------------------------------


def test_generated_pages_are_current() -> None:
    result = CliRunner().invoke(main, ["docs", "--check", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output


def _copy_sources(target: Path) -> None:
    shutil.copytree(ROOT / "crds", target / "crds")
    (target / "benchmarks").mkdir()
    shutil.copytree(ROOT / "benchmarks" / "results", target / "benchmarks" / "results")
    for script in (ROOT / "benchmarks").glob("bench_*.py"):
        shutil.copy(script, target / "benchmarks" / script.name)


def test_a_broken_results_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "crds", tmp_path / "crds")
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "api.json").write_text('{"benchmark": "api", ')  # cut short, as by a killed benchmark
    outcome = CliRunner().invoke(main, ["docs", "--check", "--root", str(tmp_path)])
    assert outcome.exit_code == 1, outcome.output
    assert "api.json: not a readable JSON results file" in outcome.output and "Traceback" not in outcome.output
    (results / "api.json").write_text("[1, 2]")
    outcome = CliRunner().invoke(main, ["docs", "--root", str(tmp_path)])
    assert outcome.exit_code == 1 and "must hold a JSON object, not list" in outcome.output


def test_check_fails_on_a_stale_page_and_says_how_to_regenerate(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["docs", "--check", "--root", str(tmp_path)]).exit_code != 0  # nothing written yet
    written = runner.invoke(main, ["docs", "--root", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert runner.invoke(main, ["docs", "--check", "--root", str(tmp_path)]).exit_code == 0

    results = tmp_path / "benchmarks" / "results" / "readers.json"
    data = json.loads(results.read_text())
    data["speedup_per_core_cpu_time"] = 123.4
    results.write_text(json.dumps(data))
    stale = runner.invoke(main, ["docs", "--check", "--root", str(tmp_path)])
    assert stale.exit_code != 0
    assert "docs/benchmarks.md" in stale.output and f"`{REGENERATE}`" in stale.output
    assert "docs/reference/manifests.md" not in stale.output

    page = tmp_path / "docs" / "reference" / "manifests.md"
    page.write_text(page.read_text() + "\nhand-written addition\n")
    stale = runner.invoke(main, ["docs", "--check", "--root", str(tmp_path)])
    assert "docs/reference/manifests.md" in stale.output

    rewritten = runner.invoke(main, ["docs", "--root", str(tmp_path)])
    assert "docs/benchmarks.md" in rewritten.output and "123" in (tmp_path / "docs" / "benchmarks.md").read_text()
    assert runner.invoke(main, ["docs", "--check", "--root", str(tmp_path)]).exit_code == 0


def test_docs_outside_a_checkout_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["docs", "--root", str(tmp_path)])
    assert result.exit_code != 0 and "no crds/ folder" in result.output


# --- the manifest reference ------------------------------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for argument in typing.get_args(annotation):
            found = _model_of(argument)
            if found is not None:
                return found
    return None


def _field_paths(model: type[BaseModel], prefix: str) -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        paths.append(path)
        nested = _model_of(info.annotation)
        if nested is not None:
            paths += _field_paths(nested, f"{path}[]" if _is_list(info.annotation) else path)
    return paths


def _is_list(annotation: Any) -> bool:
    """Whether an annotation is a list, also inside ``X | None``."""
    if typing.get_origin(annotation) is list:
        return True
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(
        _is_list(argument) for argument in typing.get_args(annotation))


@pytest.mark.parametrize(("kind", "model"), [("ActiveLearningExperiment", ExperimentSpec),
                                             ("PreprocessingJob", PreprocessingJobSpec)])
def test_manifest_reference_lists_every_field_of_the_models(kind: str, model: type[BaseModel]) -> None:
    page = (ROOT / "docs" / "reference" / "manifests.md").read_text()
    section = page.split(f"## {kind}\n", 1)[1].split("\n## ", 1)[0]
    missing = [path for path in _field_paths(model, "spec") if f"| `{path}`" not in section]
    assert not missing, f"fields of {model.__name__} missing from the {kind} section: {missing}"


def test_manifest_reference_shows_defaults_choices_bounds_and_printing() -> None:
    page = (ROOT / "docs" / "reference" / "manifests.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `spec.")}
    strategy = rows["`spec.acquisition.strategy`"]
    assert "`entropy`" in strategy.split("|")[3] and "one of `entropy`, `margin`, `least-confidence`, `bald`, `random`" in strategy
    assert "0 < x < 1" in rows["`spec.estimation.confidence`"] and "`0.95`" in rows["`spec.estimation.confidence`"]
    assert "items ≥ 2" in rows["`spec.classes` (required)"]
    assert "give exactly one of url" in rows["`spec.source` (required)"]
    assert "short name `ale`" in page and "short name `ppj`" in page
    assert "| Estimate | string | `.status.estimate.summary` |" in page


# --- the API reference -------------------------------------------------------------------------


def _api_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in (ROOT / "docs" / "reference" / "api.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            rows.append((cells[0], cells[1].strip("`"), cells[2]))
    return rows


def test_api_reference_lists_every_operation_of_the_openapi_document() -> None:
    document = json.loads((ROOT / "docs" / "reference" / "openapi.json").read_text())
    operations = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert operations and {(m, p) for m, p, _ in _api_rows()} == operations


#: For each documented role: a token that must be refused (None: no token) and one that must pass.
_REFUSED_AND_ALLOWED = {
    "none (public)": (None, None),
    "any token": (None, "viewer"),
    "viewer": ("worker", "viewer"),
    "oracle": ("viewer", "oracle"),
    "admin": ("oracle", "admin"),
    "worker (or admin)": ("oracle", "worker"),
    "signed link (no token)": ("admin", None),  # even an admin token opens nothing without the signature
}
_TOKENS = {role: f"{role}-docs-test-token-0123456789" for role in ("viewer", "oracle", "admin", "worker")}


def test_api_reference_roles_are_the_ones_the_api_enforces(tmp_path: Path) -> None:
    """Each endpoint refuses a token one role too low (403; 401 without a token) and, for reads,
    accepts the documented role. Refusals happen in the authentication dependency, before any
    handler runs, so the calls change nothing. A real app on a local store; no network."""
    from fastapi.testclient import TestClient

    from oraculum.api.app import create_app
    from oraculum.settings import Settings

    settings = Settings(store=str(tmp_path / "store"), api_backend="local", redis_url=None, auth_file=None,
                        api_tokens=",".join(f"{role}-user:{role}:{token}" for role, token in _TOKENS.items()),
                        api_run_jobs=False, root_path="")
    document = json.loads((ROOT / "docs" / "reference" / "openapi.json").read_text())
    rows = _api_rows()
    assert {role for _, _, role in rows} <= set(_REFUSED_AND_ALLOWED), "a role the test does not know"
    problems = []
    with TestClient(create_app(settings)) as client:
        for method, path, role in rows:
            url = re.sub(r"\{(iteration|index)\}", "0", path)
            url = re.sub(r"\{[^}]+\}", "x", url)
            refused, allowed = _REFUSED_AND_ALLOWED[role]
            if role != "none (public)":
                headers = {"Authorization": f"Bearer {_TOKENS[refused]}"} if refused else {}
                status = client.request(method, url, headers=headers).status_code
                if status != (403 if refused else 401):
                    problems.append(f"{method} {path} ({role}) answered {status} to {refused or 'no token'}")
            streams = "text/event-stream" in json.dumps(document["paths"][path][method.lower()].get("responses", {}))
            if method == "GET" and not streams and role != "signed link (no token)":  # tests/api/test_share.py signs
                headers = {"Authorization": f"Bearer {_TOKENS[allowed]}"} if allowed else {}
                status = client.request(method, url, headers=headers).status_code
                if status in (401, 403):
                    problems.append(f"{method} {path} ({role}) refused {allowed or 'no token'} with {status}")
    assert not problems, problems


# --- links, commands, the README's table ----------------------------------------------------


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto:, or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def _code(text: str) -> list[str]:
    """Lines of fenced code blocks and inline code spans: where commands are shown."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines += block.splitlines()
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    return lines


#: `oraculum` in command position: at the start (after a prompt, env assignments or a path such
#: as .venv/bin/), or after a shell operator.
_COMMAND = re.compile(r"(?:^|&&|\|\||[;|(]|\$\()\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?oraculum\s+(.*)$")


def _verbs(line: str) -> list[str] | None:
    """The verb path of an `oraculum ...` command on this line (e.g. ['dataset', 'info']), if any."""
    match = _COMMAND.search(line.strip())
    if match is None:
        return None
    try:
        words = shlex.split(match.group(1).split(" #", 1)[0], comments=False)
    except ValueError:
        words = match.group(1).split()
    takes_value = {opt for param in main.params if getattr(param, "is_flag", False) is False
                   and not getattr(param, "count", False) for opt in param.opts}
    path: list[str] = []
    command: Any = main
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word.startswith("-"):
            skip = word in takes_value and command is main
            continue
        if not re.fullmatch(r"[a-z][a-z-]*", word) or not hasattr(command, "commands"):
            break
        path.append(word)
        command = command.commands.get(word)
        if command is None:
            break
    return path or None


@pytest.mark.parametrize("page", ["README.md", "docs/tutorial.md", "docs/features.md"])
def test_every_oraculum_verb_shown_exists(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    commands = {tuple(verbs) for line in _code(text) if (verbs := _verbs(line))}
    assert commands, f"no oraculum command found in {page}: the scanner is broken"
    runner = CliRunner()
    failed = {" ".join(c): runner.invoke(main, [*c, "--help"]).output[-300:] for c in commands
              if runner.invoke(main, [*c, "--help"]).exit_code != 0}
    assert not failed, f"{page} shows commands the CLI does not have: {failed}"


def test_the_command_scanner_reads_commands_and_ignores_other_mentions() -> None:
    assert _verbs(".venv/bin/oraculum demo --headless") == ["demo"]
    assert _verbs("oraculum --store s3://oraculum --s3-endpoint http://x:9000 dataset info pool --rejected") == ["dataset", "info"]
    assert _verbs('ORACULUM_API_TOKENS="a:oracle:b" oraculum serve api') == ["serve", "api"]
    assert _verbs("helm install oraculum charts/oraculum --namespace oraculum") is None
    assert _verbs("oraculum nosuchverb") == ["nosuchverb"]  # reported as missing by the test above


def test_readme_resource_table_names_real_fields() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = [line for line in text.split("## The custom resources", 1)[1].splitlines() if line.startswith("| ")][1:]
    schemas = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        schemas[crd["spec"]["names"]["kind"]] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    kind = None
    checked = 0
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        named = re.match(r"`(\w+)`", cells[0])
        if named:
            kind = named.group(1)
        kinds = list(schemas) if cells[0] == "both" else [kind]
        for field in re.findall(r"`([a-zA-Z]+(?:\.[a-zA-Z]+)*)`", cells[1]):
            for k in kinds:
                node = schemas[k]
                for part in field.split("."):
                    assert part in node.get("properties", {}), f"README names {k} field {field!r}, which does not exist"
                    node = node["properties"][part]
                checked += 1
    assert checked >= 15


# --- the benchmark page's logic on made-up results ------------------------------------------


def test_benchmark_page_states_missed_targets_and_lists_unknown_benchmarks(tmp_path: Path) -> None:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    hardware = {"cpu": "Test CPU", "cores": 4, "cores_available": 4, "python": "3.11.0"}
    (results / "api.json").write_text(json.dumps({
        "benchmark": "api", "description": "API gateway under load.", "clients": 3,
        "results": {"label write (mixed)": {"clients": 3, "seconds": 1.0, "requests": 10, "throughput_per_s": 10.0,
                                            "errors": {}, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 70.0, "max_ms": 80.0}},
        "targets": {"label_write_p99_ms": 50.0, "spectrum_fetch_p95_ms": 20.0},
        "verdict": {"label_write_p99_ms": 70.0, "label_write_p99_target_met": False,
                    "spectrum_fetch_p95_ms": 12.0, "spectrum_fetch_p95_target_met": True},
        "hardware": hardware, "load_average": [0.5, 0.4, 0.3]}))
    (results / "newthing.json").write_text(json.dumps({"description": "A new benchmark.", "spectra_s": 1234.5,
                                                        "hardware": hardware}))
    page = benchmark_page(results, tmp_path)
    assert "1 of 2 targets missed" in page
    assert "| [api](#api) | label write p99 ms (3 clients) | < 50 | 70 | **no** |" in page
    assert "| spectrum fetch p95 ms (3 clients) | < 20 | 12 | yes |" in page
    assert "## newthing" in page and "| spectra s | 1,234 |" in page and "No summary is written" in page
    assert "Test CPU, 4 cores (4 available), Python 3.11.0" in page and "0.50, 0.40, 0.30" in page
