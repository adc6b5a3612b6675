"""From a VOTable to a dataset: `oraculum fetch`, `oraculum preprocess` with a VO source, and a
PreprocessingJob whose source is a VOTable run as an Indexed Job by the local runner.

Real parts only: a local HTTP archive of real LAMOST files (tests/support/vo_archive.py) with a real
DataLink and SODA endpoint, the real CLI, the real local runner (`oraculum run`, subprocesses
for the Job's pods). Among the rows: one the archive does not have (404) and one truncated FITS
file (served complete, but cut in the middle of its data): both end in rejected.jsonl with their
reasons while everything else is stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from oraculum.cli.main import main
from oraculum.spectra.datasets import Dataset
from oraculum.control.jobs import JobConfig, preprocess_job
from oraculum.manifests import ManifestError, PreprocessingJobSpec, parse_manifest
from oraculum.settings import Settings
from oraculum.store import LocalStore
from tests.support.vo_archive import Archive, access_votable, copy_tree, datalink_votable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "preprocess-votable.yaml"


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("archive")
    copy_tree(shared_data / "lamost-dr2", root / "dr2", lambda p: p.suffix == ".fits" and p.parent.name != "lamost-dr2")
    good = sorted((root / "dr2").rglob("*.fits"))[0].read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "spec-truncated.fits").write_bytes(good[: len(good) // 2])  # a cut upload
    return root


@pytest.fixture()
def archive(archive_root: Path) -> Iterator[Archive]:
    with Archive(archive_root, ids="ivo://test.archive/dr2?") as server:
        yield server


def good_paths(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted((root / "dr2").rglob("*.fits"))]


def ssa_table(archive: Archive, root: Path) -> bytes:
    """14 real spectra, one the archive does not have, one truncated file."""
    paths = good_paths(root) + ["dr2/spec-99999-gone_sp01-001.fits", "broken/spec-truncated.fits"]
    return access_votable([{"pubdid": f"ivo://test.archive/dr2?{Path(p).stem}", "url": archive.url(p)} for p in paths])


def cli(store: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--store", str(store), *args])
    return result.exit_code, result.output + (f"\n{result.exception!r}" if result.exception and result.exit_code != 1 else "")


def rejected(store: Path, dataset: str) -> dict[str, str]:
    return {line["key"]: f"{line['reason']}: {line['message']}" for line in Dataset.open(LocalStore(store), dataset).rejected()}


def test_a_votable_becomes_a_dataset_through_the_cli(archive: Archive, archive_root: Path, tmp_path: Path) -> None:
    table = tmp_path / "ssa.vot"
    table.write_bytes(ssa_table(archive, archive_root))
    store = tmp_path / "store"
    code, out = cli(store, "fetch", str(table), "--retries", "1")
    assert code == 0, out  # some failed, most worked: exit 0 with the report
    assert "15 fetched, 0 already present, 0 duplicate(s), 1 failed" in out
    assert "failed spec-99999-gone_sp01-001.fits" in out and "HTTP 404" in out
    archive.requests.clear()
    code, out = cli(store, "preprocess", str(table), "--dataset", "ssa", "--shards", "2", "--workers", "1")
    assert code == 0, out
    assert archive.paths_requested() == ["/dr2/spec-99999-gone_sp01-001.fits"]  # only the failure is tried again
    index = Dataset.open(LocalStore(store), "ssa").index
    assert index.count == 14 and index.rejected == 2 and index.source.files == 16
    assert index.source.url.startswith("votable:") and len(index.shards) == 2
    reasons = rejected(store, "ssa")
    assert reasons["spec-99999-gone_sp01-001.fits"].startswith("download-failed: ") and "HTTP 404" in reasons[
        "spec-99999-gone_sp01-001.fits"]
    assert reasons["spec-truncated.fits"].startswith("truncated: ")
    # the dataset's raw spectra are found again where they were fetched (the API's spectrum view)
    from oraculum.ingest.sources import archive_store

    raw = archive_store(index.source.url, Settings(store=str(store)))
    key = Dataset.open(LocalStore(store), "ssa").index.shards[0].key
    assert key and raw.exists(Path(good_paths(archive_root)[0]).name)


def test_fetch_exits_non_zero_only_when_everything_failed(archive: Archive, tmp_path: Path) -> None:
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{archive.url('nothing/a.fits')}\n{archive.url('nothing/b.fits')}\n")
    code, out = cli(tmp_path / "store", "fetch", str(urls))
    assert code == 1 and "nothing could be fetched: all 2 downloads failed" in out and "HTTP 404" in out
    code, out = cli(tmp_path / "store", "fetch", str(tmp_path))
    assert code == 1 and "is not something to fetch" in out
    code, out = cli(tmp_path / "store", "fetch", "votable:x.xml#datalink=cutout")
    assert code == 1 and "datalink=cutout needs band" in out


def test_preprocess_of_a_datalink_votable_uses_cutouts_of_the_grid(archive: Archive, archive_root: Path,
                                                                   tmp_path: Path) -> None:
    ids = [f"ivo://test.archive/dr2?{Path(p).stem}" for p in good_paths(archive_root)[:5]]
    table = tmp_path / "obscore.xml"
    table.write_bytes(datalink_votable(ids, archive.url("datalink")))
    store = tmp_path / "store"
    code, out = cli(store, "preprocess", f"votable:{table}#retries=1", "--dataset", "cut", "--workers", "1")
    assert code == 0, out
    index = Dataset.open(LocalStore(store), "cut").index
    assert index.count == 5 and index.rejected == 0
    assert "band=6469.00-6782.00" in index.source.url  # the default grid plus 50 Å
    assert archive.count("soda") == 5 and archive.count("datalink") >= 1
    assert not any(path.startswith("/dr2/") for path in archive.paths_requested())  # no full spectrum


def example_manifest(key: str, shards: int) -> dict:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = "votable-e2e"
    document["spec"]["source"]["votable"] = {"key": key, "datalink": "auto"}
    document["spec"]["source"]["fetch"] = {"concurrency": 4, "retries": 1, "timeoutSeconds": 30}
    document["spec"].update(dataset="votable-e2e", shards=shards, parallelism=shards)
    document["spec"]["resources"] = {"cpu": "1", "memory": "1Gi"}
    return document


def run_job(store: Path, manifest: dict, tmp_path: Path) -> str:
    path = tmp_path / "ppj.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = {**os.environ, "ORACULUM_STORE": str(store)}
    result = subprocess.run([sys.executable, "-m", "oraculum.cli.main", "run", str(path), "--timeout", "240"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ppj/votable-e2e: Succeeded" in result.stdout
    status = json.loads((store / "local/preprocessingjobs/votable-e2e/status.json").read_text())["status"]
    assert status["phase"] == "Succeeded"
    return result.stdout


@pytest.mark.slow
def test_a_votable_preprocessing_job_runs_as_an_indexed_job(archive: Archive, archive_root: Path,
                                                            tmp_path: Path) -> None:
    store = tmp_path / "store"
    LocalStore(store).put_bytes("archive/votables/ssa.xml", ssa_table(archive, archive_root))  # an upload
    run_job(store, example_manifest("archive/votables/ssa.xml", 2), tmp_path)
    index = Dataset.open(LocalStore(store), "votable-e2e").index
    assert index.count == 14 and index.rejected == 2 and len(index.shards) == 2
    # each pod fetched its own contiguous half of the rows, once
    reports = sorted(p.name for p in (store / "archive" / "vo").rglob("report-*.jsonl"))
    assert reports == ["report-000000000-000000008.jsonl", "report-000000008-000000016.jsonl"]
    assert all(archive.count(p) == 1 for p in good_paths(archive_root))
    reasons = rejected(store, "votable-e2e")
    assert reasons["spec-99999-gone_sp01-001.fits"].startswith("download-failed: ")
    assert reasons["spec-truncated.fits"].startswith("truncated: ")


@pytest.mark.slow
def test_a_datalink_votable_job_fetches_cutouts_in_every_pod(archive: Archive, archive_root: Path,
                                                             tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = [f"ivo://test.archive/dr2?{Path(p).stem}" for p in good_paths(archive_root)[:6]]
    LocalStore(store).put_bytes("archive/votables/obscore.xml", datalink_votable(ids, archive.url("datalink")))
    run_job(store, example_manifest("archive/votables/obscore.xml", 2), tmp_path)
    index = Dataset.open(LocalStore(store), "votable-e2e").index
    assert index.count == 6 and index.rejected == 0 and "band=6469.00-6782.00" in index.source.url
    cutouts = sorted(p.name for p in (store / "archive" / "vo").rglob("cutout-6469.00-6782.00/*.fits"))
    assert cutouts == sorted(f"{Path(p).stem}.fits" for p in good_paths(archive_root)[:6])
    # DataLink batches are at most 50 IDs, but small enough that each of a pod's 4 workers gets one:
    # 3 rows per pod -> 3 single-ID calls per pod (the batching itself: test_vo_votable.py)
    assert archive.count("soda") == 6 and archive.count("datalink") == 6


def test_the_manifest_field_and_the_job_command() -> None:
    spec = PreprocessingJobSpec.model_validate({
        "source": {"votable": {"url": "https://ssa.example/ssap?REQUEST=queryData&POS=10,41&SIZE=0.5"},
                   "fetch": {"concurrency": 16}},
        "grid": {"start": 6519, "end": 6732, "medium": "air"}, "dataset": "be", "shards": 8,
    })
    job = preprocess_job("be", "lab", "uid", spec, JobConfig())
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    source = args[args.index("preprocess") + 1]
    assert source.startswith("votable:https://ssa.example/ssap?REQUEST=queryData&POS=10,41&SIZE=0.5#band=6470.80-")
    assert "concurrency=16" in source and "--glob" not in args
    assert args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/8"
    index = PreprocessingJobSpec.model_validate({"source": {"httpIndex": "https://data.example/dr2/",
                                                            "patterns": ["*.fits.gz"]}, "dataset": "x"})
    assert index.source.location() == "index:https://data.example/dr2/#glob=*.fits.gz"
    urls = PreprocessingJobSpec.model_validate({"source": {"urls": {"key": "uploads/list.txt"}}, "dataset": "x"})
    assert urls.source.location() == "urls:store:uploads/list.txt"


@pytest.mark.parametrize(("source", "message"), [
    ({"url": "s3://a/b", "votable": {"key": "t.xml"}}, "exactly one of source.url"),
    ({"votable": {"key": "t.xml", "url": "https://x/t.xml"}}, "exactly one of votable.url"),
    ({"votable": {}}, "exactly one of votable.url"),
    ({"url": "s3://a/b", "fetch": {"retries": 2}}, "source.fetch applies to votable"),
    ({"votable": {"key": "t.xml", "datalink": "sometimes"}}, "source.votable.datalink"),
    ({"httpIndex": "ftp://x/"}, "source.httpIndex"),
    ({"urls": {"key": "l.txt"}, "fetch": {"concurrency": 0}}, "source.fetch.concurrency"),
])
def test_bad_fetch_sources_are_refused_with_the_field(source: dict, message: str) -> None:
    document = {"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob", "metadata": {"name": "x"},
                "spec": {"source": source, "dataset": "x"}}
    with pytest.raises(ManifestError, match=message.replace(".", r"\.")):
        parse_manifest(document, "bad.yaml")


def test_the_crd_carries_the_exactly_one_rules() -> None:
    from oraculum.control.crds import CRD_KINDS, crd

    schema = crd(CRD_KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    source = schema["properties"]["spec"]["properties"]["source"]
    (rule,) = source["x-kubernetes-validations"]
    assert rule["message"] == "give exactly one of url, synthetic, votable, urls and httpIndex"
    assert rule["rule"].endswith("== 1") and "has(self.httpIndex)" in rule["rule"]
    votable = source["properties"]["votable"]
    assert votable["x-kubernetes-validations"][0]["rule"] == "has(self.url) != has(self.key)"
    assert votable["properties"]["datalink"]["enum"] == ["auto", "this", "cutout", "none"]
    assert source["properties"]["fetch"]["properties"]["concurrency"]["maximum"] == 256
