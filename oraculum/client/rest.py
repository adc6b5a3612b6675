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
    api.apply("experiment.yaml")                         # ("created" | "unchanged", Resource)
    for r in api.follow("exp"): print(r.phase)           # until Succeeded or Failed
    api.label_batch("exp", {12: "emission", 40: "absorption"})   # item by item, then submit

Only HTTP: the client never reads the object store, so it works from a laptop against a
cluster's gateway, with the caller's token deciding what is allowed. Tables are astropy's by
default (astropy is a dependency; pandas is not): ``format="pandas"`` converts with
``Table.to_pandas()`` when pandas is installed. An answer that is not 2xx raises
:class:`ClientError` with the HTTP status and the API's own message.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import numpy as np
from astropy.table import Table

from oraculum.client.errors import ClientError, response_error
from oraculum.client.manifests import manifest_plural, plural, read_manifest, spec_differences
from oraculum.client.records import (
    CURVE_COLUMNS,
    BatchData,
    DatasetInfo,
    Format,
    LabelledBatch,
    Resource,
    Spectrum,
    as_format,
    floats,
    typed_table,
)

if TYPE_CHECKING:
    from oraculum.client.upload import UploadReport

__all__ = ["BatchData", "Client", "ClientError", "DatasetInfo", "LabelledBatch", "Resource", "Spectrum"]

PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"


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

    def resource(self, name: str, kind: str = "experiment") -> Resource:
        """One experiment or preprocessing job (``kind``: experiment, preprocessingjob, ppj, or the
        manifest's kind) with its spec, status and the live progress of its running Jobs."""
        return Resource.from_api(self._get(f"/{plural(kind)}/{name}"))

    def create(self, manifest: dict[str, Any] | str | os.PathLike[str]) -> Resource:
        """Create an experiment or preprocessing job from a manifest: a dict, a YAML/JSON file,
        or YAML text (what ``kubectl apply -f`` takes; one manifest per call)."""
        document = read_manifest(manifest)
        return Resource.from_api(self._send("POST", f"/{manifest_plural(document)}", document))

    def apply(self, manifest: dict[str, Any] | str | os.PathLike[str]) -> tuple[Literal["created", "unchanged"], Resource]:
        """Create the resource, or keep the one of that name when its spec is the same (a script or
        notebook run again): ``("created" or "unchanged", the resource)``. One with another spec
        (defaults filled in on both sides) raises :class:`ClientError` 409 whose
        ``detail["differences"]`` lists the fields (``spec.a.b: old -> new``)."""
        document = read_manifest(manifest)
        try:
            return "created", self.create(document)
        except ClientError as error:
            if error.status != 409:
                raise
            conflict = error
        kind, name = str(document["kind"]), str((document.get("metadata") or {}).get("name"))
        try:
            existing = self.resource(name, kind)
        except ClientError:
            raise conflict from None
        changes = spec_differences(document, existing.spec)
        if changes:
            raise ClientError(409, f"{kind} {name!r} exists already with another spec ({'; '.join(changes[:6])})",
                              {"differences": changes})
        return "unchanged", existing

    def follow(self, name: str, kind: str = "experiment", poll: float = 2.0,
               wait: Callable[[float], Any] = time.sleep) -> Iterator[Resource]:
        """The resource now, then again every ``poll`` seconds, until it Succeeded or Failed (that
        one is yielded too)::

            for experiment in api.follow("exp"):
                print(experiment.phase, experiment.iteration, experiment.message)

        ``wait(seconds)`` makes the pauses (e.g. a ``threading.Event``'s ``wait``, so that setting
        the event cuts a pause short); stop following by leaving the loop."""
        while True:
            resource = self.resource(name, kind)
            yield resource
            if resource.final:
                return
            wait(poll)

    def suspend(self, name: str, kind: str = "experiment") -> Resource:
        return Resource.from_api(self._send("POST", f"/{plural(kind)}/{name}/suspend"))

    def resume(self, name: str, kind: str = "experiment") -> Resource:
        return Resource.from_api(self._send("POST", f"/{plural(kind)}/{name}/resume"))

    def delete(self, name: str, kind: str = "experiment") -> None:
        """Delete the resource (its data in the store stays)."""
        self.request("DELETE", f"/{plural(kind)}/{name}")

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
        return Spectrum(dataset=dataset, index=int(index), id=document["id"], wavelength=floats(document["wavelength"]),
                        flux=floats(document["flux"]), medium=document["medium"], kind="raw" if raw else "grid",
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
        return as_format(typed_table(rows, {"iteration": int, "size": int, "labelled": int, "evaluated": bool,
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
        table = typed_table(rows, {"index": int, "label": str, "who": str, "when": str, "comment": str, "bulk": bool})
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

    def label_batch(self, experiment: str, answer: Mapping[int, str] | Callable[[dict[str, Any]], str | None],
                    iteration: int | None = None, *, submit: bool = True, retries: int = 4,
                    stop: Callable[[], bool] | None = None) -> LabelledBatch:
        """Label the batch of ``iteration`` (default: the current one) item by item, as the
        dashboard's labelling page does (one :meth:`set_label` per spectrum), then submit it.

        ``answer`` gives an item's label: a mapping of global index to label, or a function of the
        item (its dict in :attr:`BatchData.items`: index, id, set, ...); None or a missing index
        leaves the item unlabelled. Items labelled already keep their label. A 409 (the API has
        not seen the new iteration yet, or someone holds the item for a moment) is tried again,
        ``retries`` times a second apart, as a person presses the key again. ``submit``: submit the
        batch afterwards unless it was submitted already (the API refuses an incomplete one with a
        409). ``stop()`` is asked before each label: True ends the call there, nothing submitted."""
        batch = self.batch(experiment, self._iteration(experiment, iteration), flux=False)
        label_of = answer.get if isinstance(answer, Mapping) else None
        written: Counter[str] = Counter()
        kept = 0
        for item in batch.items:
            if item.get("label"):
                kept += 1
                continue
            if stop is not None and stop():
                return LabelledBatch(experiment, batch.iteration, dict(written), kept, submitted=False, finished=False)
            label = label_of(int(item["index"])) if label_of else answer(item)  # type: ignore[operator]
            if label is None:
                continue
            for attempt in range(retries + 1):
                try:
                    self.set_label(experiment, int(item["index"]), label, iteration=batch.iteration)
                    break
                except ClientError as error:
                    if error.status != 409 or attempt == retries:
                        raise
                    time.sleep(1.0)
            written[label] += 1
        submitted = bool(submit and not batch.progress.get("submitted"))
        if submitted:
            self.submit(experiment, batch.iteration)
        return LabelledBatch(experiment, batch.iteration, dict(written), kept, submitted=submitted)

    def metrics(self, experiment: str, format: Format = "astropy") -> Any:
        """The learning curve: one row per evaluated iteration with the precision estimate and
        its interval (low, high), labels so far and the predicted/estimated target counts."""
        points = self._get(f"/experiments/{experiment}/curves")["points"]
        return as_format(typed_table(points, CURVE_COLUMNS), format)

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

    def candidates_url(self, experiment: str, iteration: int | None = None, format: Literal["csv", "vot"] = "csv") -> str:
        """The address of an iteration's candidate catalogue as CSV or VOTable (to open or share;
        fetching it needs the token)."""
        k = self._iteration(experiment, iteration)
        return f"{self.url}{PREFIX}/experiments/{experiment}/iterations/{k}/candidates.{format}"

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
