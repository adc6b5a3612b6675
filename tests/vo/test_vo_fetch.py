"""Downloading spectra over HTTP into the store: URL lists, index pages, retries, failures,
resumption, duplicates and shards.

Everything runs against :class:`tests.vo_archive.Archive`, a real HTTP server on 127.0.0.1
serving real LAMOST and Ondřejov FITS files copied from ``../shared/data``; faults (503, 404, a
transfer cut short) are real HTTP answers. No test reaches the internet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from oraculum.settings import Settings
from oraculum.store import LocalStore
from oraculum.vo.fetch import read_records
from oraculum.vo.sources import archive_for, fetch_source, recognise
from oraculum.vo.spec import FITS_PATTERNS, parse_vo_spec
from oraculum.vo.transport import FetchError, HttpClient, RetryPolicy
from tests.support.vo_archive import Archive, copy_tree

FAST = "#retries=3&concurrency=4"  # backoff is 0.5 s * 2**k: three retries stay under 4 s


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("archive")
    copy_tree(shared_data / "lamost-dr2", root / "dr2", lambda p: p.suffix == ".fits")
    copy_tree(shared_data / "ondrejov", root / "ondrejov", lambda p: p.suffix == ".fits")
    copy_tree(shared_data / "lamost-dr7" / "KIC8098300", root / "dr7", lambda p: p.name.endswith(".fits.gz"))
    return root


@pytest.fixture()
def archive(archive_root: Path) -> Iterator[Archive]:
    with Archive(archive_root) as server:
        yield server


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "store"))


def dr2_files(root: Path) -> list[Path]:
    return sorted((root / "dr2").rglob("*.fits"))


def write_list(tmp_path: Path, urls: list[str], name: str = "spectra.txt") -> Path:
    path = tmp_path / name
    path.write_text("# spectra for the test\n\n" + "\n".join(urls) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_url_list_lands_in_the_store_byte_for_byte(archive: Archive, archive_root: Path, tmp_path: Path,
                                                     settings: Settings) -> None:
    files = dr2_files(archive_root)[:6]
    listing = write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])
    spec = recognise(str(listing), settings)
    assert spec is not None and spec.kind == "urls"
    report = fetch_source(parse_vo_spec(spec.canonical() + FAST), settings)  # type: ignore[arg-type]
    assert [r.status for r in report.records] == ["fetched"] * 6
    store = archive_for(spec, settings)
    for record, original in zip(report.records, files):
        assert record.key == original.name  # the archive's own file name is kept
        assert (Path(store.url) / record.key).read_bytes() == original.read_bytes()
        assert record.sha256 == sha(original) and record.bytes == original.stat().st_size


def test_5xx_is_retried_4xx_is_reported_once_and_the_rest_continue(archive: Archive, archive_root: Path,
                                                                   tmp_path: Path, settings: Settings) -> None:
    files = dr2_files(archive_root)[:4]
    paths = [str(f.relative_to(archive_root)) for f in files]
    archive.fail(paths[0], 503, 503)  # twice unavailable, then served
    urls = [archive.url(p) for p in paths] + [archive.url("dr2/no-such-spectrum.fits")]
    report = fetch_source(parse_vo_spec(f"urls:{write_list(tmp_path, urls)}{FAST}"), settings)  # type: ignore[arg-type]
    by_key = {r.key: r for r in report.records}
    assert by_key[files[0].name].status == "fetched" and by_key[files[0].name].attempts == 3
    assert archive.count(paths[0]) == 3
    missing = by_key["no-such-spectrum.fits"]
    assert (missing.status, missing.http_status, missing.attempts) == ("failed", 404, 1)
    assert "404" in (missing.reason or "") and missing.url == urls[-1]
    assert archive.count("dr2/no-such-spectrum.fits") == 1  # 4xx: never asked twice
    assert report.stored == 4 and len(report.failures) == 1


def test_a_server_that_keeps_failing_is_reported_after_the_retries(archive: Archive, archive_root: Path) -> None:
    path = str(dr2_files(archive_root)[0].relative_to(archive_root))
    archive.fail(path, 500, 502, 503)
    slept: list[float] = []
    with HttpClient(RetryPolicy(retries=2, backoff=0.5, max_backoff=10), sleep=slept.append) as http:
        with pytest.raises(FetchError) as failure:
            http.download(archive.url(path))
    assert failure.value.status == 503 and failure.value.attempts == 3 and "503" in str(failure.value)
    assert len(slept) == 2 and 0.3 < slept[0] < 0.7 and 0.7 < slept[1] < 1.3  # exponential, with jitter


def test_a_transfer_cut_short_is_retried(archive: Archive, archive_root: Path, tmp_path: Path) -> None:
    original = dr2_files(archive_root)[1]
    path = str(original.relative_to(archive_root))
    archive.fail(path, "cut")
    with HttpClient(RetryPolicy(retries=2, backoff=0.01)) as http:
        download = http.download(archive.url(path), directory=str(tmp_path))
    try:
        assert download.attempts == 2 and download.path.read_bytes() == original.read_bytes()
        assert download.sha256 == sha(original)
    finally:
        download.path.unlink()


def test_a_second_run_fetches_nothing_and_a_damaged_file_is_fetched_again(
        archive: Archive, archive_root: Path, tmp_path: Path, settings: Settings) -> None:
    files = dr2_files(archive_root)[:5]
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])}{FAST}")
    assert spec is not None
    first = fetch_source(spec, settings)
    assert first.count("fetched") == 5
    archive.requests.clear()
    second = fetch_source(spec, settings)
    assert archive.requests == [] and second.count("present") == 5 and second.requests == 0
    store = archive_for(spec, settings)
    damaged = Path(store.url) / files[2].name
    damaged.write_bytes(damaged.read_bytes()[:1000])  # not what was downloaded any more
    third = fetch_source(spec, settings)
    assert third.count("present") == 4 and third.count("fetched") == 1
    assert archive.paths_requested() == [f"/{files[2].relative_to(archive_root)}"]
    assert damaged.read_bytes() == files[2].read_bytes()


def test_a_resumed_run_checks_the_stored_files_on_the_worker_threads(
        archive: Archive, archive_root: Path, tmp_path: Path, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import oraculum.vo.fetch as fetch

    files = dr2_files(archive_root)[:5]
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])}{FAST}")
    assert spec is not None
    fetch_source(spec, settings)
    threads: list[str] = []
    hash_stored = fetch._stored_sha256

    def recording(store: object, key: str) -> str | None:  # the real check, noting where it ran
        threads.append(threading.current_thread().name)
        return hash_stored(store, key)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_stored_sha256", recording)
    assert fetch_source(spec, settings).count("present") == 5
    assert len(threads) == 5 and all(name.startswith("oraculum-fetch") for name in threads)


def test_failures_are_retried_by_the_next_run(archive: Archive, archive_root: Path, tmp_path: Path,
                                              settings: Settings) -> None:
    files = dr2_files(archive_root)[:3]
    path = str(files[0].relative_to(archive_root))
    archive.fail(path, 404)  # e.g. not yet published
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])}{FAST}")
    assert spec is not None
    assert fetch_source(spec, settings).count("failed") == 1
    archive.requests.clear()
    again = fetch_source(spec, settings)
    assert again.count("fetched") == 1 and again.count("present") == 2
    assert archive.paths_requested() == [f"/{path}"]


def test_duplicates_by_url_and_by_content_are_stored_once(archive: Archive, archive_root: Path, tmp_path: Path,
                                                          settings: Settings) -> None:
    files = dr2_files(archive_root)[:3]
    mirror = archive_root / "mirror" / "copy-of-first.fits"  # the same bytes under another name
    mirror.parent.mkdir(exist_ok=True)
    mirror.write_bytes(files[0].read_bytes())
    urls = [archive.url("mirror/copy-of-first.fits")] + [archive.url(str(f.relative_to(archive_root))) for f in files]
    urls.append(urls[2])  # the same URL twice
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, urls)}{FAST}")
    assert spec is not None
    report = fetch_source(spec, settings)
    by_key = {r.key: r for r in report.records}
    assert len(report.records) == 4  # the repeated URL is in the plan once
    assert report.problems and "same URL as row 2" in str(report.problems[0]["reason"])
    # the earlier row keeps the content, whichever download finished first
    assert by_key["copy-of-first.fits"].status == "fetched"
    assert by_key[files[0].name].status == "duplicate" and by_key[files[0].name].duplicate_of == "copy-of-first.fits"
    stored = [info.key for info in archive_for(spec, settings).list() if not info.key.startswith("_fetch/")]
    assert sorted(stored) == sorted(["copy-of-first.fits", files[1].name, files[2].name])
    assert archive.count(f"{files[1].relative_to(archive_root)}") == 1


def test_an_index_page_is_crawled_below_its_folder_only(archive: Archive, archive_root: Path,
                                                        settings: Settings) -> None:
    spec = recognise(archive.url("dr2/"), settings)  # plain URL: recognised as an HTML index
    assert spec is not None and spec.kind == "index" and spec.globs is None
    report = fetch_source(parse_vo_spec(spec.canonical() + FAST), settings)  # type: ignore[arg-type]
    expected = sorted(str(f.relative_to(archive_root / "dr2")) for f in dr2_files(archive_root))
    assert sorted(r.key for r in report.records) == expected  # folders kept, nothing from ondrejov/ or dr7/
    assert all(r.status == "fetched" for r in report.records)
    gz = parse_vo_spec(f"index:{archive.url('/')}#glob=*.fits.gz")
    assert gz is not None
    found = fetch_source(gz, settings)
    assert {r.key.split("/")[0] for r in found.records} == {"dr7"} and len(found.records) == 8


def test_shards_fetch_disjoint_contiguous_slices(archive: Archive, archive_root: Path, tmp_path: Path,
                                                 settings: Settings) -> None:
    files = dr2_files(archive_root)[:7]
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])}{FAST}")
    assert spec is not None
    parts = [fetch_source(spec, settings, shard=(i, 3)) for i in range(3)]
    rows = [[r.row for r in part.records] for part in parts]
    assert rows == [[0, 1, 2], [3, 4], [5, 6]]
    records = read_records(archive_for(spec, settings), spec.state_prefix)
    assert sorted(records) == sorted(f.name for f in files) and {r.status for r in records.values()} == {"fetched"}


def test_fetch_into_an_s3_store(archive: Archive, archive_root: Path, tmp_path: Path, s3_settings: Settings) -> None:
    files = dr2_files(archive_root)[:3]
    spec = parse_vo_spec(f"urls:{write_list(tmp_path, [archive.url(str(f.relative_to(archive_root))) for f in files])}{FAST}")
    assert spec is not None
    report = fetch_source(spec, s3_settings, prefix="archive/mine")
    assert report.count("fetched") == 3
    archive.requests.clear()
    assert fetch_source(spec, s3_settings, prefix="archive/mine").count("present") == 3  # checksums read back from S3
    assert archive.requests == []
    store = archive_for(spec, s3_settings, "archive/mine")
    assert store.get_bytes(files[0].name) == files[0].read_bytes()


def test_the_default_fits_patterns_agree_with_ingestion() -> None:
    from oraculum.spectra.archive import DEFAULT_PATTERNS

    assert FITS_PATTERNS == DEFAULT_PATTERNS


def test_a_local_store_key_can_be_the_list(archive: Archive, archive_root: Path, settings: Settings) -> None:
    files = dr2_files(archive_root)[:2]
    LocalStore(settings.store).put_bytes("uploads/list.txt", "\n".join(
        archive.url(str(f.relative_to(archive_root))) for f in files).encode())
    spec = parse_vo_spec("urls:store:uploads/list.txt" + FAST)
    assert spec is not None and spec.archive_prefix.startswith("archive/vo/urls-list-txt-")
    assert fetch_source(spec, settings).count("fetched") == 2
    missing = parse_vo_spec("urls:store:uploads/nothing.txt")
    with pytest.raises(ValueError, match="no object 'uploads/nothing.txt'"):
        fetch_source(missing, settings)  # type: ignore[arg-type]


def test_a_plain_url_is_recognised_from_its_first_bytes_only(archive: Archive, archive_root: Path,
                                                             settings: Settings) -> None:
    from oraculum.vo.sources import CLASSIFY_BYTES

    listing = archive_root / "lists" / "many.txt"
    listing.parent.mkdir(exist_ok=True)
    listing.write_text("".join(f"{archive.url(f'dr2/spectrum-{n:06d}.fits')}\n" for n in range(6000)))
    body = listing.read_bytes()
    assert len(body) > 4 * CLASSIFY_BYTES
    with HttpClient(RetryPolicy(retries=0)) as http:
        assert http.get_head(archive.url("lists/many.txt"), 1000) == body[:1000]
        assert http.get_head(archive.url("lists/many.txt"), 10 * len(body)) == body  # a short body: all of it
        with pytest.raises(FetchError) as missing:
            http.get_head(archive.url("lists/absent.txt"), 1000)
        assert missing.value.status == 404
    spec = recognise(archive.url("lists/many.txt"), settings)
    assert spec is not None and spec.kind == "urls"
