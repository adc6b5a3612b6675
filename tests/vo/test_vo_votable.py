"""VOTables, DataLink and SODA: from a table of spectra to files in the store.

The VOTables are written with astropy the way an SSAP service or TOPCAT writes them; DataLink
and SODA answers come from the real endpoints of :class:`tests.vo_archive.Archive` (a local HTTP
server), the cutouts are real cutouts of the real spectra. Names, source strings and the plan's
rules are checked directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from oraculum.spectra.preprocessing import WavelengthGrid
from oraculum.spectra.readers import read_spectrum
from oraculum.settings import Settings
from oraculum.vo.naming import KeyAllocator, preferred_name, relative_key, safe_segment
from oraculum.vo.plan import plan_votable
from oraculum.vo.sources import VOArchive, archive_for, fetch_source, recognise
from oraculum.vo.spec import VOSourceError, banded, override, parse_vo_spec
from oraculum.vo.votable import DATALINK_MIME, VOTableError
from tests.support.vo_archive import Archive, access_votable, copy_tree, datalink_votable

FAST = "retries=2&concurrency=2"


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("archive")
    copy_tree(shared_data / "lamost-dr2", root / "dr2", lambda p: p.suffix == ".fits")
    copy_tree(shared_data / "ondrejov", root / "ondrejov", lambda p: p.suffix == ".fits")
    return root


@pytest.fixture()
def archive(archive_root: Path) -> Iterator[Archive]:
    with Archive(archive_root, ids="ivo://test.archive/spectra?") as server:
        yield server


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "store"))


def rows(archive: Archive, paths: list[str], fmt: str = "application/fits") -> list[dict[str, str]]:
    return [{"pubdid": f"ivo://test.archive/spectra?{Path(p).stem}", "url": archive.url(p), "format": fmt}
            for p in paths]


def dr2(archive_root: Path, n: int) -> list[str]:
    return [str(p.relative_to(archive_root)) for p in sorted((archive_root / "dr2").rglob("*.fits"))[:n]]


# --- finding the columns ---------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["ucd", "name"])
def test_the_access_column_is_found_by_ucd_utype_or_name(archive: Archive, archive_root: Path, by: str) -> None:
    plan = plan_votable(access_votable(rows(archive, dr2(archive_root, 3)), by=by), "ssa.xml", "auto")
    assert [i.via for i in plan.items] == ["direct"] * 3
    assert [i.url for i in plan.items] == [archive.url(p) for p in dr2(archive_root, 3)]
    assert [i.key for i in plan.items] == [Path(p).name for p in dr2(archive_root, 3)]


def test_a_table_without_an_access_column_is_refused_with_what_was_looked_for(archive: Archive,
                                                                              archive_root: Path) -> None:
    with pytest.raises(VOTableError) as refused:
        plan_votable(access_votable(rows(archive, dr2(archive_root, 2)), by="none"), "topcat-export.xml", "auto")
    message = str(refused.value)
    assert "topcat-export.xml (table results)" in message
    for looked_for in ("meta.ref.url", "ssa:Access.Reference", "access_url", "accref"):
        assert looked_for in message
    assert "its columns are ssa_pubDID, link, mime" in message


def test_a_service_error_answer_is_reported_with_its_message() -> None:
    with pytest.raises(VOTableError, match="the service reported an error: POS out of range"):
        plan_votable(access_votable([], status="POS out of range"), "https://ssa.example/ssap?POS=999", "auto")
    with pytest.raises(VOTableError, match="not XML"):
        plan_votable(b"SIMPLE  = T", "spectrum.fits", "auto")


def test_rows_without_a_reference_are_problems_not_items(archive: Archive, archive_root: Path) -> None:
    table = rows(archive, dr2(archive_root, 2)) + [{"pubdid": "ivo://x?lost", "url": ""}]
    plan = plan_votable(access_votable(table), "ssa.xml", "auto")
    assert len(plan.items) == 2
    assert plan.problems == [{"row": 2, "source": "ivo://x?lost", "status": "failed",
                              "reason": "no access reference in column 'accref'"}]


# --- fetching from a VOTable ---------------------------------------------------------------------


def test_an_access_reference_votable_is_fetched_file_by_file(archive: Archive, archive_root: Path, tmp_path: Path,
                                                            settings: Settings) -> None:
    table = tmp_path / "from-topcat.vot"
    table.write_bytes(access_votable(rows(archive, dr2(archive_root, 4)), by="name"))
    spec = recognise(str(table), settings)  # recognised as a VOTable by its content
    assert spec is not None and spec.kind == "votable"
    report = fetch_source(override(spec, retries=2), settings)
    assert report.count("fetched") == 4
    store = archive_for(spec, settings)
    for path in dr2(archive_root, 4):
        assert store.get_bytes(Path(path).name) == (archive_root / path).read_bytes()


def test_datalink_this_is_fetched_through_the_service_in_batches(archive: Archive, archive_root: Path,
                                                                 tmp_path: Path, settings: Settings) -> None:
    paths = dr2(archive_root, 8)
    ids = [f"ivo://test.archive/spectra?{Path(p).stem}" for p in paths] + ["ivo://test.archive/spectra?gone"]
    table = tmp_path / "obscore.xml"
    table.write_bytes(datalink_votable(ids, archive.url("datalink")))
    spec = parse_vo_spec(f"votable:{table}#datalink=this&{FAST}")
    assert spec is not None
    report = fetch_source(spec, settings)
    by_key = {r.key: r for r in report.records}
    assert report.count("fetched") == 8 and all(by_key[Path(p).name].product == "this" for p in paths)
    gone = by_key["gone.fits"]
    assert gone.status == "failed" and "NotFoundFault" in (gone.reason or "")
    # 9 identifiers, 2 workers: two DataLink calls with several IDs each, not nine
    calls = [params for method, path, params in archive.requests if path == "/datalink"]
    assert len(calls) == 2 and sorted(len(c["ID"]) for c in calls) == [4, 5]
    store = archive_for(spec, settings)
    assert store.get_bytes(Path(paths[0]).name) == (archive_root / paths[0]).read_bytes()


def test_a_soda_cutout_around_the_grid_is_fetched_when_offered(archive: Archive, archive_root: Path,
                                                               tmp_path: Path, settings: Settings) -> None:
    paths = dr2(archive_root, 3) + ["ondrejov/gamma-cas-emission.fits"]
    ids = [f"ivo://test.archive/spectra?{Path(p).stem}" for p in paths]
    table = tmp_path / "obscore.xml"
    table.write_bytes(datalink_votable(ids, archive.url("datalink")))
    grid = WavelengthGrid()  # 6519-6732 Å, vacuum
    spec = banded(parse_vo_spec(f"votable:{table}#{FAST}"), grid)  # type: ignore[arg-type]
    assert spec.band_A == (6469.0, 6782.0) and spec.cutouts
    report = fetch_source(spec, settings)
    assert [r.product for r in report.records] == ["cutout"] * 4 and report.count("fetched") == 4
    bands = {params["BAND"][0] for _, path, params in archive.requests if path == "/soda"}
    assert bands == {"6.469e-07 6.782e-07"}  # metres, as SODA wants
    store = VOArchive(spec, settings).files()
    assert store.url.endswith("/cutout-6469.00-6782.00")
    for path in paths:
        data = store.get_bytes(Path(path).name)
        full = (archive_root / path).read_bytes()
        cut = read_spectrum(data, path, grid=grid)
        assert cut.format == "generic-table" and cut.medium == "vacuum"
        assert cut.wavelength_A[0] <= grid.start and cut.wavelength_A[-1] >= grid.end  # covers the grid
        assert cut.wavelength_A[0] >= 6469.0 and cut.wavelength_A[-1] <= 6782.0
        assert len(data) < len(full) / (3 if path.startswith("dr2/") else 1)  # LAMOST: 3700-9100 Å in full
        original = read_spectrum(full, path)
        assert np.isin(cut.flux, np.asarray(original.flux, dtype=np.float32)).all()  # real pixels, not made up
    # another grid is another folder: cutouts of different bands never mix; #this files stay apart
    other = banded(parse_vo_spec(f"votable:{table}"), WavelengthGrid(start=4800, end=5000))  # type: ignore[arg-type]
    assert other.archive_prefix == spec.archive_prefix and other.cutout_folder == "cutout-4750.00-5050.00"
    this = parse_vo_spec(f"votable:{table}#datalink=this")
    assert VOArchive(this, settings).files().url == archive_for(spec, settings).url  # type: ignore[arg-type]


def test_cutout_mode_fails_rows_that_offer_no_cutout(archive: Archive, archive_root: Path, tmp_path: Path,
                                                     settings: Settings) -> None:
    archive.cutouts = False
    ids = [f"ivo://test.archive/spectra?{Path(p).stem}" for p in dr2(archive_root, 2)]
    table = tmp_path / "obscore.xml"
    table.write_bytes(datalink_votable(ids, archive.url("datalink")))
    spec = parse_vo_spec(f"votable:{table}#datalink=cutout&band=6469-6782&{FAST}")
    report = fetch_source(spec, settings)  # type: ignore[arg-type]
    assert report.count("failed") == 2
    assert all("no SODA cutout with a BAND parameter" in (r.reason or "") for r in report.records)
    auto = fetch_source(parse_vo_spec(f"votable:{table}#band=6469-6782&{FAST}"), settings)  # type: ignore[arg-type]
    assert [r.product for r in auto.records] == ["this", "this"]  # auto falls back to #this


def test_rows_whose_access_reference_is_a_datalink_document(archive: Archive, archive_root: Path, tmp_path: Path,
                                                            settings: Settings) -> None:
    paths = dr2(archive_root, 2)
    table_rows = [{"pubdid": f"ivo://test.archive/spectra?{Path(p).stem}",
                   "url": archive.url(f"datalink?ID=ivo://test.archive/spectra?{Path(p).stem}"), "format": DATALINK_MIME}
                  for p in paths]
    table = tmp_path / "ssa.xml"
    table.write_bytes(access_votable(table_rows))
    plan = plan_votable(table.read_bytes(), str(table), "auto")
    assert [i.via for i in plan.items] == ["document", "document"]
    assert [i.key for i in plan.items] == [f"{Path(p).stem}.fits" for p in paths]  # named by the identifier
    report = fetch_source(parse_vo_spec(f"votable:{table}#datalink=this&{FAST}"), settings)  # type: ignore[arg-type]
    assert report.count("fetched") == 2
    none = fetch_source(parse_vo_spec(f"votable:{table}#datalink=none&{FAST}"), settings)  # type: ignore[arg-type]
    assert none.count("fetched") == 2  # the DataLink documents themselves, as asked
    assert b"<VOTABLE" in archive_for(parse_vo_spec(f"votable:{table}#datalink=none"), settings).get_bytes(  # type: ignore[arg-type]
        none.records[0].key)[:2000]


def test_a_votable_in_the_store_is_read_from_there(archive: Archive, archive_root: Path, settings: Settings) -> None:
    from oraculum.store import open_store

    open_store(settings=settings).put_bytes("uploads/votables/be.xml", access_votable(rows(archive, dr2(archive_root, 2))))
    report = fetch_source(parse_vo_spec(f"votable:store:uploads/votables/be.xml#{FAST}"), settings)  # type: ignore[arg-type]
    assert report.count("fetched") == 2


# --- names and source strings ---------------------------------------------------------------------


def test_keys_are_safe_stable_and_keep_the_archive_names() -> None:
    assert preferred_name("http://a/x/spec-1.fits.gz?token=1") == "spec-1.fits.gz"
    assert preferred_name("http://a/getproduct?ID=1", "ivo://asu.cas.cz/stel/ccd700?uc090038") == "uc090038.fits"
    assert preferred_name("http://a/dl", None, "application/x-gzip") == "dl.fits.gz"
    assert preferred_name("http://a/../../etc/passwd.fits") == "passwd.fits"
    assert safe_segment("..%2F..%2Fsecret") == "secret" and safe_segment(".hidden") == "hidden"
    assert relative_key("http://h/dr2/a/../../../b/x.fits", "http://h/dr2/") == "a/b/x.fits"  # no way up
    assert relative_key("http://h/dr2/p%20q/x.fits", "http://h/dr2/index.html") == "p_q/x.fits"
    keys = KeyAllocator()
    first = keys.allocate("x.fits", "http://a/x.fits")
    second = keys.allocate("x.fits", "http://b/x.fits")
    assert first == "x.fits" and second.startswith("x-") and second.endswith(".fits") and len(second) == len("x-12345678.fits")
    again = KeyAllocator()
    assert [again.allocate("x.fits", "http://a/x.fits"), again.allocate("x.fits", "http://b/x.fits")] == [first, second]


def test_source_strings_round_trip_and_refuse_mistakes(tmp_path: Path) -> None:
    spec = parse_vo_spec("votable:https://ssa.example/ssap?REQUEST=queryData&POS=10,20&SIZE=0.1#datalink=cutout&band=6469-6782&concurrency=16")
    assert spec is not None and spec.location == "https://ssa.example/ssap?REQUEST=queryData&POS=10,20&SIZE=0.1"
    assert parse_vo_spec(spec.canonical()) == spec
    assert parse_vo_spec(str(tmp_path)) is None and parse_vo_spec("synthetic:100") is None
    faster = override(spec, concurrency=32)
    assert faster.digest == spec.digest  # the same files, fetched faster
    this = override(spec, datalink="this")
    assert this.digest == spec.digest and this.cutout_folder is None and spec.cutout_folder == "cutout-6469.00-6782.00"
    assert override(spec, datalink="none").digest != spec.digest  # another plan: the access references themselves
    for bad, message in [
        ("votable:x.xml#datalink=cutout", "needs band"),
        ("votable:x.xml#speed=9", "unknown option"),
        ("urls:list.txt#band=1-2", "votable: sources only"),
        ("index:/local/folder", "an index page must be an http"),
        ("votable:x.xml#concurrency=0", "outside"),
        ("votable:x.xml#band=9-3", "0 < LO < HI"),
        ("votable:x.xml#band=1.2.3-5", "not LO-HI"),
        ("votable:", "nothing after votable:"),
    ]:
        with pytest.raises(VOSourceError, match=message):
            parse_vo_spec(bad)


def test_air_grids_ask_for_vacuum_cutouts() -> None:
    spec = banded(parse_vo_spec("votable:https://h/t.xml"), WavelengthGrid(medium="air"), margin_A=10)  # type: ignore[arg-type]
    assert spec.band_A is not None and 6510.7 < spec.band_A[0] < 6510.9  # 6519 Å air = 6520.8 Å vacuum, minus 10
    assert banded(parse_vo_spec("votable:https://h/t.xml#datalink=this"), WavelengthGrid()).band_A is None  # type: ignore[arg-type]


def test_votables_are_written_without_astropys_c_tabledata_writer() -> None:
    """oraculum writes VOTables with astropy's Python writer (the C one corrupts the heap now and
    then, astropy issue #20419): the document is TABLEDATA and reads back the same."""
    import io as _io

    import numpy as _np
    from astropy.io.votable import from_table, parse
    from astropy.table import Table

    from oraculum.vo.votable import votable_bytes

    table = Table({"id": [f"spec-{i}" for i in range(3000)], "flux": _np.linspace(-1, 1, 3000)})
    data = votable_bytes(from_table(table))
    assert b"<TABLEDATA>" in data
    back = parse(_io.BytesIO(data)).get_first_table().to_table()
    assert list(back["id"]) == list(table["id"]) and _np.allclose(back["flux"], table["flux"])
