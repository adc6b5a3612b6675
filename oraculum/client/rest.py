"""The Python client of the oraculum API, for notebooks and scripts.

Everything a person does in the dashboard, and what an experimenter does with ``kubectl``, as
plain calls that return numpy arrays and astropy tables::

    from oraculum.client import Client

    api = Client("http://127.0.0.1:8000", token="...")   # or ORACULUM_API_URL / ORACULUM_TOKEN
    api.experiments()                                    # [Resource(name='exp', phase='AwaitingLabels', ...)]
    batch = api.batch("exp")                             # BatchData: flux (n x grid), ids, probabilities
    api.set_label("exp", int(batch.indices[0]), "emission")
    api.labels("exp")                                    # astropy Table (format="pandas": a DataFrame)
    api.candidates("exp")                                # astropy Table, from the VOTable
    api.upload("spectra/", prefix="lamost-dr2")          # resumable, checksummed (oraculum.client.upload)

Only HTTP: the client never reads the object store, so it works from a laptop against a
cluster's gateway, with the caller's token deciding what is allowed. Tables are astropy's by
default (astropy is a dependency; pandas is not): ``format="pandas"`` converts with
``Table.to_pandas()`` when pandas is installed. An answer that is not 2xx raises
:class:`ClientError` with the HTTP status and the API's own message.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np
import yaml
from astropy.table import Table

from oraculum.client.errors import ClientError, response_error

if TYPE_CHECKING:
    from oraculum.client.upload import UploadReport

__all__ = ["BatchData", "Client", "ClientError", "DatasetInfo", "Resource", "Spectrum"]

PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
Format = Literal["astropy", "pandas"]
KINDS = {"experiment": ("ActiveLearningExperiment", "experiments"),
         "preprocessingjob": ("PreprocessingJob", "preprocessingjobs")}


def as_format(table: Table, format: Format) -> Any:
    """``table`` as asked: the astropy Table itself, or a pandas DataFrame."""
    if format == "astropy":
        return table
    if format == "pandas":
        try:
            return table.to_pandas()
        except ImportError:
            raise ImportError("format='pandas' needs pandas: pip install pandas (or use the astropy Table)") from None
    raise ValueError(f"format must be 'astropy' or 'pandas', not {format!r}")


@dataclass(frozen=True)
class Resource:
    """An experiment or preprocessing job as the API shows it (spec and status only from a get)."""

    kind: str
    name: str
    phase: str
    iteration: int | None = None
    message: str = ""
    created: str = ""
    suspended: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_api(cls, document: dict[str, Any]) -> "Resource":
        return cls(kind=document["kind"], name=document["name"], phase=document.get("phase", ""),
                   iteration=document.get("iteration"), message=document.get("message", ""),
                   created=document.get("created", ""), suspended=bool(document.get("suspended")),
                   spec=document.get("spec") or {}, status=document.get("status") or {},
                   history=list(document.get("history") or []))


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: size, grid (wavelengths in Å, ``medium`` air or vacuum), source, and the whole index."""

    name: str
    count: int
    rejected: int
    shards: int
    grid: dict[str, Any]
    source: str
    index: dict[str, Any] = field(default_factory=dict)

    @property
    def wavelength(self) -> np.ndarray:
        """The grid's wavelengths in Å (in ``grid['medium']``), as preprocessing made them."""
        from oraculum.spectra.preprocessing import WavelengthGrid

        return np.asarray(WavelengthGrid.model_validate(self.grid).wavelengths, dtype=np.float64)


@dataclass(frozen=True)
class Spectrum:
    """One spectrum: wavelengths in Å (``medium`` air or vacuum) and flux, preprocessed on the
    dataset's grid or raw from the archive file."""

    dataset: str
    index: int
    id: str
    wavelength: np.ndarray
    flux: np.ndarray
    medium: str
    kind: Literal["grid", "raw"]
    normalisation: str | None = None


