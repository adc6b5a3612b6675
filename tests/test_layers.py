"""The package's layering, enforced: import-linter's contracts and no import circle anywhere.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and ``scripts/lint-imports``
runs them on the package as it is installed (with ``operator/``, ``api/`` and ``dashboard/``
mapped in). These tests run that script, show that a forbidden import breaks it, and look for
import circles between modules with grimp's graph (every import counts, a lazy one inside a
function too; imports under ``TYPE_CHECKING`` do not).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]


#: scripts/lint-imports as a module: ``stage(folder)`` and ``lint(folder, ...)``
lint_imports = SimpleNamespace(**runpy.run_path(str(ROOT / "scripts" / "lint-imports"), run_name="lint_imports"))


def test_every_contract_is_kept(tmp_path: Path) -> None:
    lint_imports.stage(tmp_path)
    result = lint_imports.lint(tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("learning/_probe.py", "import kopf", "never imports Kubernetes"),
    ("spectra/_probe.py", "from oraculum.learning import model", "Layers"),
    ("control/_probe.py", "import oraculum.api.app", "never imports Kubernetes"),
])
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """The contract can fail: the same check on a staged copy with one forbidden import added."""
    package = lint_imports.stage(tmp_path)
    (package / module).write_text(f"{line}\n")
    result = lint_imports.lint(tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout
    assert module.replace("/", ".").removesuffix(".py") in result.stdout


#: Prints the package's import graph as JSON ``{module: [imported, ...]}`` (run on a staged tree).
EDGES = """
import json, grimp
graph = grimp.build_graph("oraculum", cache_dir=None, exclude_type_checking_imports=True)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}))
"""


def import_circles(package: Path) -> list[list[str]]:
    """Every strongly connected set of more than one module in the staged package's import graph
    (built in a child process, so that the staged tree and not this checkout is what is read)."""
    result = subprocess.run([sys.executable, "-c", EDGES], cwd=package.parent, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(package.parent)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    edges = json.loads(result.stdout)
    modules = sorted(edges)
    index = {name: i for i, name in enumerate(modules)}
    pairs = [(index[a], index[b]) for a in modules for b in edges[a] if b in index and b != a]
    rows, cols = zip(*pairs) if pairs else ((), ())
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(modules), len(modules)))
    count, labels = connected_components(matrix, directed=True, connection="strong")
    groups = [[modules[i] for i in np.flatnonzero(labels == label)] for label in range(count)]
    return [group for group in groups if len(group) > 1]


def test_no_import_circle(tmp_path: Path) -> None:
    circles = import_circles(lint_imports.stage(tmp_path))
    assert not circles, "import circles (each line one strongly connected set):\n" + "\n".join(map(str, circles))


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    package = lint_imports.stage(tmp_path)
    (package / "spectra" / "_a.py").write_text("from oraculum.spectra import _b\n")
    (package / "spectra" / "_b.py").write_text("from oraculum.spectra import _a\n")
    assert ["oraculum.spectra._a", "oraculum.spectra._b"] in import_circles(package)
