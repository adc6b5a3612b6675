"""The demo's manifests (:data:`DEMO_MANIFESTS`), pointed at the pool the user asked for.

``oraculum demo`` applies the same two manifests a cluster would take (a PreprocessingJob and an
ActiveLearningExperiment with a human oracle), so nothing in the demo is a separate toy. The
options only retarget them: ``--count``/``--seed`` change the synthetic pool, ``--source DIR``
swaps it for a folder of real FITS files (checked first, see :mod:`oraculum.demo.sources`),
``--iterations`` sets ``stopping.maxIterations``. A
retargeted pool gets names of its own (dataset, PreprocessingJob, experiment), so a second pool in
the same store never collides with the first; and the headless run gets an experiment of its own,
so a simulated oracle never labels a person's batch.

The manifests live here, in the package, so that ``oraculum demo`` works from an installed wheel
too; ``oraculum docs`` writes them to ``examples/demo.yaml`` (for ``kubectl apply -f``) and
``oraculum docs --check`` fails when that copy differs.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oraculum.manifests import ActiveLearningExperiment, ManifestError, PreprocessingJob, parse_manifest

__all__ = ["DEMO_MANIFESTS", "DemoPlan", "load_plan"]

_MAX_NAME = 63
#: Where ``oraculum docs`` writes :data:`DEMO_MANIFESTS` in a checkout.
EXAMPLE = "examples/demo.yaml"
#: The demo's manifests, what ``oraculum demo`` applies without ``--manifests``.
DEMO_MANIFESTS = """\
# The manifests of `oraculum demo` (and `make demo`): a labelling campaign for a person at the
# dashboard, on a synthetic archive that needs no download. They run as they are on one machine or
# on a cluster:
#
#   oraculum demo                        # this machine: API, dashboard and Jobs on localhost
#   oraculum demo --headless             # the same loop, a simulated oracle labelling through the API
#   kubectl apply -f examples/demo.yaml  # a cluster with the oraculum chart (label in its dashboard)
#
# The PreprocessingJob generates 3,000 synthetic LAMOST-format spectra (oraculum.spectra.synth: absorption
# stars, rare single-peak H-alpha emitters (5 %) and double-peak, Be-star-like emitters (3 %), and
# some broken files that ingestion rejects) in the store under archive/synthetic-3000-s0/, with
# their true labels in labels.csv, and preprocesses them into the dataset "demo-synthetic-3000".
# `oraculum demo --count N` makes N spectra instead, `--source DIR` reads real FITS files; the demo
# then names the dataset and the experiment after that pool.
#
# The experiment starts with 40 random spectra to label (iteration 0, no model yet), then each
# iteration trains the tiny network (well under a minute on 2 CPU cores), scores the pool and asks
# for the 20 spectra it is least sure about (entropy) plus 10 predicted emitters, chosen at random
# and shown without the network's guess, that estimate the precision of the predictions.
# It stops after 5 iterations (about 160 labels). No plateau rule: the precision of the predicted
# emitters is high from the first trained network on, while the number found (recall) keeps growing.
# Every figure it reports comes from synthetic data.
apiVersion: oraculum.dev/v1alpha1
kind: PreprocessingJob
metadata:
  name: demo-synthetic-3000
spec:
  source:
    synthetic:
      count: 3000
      seed: 0
  dataset: demo-synthetic-3000
  shards: 2
  parallelism: 2
  resources:
    cpu: "1"
    memory: 1Gi
---
apiVersion: oraculum.dev/v1alpha1
kind: ActiveLearningExperiment
metadata:
  name: demo-emission
spec:
  dataset: demo-synthetic-3000
  classes:
    - name: absorption
      hotkey: "1"
    - name: emission
      hotkey: "2"
      target: true
    - name: double-peak
      hotkey: "3"
      target: true
  model:
    preset: tiny
    epochs: 15
    patience: 3
    seed: 0
  acquisition:
    strategy: entropy
    batchSize: 20
    initialBatchSize: 40
  estimation:
    size: 10
    blind: true
  stopping:
    maxIterations: 5
  oracle:
    type: human
  resources:
    cpu: "1"
    memory: 2Gi