@dataclass(frozen=True)
class BatchData:
    """The batch of one iteration as arrays, one row per item (oracle items, then estimation
    items, in the API's order). Hidden predictions (blind estimation items not yet labelled) are
    NaN in ``probabilities``/``scores`` and '' in ``predicted``; unlabelled items are '' in
    ``labels``. ``flux`` is float32 (rows x grid points) on the wavelength grid ``wavelength``
    (Å), or None when not fetched."""

    experiment: str
    iteration: int
    dataset: str
    strategy: str | None
    classes: list[str]
    targets: list[str]
    indices: np.ndarray
    ids: np.ndarray
    sets: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    wavelength: np.ndarray | None
    flux: np.ndarray | None
    progress: dict[str, Any]
    items: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.indices.size)

    def table(self) -> Table:
        """One row per item: index, id, set, predicted, score, one probability column per class,
        label (and the flux as a 2-D column when fetched)."""
        table = Table()
        table["index"], table["id"], table["set"] = self.indices, self.ids, self.sets
        table["predicted"], table["score"] = self.predicted, self.scores
        for number, name in enumerate(self.classes):
            table[f"p_{name}"] = self.probabilities[:, number]
        table["label"] = self.labels
        if self.flux is not None:
            table["flux"] = self.flux
        table.meta.update(experiment=self.experiment, iteration=self.iteration, dataset=self.dataset)
        return table


