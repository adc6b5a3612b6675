"""What machine a benchmark ran on: every results JSON carries this, so figures can be compared."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def hardware() -> dict[str, object]:
    """CPU model, cores, Python and the versions of the numeric libraries that matter."""
    import numpy

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("astropy", "h5py", "tensorflow-cpu", "tensorflow"):
        try:  # metadata only: importing TensorFlow just for its version costs seconds
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    return info
