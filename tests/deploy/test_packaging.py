"""operator/ is mapped into the package as oraculum.operator and never shadows the standard library."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = "import operator, oraculum.operator.handlers as h; print(operator.__file__); print(h.__file__)"


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_import_operator_is_the_standard_library(where: str, tmp_path: Path) -> None:
    cwd = ROOT if where == "checkout" else tmp_path
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stdlib, handlers = result.stdout.split()
    assert Path(stdlib).name == "operator.py" and "site-packages" not in stdlib and str(ROOT) not in stdlib
    assert Path(handlers).name == "handlers.py"
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_wheel_maps_operator_into_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("oraculum", "operator", "api", "dashboard", "kube"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("oraculum-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "oraculum/operator/handlers.py" in names and "oraculum/operator/rbac.yaml" in names
    assert not any(name.startswith("operator/") for name in names)
    assert "oraculum/api/app.py" in names and "oraculum/api/routers/labels.py" in names and "oraculum/api/rbac.yaml" in names
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = f"import sys; sys.path.insert(0, {str(unpacked)!r}); " + PROBE
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stdlib, handlers = result.stdout.split()
    assert "site-packages" not in stdlib and handlers.startswith(str(unpacked))


def test_every_package_folder_is_listed_for_setuptools() -> None:
    """``packages`` in pyproject.toml is an explicit list (the mapped folders need it): a new room
    left out of it is missing from the wheel and from the strict editable install alike."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        base = ROOT / folder
        for module in base.rglob("*.py"):
            if "__pycache__" not in module.parts:
                found.add(".".join((package, *module.parent.relative_to(base).parts)))
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"