class Client:
    """Calls of the oraculum API with one token (see the module docstring).

    ``url`` defaults to ``ORACULUM_API_URL`` (else http://127.0.0.1:8000); the token to
    ``token``, else the file ``token_file``, else ``ORACULUM_TOKEN``, else the file named by
    ``ORACULUM_TOKEN_FILE``. ``transport`` is for tests (e.g. ``httpx.ASGITransport``)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, token_file: str | os.PathLike[str] | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None, parallel: int = 8) -> None:
        self.url = (url or os.environ.get("ORACULUM_API_URL") or DEFAULT_URL).rstrip("/")
        token = token or _read_token(token_file) or os.environ.get("ORACULUM_TOKEN") \
            or _read_token(os.environ.get("ORACULUM_TOKEN_FILE"))
        headers = {"User-Agent": "oraculum-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.parallel = max(1, parallel)
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0), headers=headers,
                                 transport=transport, limits=httpx.Limits(max_connections=self.parallel + 2))

    # -- plumbing -------------------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call of ``/api/v1{path}``; :class:`ClientError` unless the answer is 2xx."""
        try:
            response = self.http.request(method, PREFIX + path, **kwargs)
        except httpx.HTTPError as error:
            raise ClientError(0, f"the API at {self.url} cannot be reached: {error}") from None
        if response.status_code >= 400:
            raise ClientError(response.status_code, *response_error(response))
        return response

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def _send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request(method, path, json=body, **kwargs)
        return response.json() if response.content else None

    def whoami(self) -> dict[str, str]:
        """The token's name and role."""
        return dict(self._get("/whoami"))

    # -- experiments and preprocessing jobs ----------------------------------------------------

    def experiments(self) -> list[Resource]:
        return [Resource.from_api(r) for r in self._get("/experiments")]

    def experiment(self, name: str) -> Resource:
        """Phase, iteration, spec, status (conditions, history) of one experiment."""
        return Resource.from_api(self._get(f"/experiments/{name}"))

    def preprocessing_jobs(self) -> list[Resource]:
        return [Resource.from_api(r) for r in self._get("/preprocessingjobs")]

    def preprocessing_job(self, name: str) -> Resource:
        return Resource.from_api(self._get(f"/preprocessingjobs/{name}"))

    def create(self, manifest: dict[str, Any] | str | os.PathLike[str]) -> Resource:
        """Create an experiment or preprocessing job from a manifest: a dict, a YAML/JSON file,
        or YAML text (what ``kubectl apply -f`` takes; one manifest per call)."""
        document = _manifest(manifest)
        kind = str(document.get("kind", ""))
        plural = next((p for k, p in KINDS.values() if k == kind), None)
        if plural is None:
            raise ValueError(f"manifest kind {kind!r}: expected one of {', '.join(k for k, _ in KINDS.values())}")
        return Resource.from_api(self._send("POST", f"/{plural}", document))

    def suspend(self, name: str, kind: str = "experiment") -> Resource:
        return Resource.from_api(self._send("POST", f"/{_plural(kind)}/{name}/suspend"))

    def resume(self, name: str, kind: str = "experiment") -> Resource:
        return Resource.from_api(self._send("POST", f"/{_plural(kind)}/{name}/resume"))

    def delete(self, name: str, kind: str = "experiment") -> None:
        """Delete the resource (its data in the store stays)."""
        self.request("DELETE", f"/{_plural(kind)}/{name}")

    def current_iteration(self, experiment: str) -> int:
        return int(self.experiment(experiment).iteration or 0)

    def _iteration(self, experiment: str, iteration: int | None) -> int:
        return self.current_iteration(experiment) if iteration is None else int(iteration)

    # -- datasets and spectra ------------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        return [DatasetInfo(**d) for d in self._get("/datasets")]

    def dataset(self, name: str) -> DatasetInfo:
        """A dataset with its whole index (grid, shards, source, checksums)."""
        index = self._get(f"/datasets/{name}")["index"]
        return DatasetInfo(name=name, count=int(index["count"]), rejected=int(index["rejected"]),
                           shards=len(index["shards"]), grid=index["grid"], source=index["source"]["url"], index=index)

    def spectrum(self, dataset: str, index: int, raw: bool = False, max_points: int | None = None) -> Spectrum:
        """One spectrum: on the dataset's grid (preprocessed), or ``raw`` from its archive file
        (full range; min/max-decimated to ``max_points`` if given)."""
        if raw:
            document = self._get(f"/datasets/{dataset}/spectra/{int(index)}/raw", max_points=max_points)
        else:
            document = self._get(f"/datasets/{dataset}/spectra/{int(index)}/flux")
        return Spectrum(dataset=dataset, index=int(index), id=document["id"], wavelength=_floats(document["wavelength"]),
                        flux=_floats(document["flux"]), medium=document["medium"], kind="raw" if raw else "grid",
                        normalisation=document.get("normalisation"))

    def spectrum_info(self, dataset: str, index: int) -> dict[str, Any]:
        """Metadata (ra, dec, obsid, snr, header class, source file) and links (archive, SIMBAD)."""
        return dict(self._get(f"/datasets/{dataset}/spectra/{int(index)}"))

    def fluxes(self, dataset: str, indices: Iterable[int]) -> np.ndarray:
        """Preprocessed flux of many spectra as float32 (rows x grid points), in the order given
        (fetched ``parallel`` at a time: the API serves one spectrum per request)."""
        wanted = [int(i) for i in indices]
        if not wanted:
            return np.zeros((0, int(self.dataset(dataset).grid["points"])), dtype=np.float32)
        unique = list(dict.fromkeys(wanted))
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(unique))) as pool:
            rows = dict(zip(unique, pool.map(lambda i: self.spectrum(dataset, i).flux, unique), strict=True))
        return np.stack([rows[i] for i in wanted]).astype(np.float32)

    # -- batches, labels, results --------------------------------------------------------------

    def iterations(self, experiment: str, format: Format = "astropy") -> Any:
        """One row per iteration that chose a batch: size, labelled, evaluated, submitted, estimate."""
        rows = self._get(f"/experiments/{experiment}/iterations")["iterations"]
        return as_format(_table(rows, {"iteration": int, "size": int, "labelled": int, "evaluated": bool,
                                       "submitted": bool, "estimate": float, "low": float, "high": float}), format)

    def batch(self, experiment: str, iteration: int | None = None, flux: bool = True) -> BatchData:
        """The batch of ``iteration`` (default: the current one) as arrays (see :class:`BatchData`)."""
        path = f"/experiments/{experiment}/batch" if iteration is None else \
            f"/experiments/{experiment}/iterations/{int(iteration)}/batch"
        document = self._get(path)
        items = document["items"]
        classes = [c["name"] for c in document["classes"]]
        probabilities = np.full((len(items), len(classes)), np.nan)
        for row, item in enumerate(items):
            for column, name in enumerate(classes):
                value = (item.get("probabilities") or {}).get(name)
                if value is not None:
                    probabilities[row, column] = value
        indices = np.array([item["index"] for item in items], dtype=np.int64)
        wavelength = fluxes = None
        if flux:
            fluxes = self.fluxes(document["dataset"], indices.tolist())
            wavelength = self.dataset(document["dataset"]).wavelength
        return BatchData(
            experiment=experiment, iteration=int(document["iteration"]), dataset=document["dataset"],
            strategy=document.get("strategy"), classes=classes,
            targets=[c["name"] for c in document["classes"] if c.get("target")], indices=indices,
            ids=np.array([item["id"] for item in items], dtype=str),
            sets=np.array([item["set"] for item in items], dtype=str),
            predicted=np.array([item.get("predicted") or "" for item in items], dtype=str),
            scores=np.array([np.nan if item.get("score") is None else item["score"] for item in items], dtype=np.float64),
            probabilities=probabilities,
            labels=np.array([(item.get("label") or {}).get("label") or "" for item in items], dtype=str),
            wavelength=wavelength, flux=fluxes, progress=document["progress"], items=items,
        )

    def labels(self, experiment: str, iteration: int | None = None, format: Format = "astropy") -> Any:
        """Current labels of an iteration (default: the current one): index, label, who, when,
        comment, bulk; one row per labelled spectrum."""
        k = self._iteration(experiment, iteration)
        labels = self._get(f"/experiments/{experiment}/iterations/{k}/labels")["labels"]
        rows = [{"index": int(index), **entry} for index, entry in labels.items()]
        table = _table(rows, {"index": int, "label": str, "who": str, "when": str, "comment": str, "bulk": bool})
        table.meta.update(experiment=experiment, iteration=k)
        return as_format(table, format)

    def label_events(self, experiment: str, iteration: int | None = None) -> list[dict[str, Any]]:
        """Every label event of an iteration, oldest first (who, when, action, items, ...)."""
        k = self._iteration(experiment, iteration)
        events: list[dict[str, Any]] = []
        while True:
            page = self._get(f"/experiments/{experiment}/iterations/{k}/labels/events", offset=len(events), limit=1000)
            events.extend(page["events"])
            if not page["events"] or len(events) >= page["total"]:
                return events

    def set_label(self, experiment: str, index: int, label: str, iteration: int | None = None,
                  comment: str | None = None) -> dict[str, Any]:
        """Set or change the label of one spectrum (global index); stored before the answer."""
        k = self._iteration(experiment, iteration)
        return dict(self._send("PUT", f"/experiments/{experiment}/iterations/{k}/labels/{int(index)}",
                               {"label": label, "comment": comment}))

    def clear_label(self, experiment: str, index: int, iteration: int | None = None,
                    comment: str | None = None) -> dict[str, Any]:
        k = self._iteration(experiment, iteration)
        return dict(self._send("DELETE", f"/experiments/{experiment}/iterations/{k}/labels/{int(index)}",
                               params={"comment": comment} if comment else None))

    def label_many(self, experiment: str, indices: Sequence[int] | np.ndarray, label: str | None,
                   iteration: int | None = None, comment: str | None = None) -> dict[str, Any]:
        """Label (``label=None``: clear) many spectra at once; recorded as one bulk selection."""
        k = self._iteration(experiment, iteration)
        body = {"indices": [int(i) for i in indices], "label": label, "comment": comment, "selection": "list"}
        return dict(self._send("POST", f"/experiments/{experiment}/iterations/{k}/labels/bulk", body))

    def progress(self, experiment: str, iteration: int | None = None) -> dict[str, Any]:
        """Labelling progress, e.g. text '37 / 100 oracle, 12 / 30 estimation'."""
        k = self._iteration(experiment, iteration)
        return dict(self._get(f"/experiments/{experiment}/iterations/{k}/progress"))

    def submit(self, experiment: str, iteration: int | None = None) -> dict[str, Any]:
        """Submit a complete batch: the next iteration starts. 409 (ClientError) when incomplete,
        with the missing indices in ``error.detail['missing']``."""
        k = self._iteration(experiment, iteration)
        return dict(self._send("POST", f"/experiments/{experiment}/iterations/{k}/submit"))

    def metrics(self, experiment: str, format: Format = "astropy") -> Any:
        """The learning curve: one row per evaluated iteration with the precision estimate and
        its interval (low, high), labels so far and the predicted/estimated target counts."""
        points = self._get(f"/experiments/{experiment}/curves")["points"]
        return as_format(_table(points, {
            "iteration": int, "labels_total": int, "estimate": float, "low": float, "high": float,
            "predicted_targets": int, "estimated_targets": float, "estimated_targets_low": float,
            "estimated_targets_high": float}), format)

    def iteration_metrics(self, experiment: str, iteration: int) -> dict[str, Any]:
        """Everything the evaluation of one iteration wrote (metrics.json)."""
        return dict(self._get(f"/experiments/{experiment}/iterations/{int(iteration)}/metrics")["metrics"])

    def candidates(self, experiment: str, iteration: int | None = None) -> Table:
        """The candidate catalogue of an iteration (default: the current one), read from the
        API's VOTable: units (deg) and UCDs come with it."""
        from astropy.io.votable import parse

        k = self._iteration(experiment, iteration)
        data = self.request("GET", f"/experiments/{experiment}/iterations/{k}/candidates.vot").content
        table = parse(io.BytesIO(data)).get_first_table().to_table(use_names_over_ids=True)
        table.meta.update(experiment=experiment, iteration=k)
        return table

    # -- uploads -------------------------------------------------------------------------------

    def upload(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], prefix: str, progress: bool = True,
               chunk_size: int | None = None, on_chunk: Any = None, parallel: int = 4) -> "UploadReport":
        """Upload files and folders (recursively) into ``archive/<prefix>/`` of the store,
        ``parallel`` files at a time; see :func:`oraculum.client.upload.upload_files`. Running it again
        continues an interrupted upload."""
        from oraculum.client.upload import upload_files

        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        return upload_files(self, items, prefix, progress=progress, chunk_size=chunk_size, on_chunk=on_chunk,
                            parallel=parallel)


