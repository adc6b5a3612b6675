"""The container images (images/runtime, images/gpu-worker), checked without a Docker engine.

No image can be built here, so this checks what a build depends on: the bases are pinned, the
final stage runs as a non-root user, every file a COPY takes is in the (filtered) build context,
the entrypoint is the package's console script, the commands the chart runs exist in the CLI,
both images install from one lock that satisfies the package's requirements (and the GPU base's
TensorFlow is the locked one), and the wheel builds, installs into a fresh virtual environment
and runs from there.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = {"runtime": IMAGES / "runtime" / "Dockerfile", "gpu-worker": IMAGES / "gpu-worker" / "Dockerfile"}
LOCK = IMAGES / "requirements.lock"
UID = 10001
#: The commands the chart's containers run (charts/oraculum/templates), as CLI verb paths.
CHART_COMMANDS = [("operator",), ("serve", "api"), ("serve", "dashboard")]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    result = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def build_args(path: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions(path) if keyword == "ARG" and "=" in rest)


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (a stage starts at FROM)."""
    result: list[list[tuple[str, str]]] = []
    for item in instructions(path):
        if item[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert name and version and " " not in line, f"requirements.lock: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_bases_are_pinned_to_versions(image: str) -> None:
    path = DOCKERFILES[image]
    args = build_args(path)
    stage_names = set()
    for keyword, rest in instructions(path):
        if keyword != "FROM":
            continue
        words = rest.split()
        base = words[0]
        if base in stage_names:
            continue
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert ":" in base.split("/")[-1] and not base.endswith(":latest"), f"{image}: base {base} has no pinned tag"
        tag = base.split("/")[-1].split(":", 1)[1].split("@")[0]
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: base {base} is not pinned to a full version"
        if len(words) >= 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
    assert "sha256:<digest>" in path.read_text(), f"{image}: the Dockerfile says how to pin the base by digest"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_runs_as_the_non_root_user_with_the_cli_as_entrypoint(image: str) -> None:
    final = stages(DOCKERFILES[image])[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] == f"{UID}:{UID}", f"{image}: the last USER must be {UID}:{UID}, not {users}"
    assert any(keyword == "RUN" and f"--uid {UID}" in rest for keyword, rest in final), f"{image}: no user {UID} made"
    (entrypoint,) = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoint == '["oraculum"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["oraculum"] == "oraculum.cli:main"
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "HOME=/tmp" in env, f"{image}: the root filesystem is read-only on the cluster: HOME must be /tmp"


def ignore_patterns(dockerfile: Path) -> list[tuple[bool, str]]:
    lines = (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
    return [(line.startswith("!"), line.lstrip("!").rstrip("/")) for line in lines if line and not line.startswith("#")]


def in_context(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern decides; ``!`` re-includes."""
    included = True
    parts = relative.split("/")
    for negated, pattern in patterns:
        pattern = pattern.removeprefix("**/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))] + parts
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            included = negated
    return included


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_everything_copied_is_in_the_build_context(image: str) -> None:
    path = DOCKERFILES[image]
    patterns = ignore_patterns(path)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for keyword, rest in instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        if "--from=" in rest:
            continue
        for source in words[:-1]:
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"{image}: COPY {source}: no such file in the repository"
            assert in_context(source, patterns), f"{image}: COPY {source} is excluded by the .dockerignore"
    # `COPY . /src` must bring everything the wheel is built from, and nothing bulky
    needed = ["pyproject.toml", "README.md", "images/requirements.lock"]
    needed += [folder for folder in pyproject["tool"]["setuptools"]["package-dir"].values()]
    for relative in needed:
        assert (ROOT / relative).exists(), relative
        assert in_context(relative, patterns), f"{image}: {relative} is not in the build context"
        assert in_context(f"{relative}/x.py", patterns) or (ROOT / relative).is_file()
    for bulky in (".venv", "tests", "oraculum-data", "benchmarks", ".git", "oraculum/__pycache__/cli.cpython-311.pyc"):
        assert not in_context(bulky, patterns), f"{image}: {bulky} would be sent to the Docker daemon"


@pytest.mark.parametrize("verb", CHART_COMMANDS, ids=[" ".join(v) for v in CHART_COMMANDS])
def test_the_chart_commands_exist_in_the_cli(verb: tuple[str, ...]) -> None:
    import click
    from click.testing import CliRunner

    from oraculum.cli.main import main

    command: click.Command = main
    for word in verb:
        if not isinstance(command, click.Group) or word not in command.commands:
            pytest.skip(f"`oraculum {' '.join(verb)}` does not exist yet (the chart runs it; built in another issue)")
        command = command.commands[word]
    result = CliRunner().invoke(main, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if verb == ("operator",):
        assert {"--namespace", "--liveness"} <= options
    else:
        assert {"--host", "--port"} <= options


def test_the_lock_satisfies_the_package_and_matches_the_gpu_base() -> None:
    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is a dependency but not in images/requirements.lock: run images/update-lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject asks for {requirement}: run images/update-lock")
        for extra in requirement.extras:  # e.g. uvicorn[standard]: its extra's packages are locked too
            assert pins, extra
    assert "oraculum" not in pins
    tf_image = build_args(DOCKERFILES["gpu-worker"])["TF_IMAGE"]
    tf_version = re.search(r":(\d+\.\d+\.\d+)-gpu", tf_image).group(1)
    assert Version(tf_version) == Version(pins["tensorflow-cpu"]), (
        f"the GPU base has TensorFlow {tf_version}, the lock {pins['tensorflow-cpu']}: they must agree")
    text = DOCKERFILES["gpu-worker"].read_text()
    assert "requirements.lock" in text and "--no-deps" in text and "tensorflow[-_]cpu==" in text
    assert "requirements.lock" in DOCKERFILES["runtime"].read_text()


@pytest.mark.slow
def test_wheel_builds_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "-q", "-w", str(dist)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = dist.glob("oraculum-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"oraculum/cli/main.py", "oraculum/operator/main.py", "oraculum/operator/rbac.yaml"} <= names
    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    pins = lock_pins()
    for text in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue  # optional groups (test, umap) are not in the images
        name = canonicalize_name(requirement.name)
        assert name in pins and requirement.specifier.contains(pins[name], prereleases=True), text

    # a fresh environment with only the wheel in it; the dependencies come from this environment's
    # site-packages through a .pth (installing TensorFlow again would take minutes)
    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install",
                             "--no-deps", "--disable-pip-version-check", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (site,) = (fresh / "lib").glob("python3*/site-packages")
    import numpy

    (site / "dependencies.pth").write_text(str(Path(numpy.__file__).parents[1]) + "\n")
    probe = subprocess.run([str(fresh / "bin" / "python"), "-c", "import oraculum.cli, oraculum.operator.main; "
                            "print(oraculum.cli.__file__)"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().startswith(str(site)), f"oraculum was imported from {probe.stdout}, not the wheel"
    for verb in ([], ["operator"]):
        result = subprocess.run([str(fresh / "bin" / "oraculum"), *verb, "--help"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0 and "Usage: oraculum" in result.stdout, result.stderr[-3000:]