"""


@dataclass(frozen=True)
class DemoPlan:
    """What the demo applies, and where the true labels of the pool are (for the headless oracle)."""

    preprocessing: dict[str, Any]
    experiment: dict[str, Any]
    #: CSV of true labels: a key in the store (synthetic pools) or a local path; None when unknown.
    truth: str | None
    #: The pool in words, for the log.
    pool: str

    @property
    def dataset(self) -> str:
        return str(self.preprocessing["spec"]["dataset"])

    @property
    def ppj_name(self) -> str:
        return str(self.preprocessing["metadata"]["name"])

    @property
    def experiment_name(self) -> str:
        return str(self.experiment["metadata"]["name"])

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.experiment["spec"]["classes"])


def _name(*parts: str) -> str:
    """A valid metadata.name (lowercase, digits, '-', at most 63 characters) from ``parts``."""
    text = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    return text[:_MAX_NAME].rstrip("-") or "demo"


def _read(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PreprocessingJob and the experiment in ``path`` (None: :data:`DEMO_MANIFESTS`)."""
    where = path if path is not None else f"{EXAMPLE} (built in)"
    try:
        text = path.read_text(encoding="utf-8") if path is not None else DEMO_MANIFESTS
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as error:
        raise ManifestError(f"{path}: cannot read the demo's manifests: {error.strerror}; give --manifests FILE "
                            "(a PreprocessingJob and an ActiveLearningExperiment, like examples/demo.yaml)") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{where}: not valid YAML: {error}") from None
    parsed = [parse_manifest(d, f"{where} (document {i + 1})") for i, d in enumerate(documents)]
    ppjs = [d for d, m in zip(documents, parsed, strict=True) if isinstance(m, PreprocessingJob)]
    ales = [d for d, m in zip(documents, parsed, strict=True) if isinstance(m, ActiveLearningExperiment)]
    if len(ppjs) != 1 or len(ales) != 1:
        raise ManifestError(f"{where}: the demo needs exactly one PreprocessingJob and one ActiveLearningExperiment, "
                            f"found {len(ppjs)} and {len(ales)}")
    ppj, ale = copy.deepcopy(ppjs[0]), copy.deepcopy(ales[0])
    if ale["spec"].get("dataset") != ppj["spec"].get("dataset"):
        raise ManifestError(f"{where}: the experiment's spec.dataset ({ale['spec'].get('dataset')!r}) must be the "
                            f"PreprocessingJob's spec.dataset ({ppj['spec'].get('dataset')!r})")
    return ppj, ale


def load_plan(path: Path | None = None, *, count: int | None = None, seed: int | None = None,
              source: Path | None = None, labels: str | None = None, iterations: int | None = None,
              headless: bool = False, experiment: str | None = None, selection: Path | None = None) -> DemoPlan:
    """The demo's manifests from ``path`` (None: :data:`DEMO_MANIFESTS`), retargeted as the options ask
    (see the module docstring). ``selection``: the folder the PreprocessingJob reads instead of
    ``source`` when the demo left some of its files out (see :mod:`oraculum.demo.sources`); the
    names then follow the selection.

    Raises :class:`ManifestError` naming the file and field when the result is not a valid pair.
    """
    ppj, ale = _read(path)
    given = ppj["spec"]["source"]
    synthetic = dict(given.get("synthetic") or {})
    renamed = None
    if source is not None:
        folder = source.resolve()
        read = selection.resolve() if selection is not None else folder
        ppj["spec"]["source"] = {"url": str(read)}
        digest = hashlib.sha256(str(read).encode()).hexdigest()[:6]
        renamed = _name("demo", folder.name[-40:], digest)
        truth = labels or (str(folder / "labels.csv") if (folder / "labels.csv").is_file() else None)
        pool = f"the FITS files in {folder}" + (f" that passed the checks (linked in {read})" if selection else "")
    elif synthetic:
        wanted = {"count": count if count is not None else synthetic.get("count"),
                  "seed": seed if seed is not None else synthetic.get("seed", 0)}
        if wanted != {"count": synthetic.get("count"), "seed": synthetic.get("seed", 0)}:
            renamed = _name("demo", "synthetic", str(wanted["count"]), f"s{wanted['seed']}" if wanted["seed"] else "")
        ppj["spec"]["source"] = {**given, "synthetic": wanted}
        truth = labels or f"archive/synthetic-{wanted['count']}-s{wanted['seed']}/labels.csv"
        pool = f"{wanted['count']} synthetic LAMOST-format spectra (seed {wanted['seed']})"
    else:
        if count is not None or seed is not None:
            raise ManifestError(f"{path or EXAMPLE}: --count and --seed need a PreprocessingJob with a synthetic source")
        truth = labels
        pool = f"the files at {given.get('url')}"
    if renamed is not None:
        ppj["metadata"]["name"] = renamed
        ppj["spec"]["dataset"] = renamed
        ale["spec"]["dataset"] = renamed
    name = experiment or ale["metadata"]["name"]
    if experiment is None and renamed is not None:
        name = _name(name, renamed.removeprefix("demo-"))
    if experiment is None and headless:
        name = _name(name[:_MAX_NAME - len("-headless")], "headless")
    ale["metadata"]["name"] = name
    if iterations is not None:
        ale["spec"].setdefault("stopping", {})["maxIterations"] = int(iterations)
    # validate the result as the API will (a bad --experiment name is reported here, by field)
    parse_manifest(ppj, "the demo's PreprocessingJob")
    parse_manifest(ale, "the demo's ActiveLearningExperiment")
    return DemoPlan(preprocessing=ppj, experiment=ale, truth=truth, pool=pool)