def _read_token(path: str | os.PathLike[str] | None) -> str | None:
    if not path:
        return None
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"token file {os.fspath(path)}: cannot read it: {error.strerror}") from None
    if not token:
        raise ValueError(f"token file {os.fspath(path)} is empty: put the API token in it")
    return token


def _plural(kind: str) -> str:
    key = kind.lower().replace("-", "").replace("_", "").rstrip("s")
    key = {"activelearningexperiment": "experiment", "ale": "experiment", "ppj": "preprocessingjob"}.get(key, key)
    if key not in KINDS:
        raise ValueError(f"kind {kind!r}: use 'experiment' or 'preprocessingjob'")
    return KINDS[key][1]


def _manifest(manifest: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
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
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise ValueError(f"{origin}: not YAML or JSON: {error}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ValueError(f"{origin}: expected exactly one manifest (a mapping), found {len(documents)} document(s)")
    return documents[0]


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _table(rows: list[dict[str, Any]], columns: dict[str, type]) -> Table:
    """A table with the given columns and types (also when empty); missing numbers are NaN or
    -1 (integers), missing text ''."""
    table = Table()
    for name, kind in columns.items():
        values = [row.get(name) for row in rows]
        if kind is float:
            table[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif kind is int:
            table[name] = np.array([-1 if v is None else v for v in values], dtype=np.int64)
        elif kind is bool:
            table[name] = np.array([bool(v) for v in values], dtype=bool)
        else:
            table[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return table
