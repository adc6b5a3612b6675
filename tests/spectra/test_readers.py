"""Readers (oraculum.spectra.readers): real archive files, the fast path against astropy, corrupt input.

Real spectra come from ../shared/data (see its README); tests that need them skip when it is
absent. Synthetic files are built here with astropy from real ones.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid, preprocess
from oraculum.spectra.readers import read_spectrum, read_spectrum_reference
from oraculum.spectra.readers.fits_header import HeaderCards, Unsure, parse_value
from oraculum.spectra.readers.lamost import read_lrs_image_fast
from oraculum.spectra.readers.metadata import angle_deg
from oraculum.spectra.spectrum import RejectReason, Spectrum, SpectrumRejected

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_FILES = sorted(p for p in SHARED.rglob("*") if p.is_file()) if SHARED.is_dir() else []
REAL_FITS = [p for p in REAL_FILES if p.name.endswith((".fits", ".fits.gz"))]
LRS_IMAGES = [p for p in REAL_FITS if p.name.startswith("spec-") or p.name == "bt-cmi-lamost.fits"]
MRS_FILES = [p for p in REAL_FITS if p.name.startswith("med-")]

DEFAULT = PreprocessingParameters()
H_ALPHA_VACUUM_A = 6564.61

DR2_FILE = "lamost-dr2/spec-55939-B5593905_sp01-018.fits"  # BITPIX -32
DR7_FILE = "lamost-dr7/spec-58397-EG014118N254444M01_sp03-031.fits"
MRS_FILE = "lamost-dr7/med-58408-TD230151N343645T01_sp01-015.fits"
GAMMA_CAS = "ondrejov/gamma-cas-emission.fits"
VEGA = "ondrejov/alpha-lyr-absorption.fits"


def _id(path: Path) -> str:
    return str(path.relative_to(SHARED))


# --- helpers ------------------------------------------------------------------------------------


def outcome(function, data: bytes, name: str, **kwargs) -> Spectrum | SpectrumRejected:
    """The spectrum, or the rejection; any other exception fails the test."""
    try:
        return function(data, name, **kwargs)
    except SpectrumRejected as rejection:
        return rejection


def preprocessed(spectrum: Spectrum, params: PreprocessingParameters) -> np.ndarray | RejectReason:
    """The network input, on a copy: preprocessing records the masked fraction in the metadata."""
    spectrum = dataclasses.replace(spectrum, meta=dataclasses.replace(spectrum.meta))
    try:
        return preprocess(spectrum, params)
    except SpectrumRejected as rejection:
        return rejection.reason


def assert_identical(fast: Spectrum | SpectrumRejected, reference: Spectrum | SpectrumRejected) -> None:
    """Both reject with the same reason, or return bit-identical spectra and network inputs."""
    if isinstance(reference, SpectrumRejected) or isinstance(fast, SpectrumRejected):
        assert isinstance(fast, SpectrumRejected) and isinstance(reference, SpectrumRejected), (
            f"fast: {fast!r}, reference: {reference!r}"
        )
        assert fast.reason == reference.reason, (fast.message, reference.message)
        return
    assert fast.format == reference.format
    assert fast.medium == reference.medium
    assert fast.meta == reference.meta
    assert fast.wavelength_A.dtype == reference.wavelength_A.dtype == np.float64
    assert np.array_equal(fast.wavelength_A, reference.wavelength_A)
    assert fast.flux.dtype == reference.flux.dtype
    assert fast.flux.dtype.isnative
    assert np.array_equal(fast.flux, reference.flux, equal_nan=True)
    assert fast.mask is not None and reference.mask is not None
    assert fast.mask.dtype == reference.mask.dtype == np.bool_
    assert np.array_equal(fast.mask, reference.mask)
    for params in (DEFAULT, PreprocessingParameters(blur_sigma_px=7)):
        a, b = preprocessed(fast, params), preprocessed(reference, params)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            assert a.dtype == b.dtype == np.float32
            assert a.tobytes() == b.tobytes()
        else:
            assert a == b


def both(data: bytes, name: str = "test.fits", **kwargs):
    fast = outcome(read_spectrum, data, name, **kwargs)
    reference = outcome(read_spectrum_reference, data, name, **kwargs)
    assert_identical(fast, reference)
    return fast


def rejected(data: bytes, name: str, reason: RejectReason, *message_parts: str) -> SpectrumRejected:
    """Both paths reject ``data`` for ``reason`` with a message containing ``message_parts``."""
    for function in (read_spectrum, read_spectrum_reference):
        with pytest.raises(SpectrumRejected) as info:
            function(data, name)
        assert info.value.reason == reason, info.value.message
        for part in message_parts:
            assert part in info.value.message, info.value.message
        assert name in info.value.message
    return info.value


def wcs_wavelength_A(header: fits.Header) -> np.ndarray:
    """The LAMOST log-linear WCS computed independently from an astropy header."""
    n = header["NAXIS1"]
    return 10 ** (header["CRVAL1"] + header["CD1_1"] * (np.arange(n) + 1 - header["CRPIX1"]))


def fits_bytes(*hdus: fits.hdu.base._BaseHDU) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    return buffer.getvalue()


# --- every real file: fast path == astropy path --------------------------------------------------


@pytest.mark.parametrize("path", REAL_FILES, ids=_id)
def test_fast_path_is_bit_identical_to_astropy(path: Path) -> None:
    """For every file (FITS or not), read_spectrum and read_spectrum_reference agree exactly."""
    data = path.read_bytes()
    both(data, path.name)
    both(data, path.name, grid=WavelengthGrid(start=5000, end=5300))


@pytest.mark.parametrize("path", REAL_FITS, ids=_id)
def test_every_real_fits_file_reads_and_preprocesses(path: Path) -> None:
    spectrum = read_spectrum(path.read_bytes(), path.name)
    assert spectrum.wavelength_A.size == spectrum.flux.size > 1000
    assert (np.diff(spectrum.wavelength_A) > 0).all()
    vector = preprocess(spectrum, DEFAULT)
    assert vector.shape == (140,) and vector.dtype == np.float32
    assert vector.min() == -1.0 and vector.max() == 1.0


@pytest.mark.parametrize("path", LRS_IMAGES, ids=_id)
def test_lrs_images_take_the_fast_path(path: Path) -> None:
    """The equality test above is only meaningful if the fast path really answers."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    spectrum = read_lrs_image_fast(data)
    assert spectrum is not None
    assert spectrum.format == "lamost-lrs-image"


def test_non_spectrum_files_are_rejected_with_understood_reasons(shared_data: Path) -> None:
    readme = (shared_data / "README.md").read_bytes()
    rejected(readme, "README.md", RejectReason.NOT_FITS, "SIMPLE")
    catalogue = (shared_data / "lamost-dr2" / "candidates-catalogue.csv").read_bytes()
    rejected(catalogue, "candidates-catalogue.csv", RejectReason.UNKNOWN_LAYOUT, "wavelength")


# --- formats, wavelengths, metadata ------------------------------------------------------------


def test_formats_media_and_metadata_of_real_files(shared_data: Path) -> None:
    dr7 = read_spectrum((shared_data / DR7_FILE).read_bytes(), DR7_FILE)
    assert (dr7.format, dr7.medium) == ("lamost-lrs-image", "vacuum")
    assert dr7.meta.obsid == 677503031
    assert dr7.meta.designation == "LAMOST J013730.44+252537.7"
    assert dr7.meta.ra_deg == 24.376852 and dr7.meta.dec_deg == 25.427147
    assert (dr7.meta.header_class, dr7.meta.subclass) == ("STAR", "G3")
    assert dr7.meta.snr == 241.09 and dr7.meta.mjd == 58396.0

    ondrejov = read_spectrum((shared_data / GAMMA_CAS).read_bytes(), GAMMA_CAS)
    assert (ondrejov.format, ondrejov.medium) == ("ondrejov-table", "air")
    assert ondrejov.meta.object_name == "gamma Cas"
    assert ondrejov.meta.ra_deg == pytest.approx(14.1772, abs=1e-4)

    image = read_spectrum((shared_data / "ondrejov/oe270005.fits").read_bytes(), "oe270005.fits")
    assert (image.format, image.medium) == ("fits-image-1d", "air")
    header = fits.getheader(shared_data / "ondrejov/oe270005.fits")
    assert image.wavelength_A[0] == pytest.approx(header["CRVAL1"])
    assert image.wavelength_A[1] - image.wavelength_A[0] == pytest.approx(header["CDELT1"])
    # RA = '21:57:18.2' is hours (the header comment says 21.955056 h), DEC = '61:17:39.7'.
    assert image.meta.ra_deg == pytest.approx(21.955056 * 15, abs=1e-4)
    assert image.meta.dec_deg == pytest.approx(61.294361, abs=1e-5)
    assert image.meta.object_name == "HD 208905"


@pytest.mark.parametrize("path", LRS_IMAGES, ids=_id)
def test_lrs_wavelengths_come_from_the_wcs(path: Path) -> None:
    spectrum = read_spectrum(path.read_bytes(), path.name)
    with fits.open(path) as hdul:
        header, image = hdul[0].header, hdul[0].data
        assert np.array_equal(spectrum.wavelength_A, wcs_wavelength_A(header))
        assert np.array_equal(spectrum.flux, image[0])
    assert 3690 < spectrum.wavelength_A[0] < 3710
    assert 9000 < spectrum.wavelength_A[-1] < 9110
    assert spectrum.medium == "vacuum"


def test_dr1_row_two_is_not_the_wavelength(shared_data: Path) -> None:
    """In DR1 files row 2 is a sub-continuum (all ones), yet the reader gives WCS wavelengths."""
    files = sorted((shared_data / "crossmatch" / "lamost").glob("*.fits"))
    assert files
    differs = 0
    for path in files:
        spectrum = read_spectrum(path.read_bytes(), path.name)
        with fits.open(path) as hdul:
            row2 = hdul[0].data[2]
            assert np.array_equal(spectrum.wavelength_A, wcs_wavelength_A(hdul[0].header))
        differs += not np.allclose(row2, spectrum.wavelength_A, rtol=1e-4)
    assert differs == len(files)


def test_mrs_picks_the_arm_that_covers_the_grid(shared_data: Path) -> None:
    data = (shared_data / MRS_FILE).read_bytes()
    with fits.open(shared_data / MRS_FILE) as hdul:
        red = 10.0 ** hdul["COADD_R"].data["LOGLAM"].astype(np.float64)
        blue = 10.0 ** hdul["COADD_B"].data["LOGLAM"].astype(np.float64)
        red_flux = hdul["COADD_R"].data["FLUX"]
        snr_red = hdul["COADD_R"].header["SNR"]
    for grid in (None, DEFAULT.grid):
        spectrum = both(data, MRS_FILE, grid=grid)
        assert spectrum.format == "lamost-mrs" and spectrum.medium == "vacuum"
        assert np.array_equal(spectrum.wavelength_A, red)
        assert np.array_equal(spectrum.flux, red_flux)
        assert spectrum.meta.snr == snr_red
        assert spectrum.meta.obsid == 681001015
    blue_spectrum = both(data, MRS_FILE, grid=WavelengthGrid(start=5000, end=5300))
    assert np.array_equal(blue_spectrum.wavelength_A, blue)
    preprocess(blue_spectrum, PreprocessingParameters(grid=WavelengthGrid(start=5000, end=5300)))
    rejection = rejected_with_grid(data, MRS_FILE, WavelengthGrid(start=8000, end=8200))
    assert rejection.reason == RejectReason.GRID_NOT_COVERED
    assert "COADD_R 6292.5-6850.6 Å" in rejection.message
    assert "COADD_B" in rejection.message


def rejected_with_grid(data: bytes, name: str, grid: WavelengthGrid) -> SpectrumRejected:
    with pytest.raises(SpectrumRejected) as info:
        read_spectrum(data, name, grid=grid)
    return info.value


@pytest.mark.parametrize("path", MRS_FILES, ids=_id)
def test_every_mrs_file_gives_the_red_coadd_by_default(path: Path) -> None:
    spectrum = read_spectrum(path.read_bytes(), path.name)
    assert spectrum.wavelength_A[0] < 6519 and spectrum.wavelength_A[-1] > 6732


def test_mrs_falls_back_to_single_exposures(shared_data: Path) -> None:
    """Without COADD arms, the single exposure with the best SNR that covers the grid is used;
    red exposures are stored with decreasing wavelength and come out increasing."""
    with fits.open(shared_data / MRS_FILE) as hdul:
        keep = [hdu.copy() for hdu in hdul if not hdu.name.startswith("COADD")]
        singles = [hdu for hdu in keep[1:] if hdu.name.startswith("R-")]
        best = max(singles, key=lambda hdu: hdu.header["SNR"])
        expected_flux = best.data["FLUX"][::-1]
    data = fits_bytes(*keep)
    spectrum = both(data, "no-coadd.fits", grid=DEFAULT.grid)
    assert np.array_equal(spectrum.flux, expected_flux)
    assert (np.diff(spectrum.wavelength_A) > 0).all()
    assert spectrum.meta.snr == best.header["SNR"]
    rejected(data, "no-coadd.fits", RejectReason.UNKNOWN_LAYOUT, "COADD_R")  # no grid: no choice


# --- physics, independent of our code -----------------------------------------------------------


@pytest.mark.parametrize("points", [140, 2131])
def test_h_alpha_lands_at_its_vacuum_wavelength(shared_data: Path, points: int) -> None:
    """Ondřejov wavelengths are air: converted to the vacuum grid, gamma Cas's H-alpha emission
    peak and Vega's H-alpha absorption core sit at 6564.6 Å (treated as vacuum they would sit
    ~1.8 Å too blue, which the fine grid resolves)."""
    params = PreprocessingParameters(grid=WavelengthGrid(points=points))
    grid = params.grid.wavelengths
    gamma_cas = preprocess(read_spectrum((shared_data / GAMMA_CAS).read_bytes(), GAMMA_CAS), params)
    vega = preprocess(read_spectrum((shared_data / VEGA).read_bytes(), VEGA), params)
    assert abs(grid[np.argmax(gamma_cas)] - H_ALPHA_VACUUM_A) < 1.5
    assert abs(grid[np.argmin(vega)] - H_ALPHA_VACUUM_A) < 1.5
    if points > 1000:
        assert abs(grid[np.argmin(vega)] - H_ALPHA_VACUUM_A) < 0.6


def test_same_star_from_lamost_and_ondrejov_correlates(shared_data: Path) -> None:
    """The published domain matching: Ondřejov blurred with sigma = 7 px resembles LAMOST."""
    pairs = []
    with open(shared_data / "crossmatch" / "cross-matched.csv", newline="") as handle:
        for ondrejov_path, lamost_path in csv.reader(handle):
            pairs.append(
                (
                    shared_data / "crossmatch" / "ondrejov" / Path(ondrejov_path).name,
                    shared_data / "crossmatch" / "lamost" / Path(lamost_path).name,
                )
            )
    assert len(pairs) == 22
    blurred = PreprocessingParameters(blur_sigma_px=7)

    def vectors(params: PreprocessingParameters, which: int) -> np.ndarray:
        return np.array(
            [preprocess(read_spectrum(p[which].read_bytes(), p[which].name), params) for p in pairs]
        )

    lamost = vectors(DEFAULT, 1)
    ondrejov = vectors(blurred, 0)
    correlation = np.corrcoef(ondrejov, lamost)[: len(pairs), len(pairs) :]
    matched = np.diag(correlation)
    mismatched = (correlation.sum() - matched.sum()) / (len(pairs) * (len(pairs) - 1))
    assert (matched > 0.3).all(), matched
    assert matched.mean() > mismatched + 0.3
    sharp = np.diag(np.corrcoef(vectors(DEFAULT, 0), lamost)[: len(pairs), len(pairs) :])
    assert matched.mean() > sharp.mean()  # blurring is what makes the domains match


# --- corrupt input -----------------------------------------------------------------------------


def test_empty_file() -> None:
    rejected(b"", "empty.fits", RejectReason.TRUNCATED, "empty")


def test_random_bytes() -> None:
    garbage = np.random.default_rng(0).bytes(10_000)
    rejected(garbage, "random.fits", RejectReason.NOT_FITS, "does not start with 'SIMPLE  ='")


def test_text_that_is_not_a_table() -> None:
    text = b"Dear astronomer,\nthis is not a spectrum.\n"
    rejected(text, "letter.txt", RejectReason.NOT_FITS, "SIMPLE", "CSV")


def test_truncated_at_half(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()
    rejection = rejected(data[: len(data) // 2], "half.fits", RejectReason.TRUNCATED)
    assert "expected 78180 bytes of data, found 34560" in rejection.message


def test_truncated_to_the_first_header_block(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()  # its header is four blocks long
    rejected(data[:2880], "block.fits", RejectReason.TRUNCATED, "END")


@pytest.mark.parametrize("name", [DR7_FILE, "ondrejov/oe270005.fits"])
def test_truncated_after_the_header(shared_data: Path, name: str) -> None:
    data = (shared_data / name).read_bytes()
    with fits.open(shared_data / name) as hdul:
        header_end, expected = hdul[0].fileinfo()["datLoc"], hdul[0].size
    rejected(data[:header_end], "header-only.fits", RejectReason.TRUNCATED,
             f"expected {expected} bytes of data, found 0")  # fmt: skip


def test_truncated_shorter_than_a_block(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()
    rejected(data[:1000], "short.fits", RejectReason.TRUNCATED, "2880")


def test_truncated_multi_extension_file(shared_data: Path) -> None:
    data = (shared_data / MRS_FILE).read_bytes()
    with fits.open(shared_data / MRS_FILE) as hdul:
        last_data_end = hdul[-1].fileinfo()["datLoc"] + hdul[-1].size
    assert read_spectrum(data[:last_data_end], "unpadded.fits").format == "lamost-mrs"
    for cut in (len(data) // 2, last_data_end - 1):
        for grid in (None, DEFAULT.grid):
            with pytest.raises(SpectrumRejected) as info:
                read_spectrum(data[:cut], "mrs.fits", grid=grid)
            assert info.value.reason == RejectReason.TRUNCATED, info.value.message


def test_truncated_gzip(shared_data: Path) -> None:
    path = shared_data / "lamost-dr7/KIC8098300/DR6_low/spec-57287-KP193637N444141V03_sp10-161.fits.gz"
    data = path.read_bytes()
    rejected(data[: len(data) // 2], "cut.fits.gz", RejectReason.TRUNCATED, "gzip")


def test_three_dimensional_primary_image() -> None:
    data = fits_bytes(fits.PrimaryHDU(np.zeros((2, 3, 4), dtype=np.float32)))
    rejected(data, "cube.fits", RejectReason.UNKNOWN_LAYOUT, "3-D", "(2, 3, 4)")


def test_binary_table_without_spectrum_columns() -> None:
    table = fits.BinTableHDU.from_columns(
        [fits.Column("TIME", "D", array=np.arange(5.0)), fits.Column("MAG", "E", array=np.ones(5))],
        name="PHOTOMETRY",
    )
    rejected(fits_bytes(fits.PrimaryHDU(), table), "lightcurve.fits", RejectReason.UNKNOWN_LAYOUT,
             "TIME, MAG", "PHOTOMETRY", "wavelength")  # fmt: skip


def test_gzip_of_garbage() -> None:
    garbage = np.random.default_rng(1).bytes(5000)
    rejected(gzip.compress(garbage), "garbage.fits.gz", RejectReason.NOT_FITS, "SIMPLE")
    rejected(b"\x1f\x8b" + garbage, "corrupt.fits.gz", RejectReason.UNREADABLE, "gzip")


def test_all_nan_flux_reads_but_does_not_preprocess(shared_data: Path) -> None:
    data = bytearray((shared_data / DR7_FILE).read_bytes())
    with fits.open(shared_data / DR7_FILE) as hdul:
        start = hdul[0].fileinfo()["datLoc"]
        n = hdul[0].header["NAXIS1"]
    data[start : start + 4 * n] = np.full(n, np.nan, dtype=">f4").tobytes()
    spectrum = both(bytes(data), "nan.fits")
    assert np.isnan(spectrum.flux).all()
    with pytest.raises(SpectrumRejected) as info:
        preprocess(spectrum, DEFAULT)
    assert info.value.reason == RejectReason.NON_FINITE


def test_csv_with_non_numeric_values() -> None:
    text = b"wavelength,flux\n6500.0,1.0\n6501.0,abc\n6502.0,1.2\n"
    rejected(text, "bad.csv", RejectReason.UNREADABLE, "line 3", "'flux'", "'abc'")


def test_csv_with_ragged_rows() -> None:
    rejected(b"wave,flux\n6500,1\n6501\n", "ragged.csv", RejectReason.UNREADABLE, "line 3")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # absurd wavelengths overflow in convert()
def test_random_corruption_never_escapes_and_paths_agree(shared_data: Path) -> None:
    """Flip bytes in headers and data, cut files anywhere: only SpectrumRejected ever escapes,
    and whatever happens, the fast path and astropy agree."""
    rng = np.random.default_rng(2024)
    sources = [(shared_data / name).read_bytes() for name in (DR2_FILE, DR7_FILE, GAMMA_CAS)]
    printable = np.frombuffer(b" 0123456789.-+'=/EDTFXYZabc", dtype=np.uint8)
    for trial in range(150):
        data = bytearray(sources[trial % len(sources)])
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            where = rng.integers(0, 11_520 if trial % 3 == 1 else len(data), size=int(rng.integers(1, 6)))
            for position in where:
                if position < len(data):
                    data[position] = int(rng.choice(printable)) if trial % 2 else int(rng.integers(0, 256))
        both(bytes(data), f"corrupt-{trial}.fits")


# --- header scanner against astropy --------------------------------------------------------------


CARDS = [
    "CRVAL1  =               3.5682 / Central wavelength (log10) of first pixel",
    "CRVAL1  =             3.5682D0 / D exponent",
    "CD1_1   =          0.000100000 / Log10 dispersion per pixel",
    "CDELT1  =             1.0E-04",
    "CRPIX1  =                    1 / Starting pixel (1-indexed)",
    "CRPIX1  =                  1.0",
    "NAXIS1  =                 3909",
    "BZERO   =               -32768",
    "BSCALE  =                  +.5",
    "MJD     =                00528 / leading zeros",
    "VACUUM  =                    T / Wavelengths are in vacuum",
    "HELIO   =                    F",
    "DESIG   = 'LAMOST J013730.44+252537.7' / Designation of LAMOST target",
    "CLASS   = 'STAR    '           / Class of object",
    "SUBCLASS= '  G3  '",
    "OBJECT  = 'HD 208905'/no blank before the comment",
    "FILENAME= 'x' / it's got a quote in the comment",
    "RA      =    14.17719583380958",
    "RA      = '21:57:18.2'         / 21.955056",
    "SNRR    = 241.09",
    "TEMP    =               -999.0",
]
UNSURE_CARDS = [
    "GRATCWAV=                      / blank value: astropy's Undefined",
    "DUST    = ''                   / empty string",
    "DESIG   = 'O''Brien'           / embedded quote",
    "LONGSTR = 'continued on next card&'",
    "DP1     = 'AXIS.1: 1'          / record-valued keyword card",
    "CRVAL1  = 3.5682 5             / junk after the value",
    "NAN     =                  NaN",
    "CRVAL1  =3.5682",
]


@pytest.mark.parametrize("text", CARDS)
def test_card_values_parse_exactly_as_astropy(text: str) -> None:
    card = text.ljust(80).encode("ascii")
    value = parse_value(card)
    expected = fits.Card.fromstring(card.decode()).value
    assert type(value) is type(expected)
    assert value == expected


@pytest.mark.parametrize("text", UNSURE_CARDS)
def test_cards_outside_the_plain_forms_are_left_to_astropy(text: str) -> None:
    with pytest.raises(Unsure):
        parse_value(text.ljust(80).encode("ascii"))


def _replace_card(data: bytes, keyword: str, new_card: str) -> bytes:
    """``data`` with the first card of ``keyword`` replaced by ``new_card`` (80 chars)."""
    field = keyword.encode().ljust(8)
    for position in range(0, 11_520, 80):
        if data[position : position + 8] == field:
            return data[:position] + new_card.ljust(80).encode("latin-1") + data[position + 80 :]
    raise AssertionError(f"no {keyword} card")


HEADER_VARIANTS = {
    "d-exponent": ("CRVAL1", "CRVAL1  =             3.5682D0", True),
    "fixed-vs-free": ("CD1_1", "CD1_1   = 1.00000000000000E-04 / dispersion", True),
    "crpix-float": ("CRPIX1", "CRPIX1  =                  1.0", True),
    "bscale-in-place-of-filename": ("FILENAME", "BSCALE  =                  2.5", True),
    "vacuum-false": ("VACUUM", "VACUUM  =                    F", True),
    "lower-case-keyword": ("CRVAL1", "crval1  =               3.5700", False),
    "indented-keyword": ("CRVAL1", " CRVAL1 =               3.5700", False),
    "quote-in-designation": ("DESIG", "DESIG   = 'LAMOST J0137''30'", False),
    "blank-class": ("CLASS", "CLASS   =", False),
    "hierarch": ("FILENAME", "HIERARCH ESO DET CHIP = 'x'", False),
    "tab-in-keyword": ("CRVAL1", "CRVAL1\t  =               3.5700", False),
    "blank-in-place-of-filename": ("FILENAME", "BLANK   =                 -999", False),
    "naxis-3": ("NAXIS", "NAXIS   =                    3", False),
    "bitpix-16": ("BITPIX", "BITPIX  =                   16", False),
    "non-ascii-comment": ("CRVAL1", "CRVAL1  =               3.5682 / \xe5ngstr\xf6m", True),
}


@pytest.mark.parametrize("variant", sorted(HEADER_VARIANTS))
def test_header_variants_agree_with_astropy(shared_data: Path, variant: str) -> None:
    """Odd but legal (or dubious) header cards: the fast path either answers exactly as astropy
    or declines (None) and lets astropy answer."""
    keyword, card, fast_expected = HEADER_VARIANTS[variant]
    data = _replace_card((shared_data / DR7_FILE).read_bytes(), keyword, card)
    fast = read_lrs_image_fast(data)
    assert (fast is not None) == fast_expected
    both(data, f"{variant}.fits")


def test_header_cards_reports_data_offset(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()
    cards = HeaderCards(data)
    with fits.open(io.BytesIO(data)) as hdul:
        assert cards.data_offset == hdul[0].fileinfo()["datLoc"]
    assert cards.get("OBSID") == 677503031 and cards.get("NOSUCHKEY") is None
    with pytest.raises(Unsure):
        HeaderCards(data[:5760])  # no END card


# --- synthetic layouts built from real files ------------------------------------------------------


def _real_lrs(shared_data: Path, name: str = DR2_FILE) -> tuple[fits.Header, np.ndarray]:
    with fits.open(shared_data / name) as hdul:
        return hdul[0].header.copy(), np.array(hdul[0].data)


def test_bscale_bzero_integer_image(shared_data: Path) -> None:
    header, image = _real_lrs(shared_data)
    hdu = fits.PrimaryHDU(image.astype(np.float32), header=header)
    hdu.scale("int16", "minmax")
    data = fits_bytes(hdu)
    assert b"BSCALE  =" in data[:11520] and b"BITPIX  =                   16" in data[:11520]
    assert read_lrs_image_fast(data) is not None
    spectrum = both(data, "int16.fits")
    assert spectrum.flux.dtype == np.float32
    span = image[0].max() - image[0].min()
    assert np.allclose(spectrum.flux, image[0], atol=span / 30000)
    hdu32 = fits.PrimaryHDU(image.astype(np.float64), header=header)
    hdu32.scale("int32", bscale=1e-3, bzero=7.0)
    data32 = fits_bytes(hdu32)
    assert read_lrs_image_fast(data32) is not None
    assert both(data32, "int32.fits").flux.dtype == np.float64


def test_bscale_bzero_float_image(shared_data: Path) -> None:
    """A float image with BSCALE/BZERO cards: physical = raw * BSCALE + BZERO, like astropy."""
    data = (shared_data / DR2_FILE).read_bytes()
    raw = read_spectrum(data, "raw.fits").flux
    data = _replace_card(data, "FILENAME", "BSCALE  =                  2.5")
    data = _replace_card(data, "AUTHOR", "BZERO   =                100.0")
    assert read_lrs_image_fast(data) is not None
    spectrum = both(data, "scaled.fits")
    assert np.array_equal(spectrum.flux, raw * np.float32(2.5) + np.float32(100.0))


def test_unscaled_integer_image_is_read_as_float64(shared_data: Path) -> None:
    header, image = _real_lrs(shared_data)
    data = fits_bytes(fits.PrimaryHDU(np.round(image * 100).astype(np.int32), header=header))
    assert read_lrs_image_fast(data) is None  # left to astropy
    assert both(data, "int.fits").flux.dtype == np.float64


def test_gzip_detected_by_content_not_name(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()
    plain = read_spectrum(data, "x.fits")
    for name in ("x.fits", "x.fits.gz", "x"):
        assert_identical(both(gzip.compress(data), name), plain)


def _lrs_table_hdus(shared_data: Path, *, per_pixel: bool) -> tuple[bytes, Spectrum]:
    """A DR8-style file built from a real DR2 one: empty primary + 'COADD' binary table."""
    source = read_spectrum((shared_data / DR2_FILE).read_bytes(), DR2_FILE)
    header, image = _real_lrs(shared_data)
    primary = fits.PrimaryHDU()
    for keyword in ("DESIG", "RA", "DEC", "CLASS", "SUBCLASS", "MJD", "SN_R"):
        primary.header[keyword] = header[keyword]
    primary.header["OBSID"] = 123456789
    n = image.shape[1]
    if per_pixel:
        columns = [
            fits.Column("WAVELENGTH", "D", array=source.wavelength_A),
            fits.Column("FLUX", "E", array=image[0]),
            fits.Column("IVAR", "E", array=image[1]),
        ]
    else:
        columns = [
            fits.Column("FLUX", f"{n}E", array=image[0][None, :]),
            fits.Column("IVAR", f"{n}E", array=image[1][None, :]),
            fits.Column("WAVELENGTH", f"{n}D", array=source.wavelength_A[None, :]),
            fits.Column("ANDMASK", f"{n}J", array=image[3][None, :].astype(np.int32)),
            fits.Column("ORMASK", f"{n}J", array=image[4][None, :].astype(np.int32)),
        ]
    table = fits.BinTableHDU.from_columns(columns, name="COADD")
    return fits_bytes(primary, table), source


@pytest.mark.parametrize("per_pixel", [False, True], ids=["one-row-of-arrays", "row-per-pixel"])
def test_lrs_binary_table_layout(shared_data: Path, per_pixel: bool) -> None:
    data, source = _lrs_table_hdus(shared_data, per_pixel=per_pixel)
    spectrum = both(data, "dr8.fits")
    assert (spectrum.format, spectrum.medium) == ("lamost-lrs-table", "vacuum")
    assert np.array_equal(spectrum.flux, source.flux)
    assert spectrum.flux.dtype == np.float32
    assert np.array_equal(spectrum.wavelength_A, source.wavelength_A)
    assert spectrum.meta.obsid == 123456789
    assert spectrum.meta.designation == source.meta.designation
    assert spectrum.meta.snr == source.meta.snr
    assert np.array_equal(preprocess(spectrum, DEFAULT), preprocess(source, DEFAULT))


# --- generic tables -------------------------------------------------------------------------------


def _ondrejov(shared_data: Path) -> Spectrum:
    return read_spectrum((shared_data / GAMMA_CAS).read_bytes(), GAMMA_CAS)


@pytest.mark.parametrize(
    ("header", "delimiter", "medium", "scale"),
    [
        ("wavelength_air,flux", ",", "air", 1.0),
        ("wave\tflux", "\t", "vacuum", 1.0),
        ("Lambda [nm];Flux", ";", "vacuum", 0.1),
        ("wave flux", " ", "vacuum", 1.0),
    ],
)
def test_generic_csv_round_trip(
    shared_data: Path, header: str, delimiter: str, medium: str, scale: float
) -> None:
    source = _ondrejov(shared_data)
    lines = ["# exported spectrum", header]
    lines += [
        f"{float(w) * scale!r}{delimiter}{float(f)!r}"
        for w, f in zip(source.wavelength_A, source.flux)
    ]
    spectrum = both("\n".join(lines).encode(), "spectrum.csv")
    assert (spectrum.format, spectrum.medium) == ("generic-csv", medium)
    if scale == 1.0:
        assert np.array_equal(spectrum.wavelength_A, source.wavelength_A)
    else:
        assert np.allclose(spectrum.wavelength_A, source.wavelength_A, rtol=1e-15)
    assert np.array_equal(spectrum.flux, source.flux)


def test_generic_csv_medium_from_comment_and_descending_order() -> None:
    lines = ["# wavelengths in air", "wave,flux"] + [f"{w},{w / 1000}" for w in range(7000, 6000, -1)]
    spectrum = both("\n".join(lines).encode(), "desc.csv")
    assert spectrum.medium == "air"
    assert spectrum.wavelength_A[0] == 6001 and spectrum.flux[0] == 6.001


@pytest.mark.parametrize(
    ("columns", "unit", "comment", "medium"),
    [
        (("WAVE", "FLUX"), "Angstrom", None, "vacuum"),
        (("lambda", "flux"), "nm", "Air wavelength", "air"),
        (("LOGLAM", "FLUX"), None, None, "vacuum"),
    ],
)
def test_generic_fits_table_round_trip(
    shared_data: Path, columns: tuple[str, str], unit: str | None, comment: str | None, medium: str
) -> None:
    source = _ondrejov(shared_data)
    wave_name, flux_name = columns
    if wave_name == "LOGLAM":
        stored = np.log10(source.wavelength_A)
    else:
        stored = source.wavelength_A / (10.0 if unit == "nm" else 1.0)
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(wave_name, "D", array=stored, unit=unit),
            fits.Column(flux_name, "D", array=source.flux),
        ]
    )
    if comment:
        table.header.comments["TTYPE1"] = comment
    spectrum = both(fits_bytes(fits.PrimaryHDU(), table), "generic.fits")
    assert (spectrum.format, spectrum.medium) == ("generic-table", medium)
    assert np.allclose(spectrum.wavelength_A, source.wavelength_A, rtol=1e-12)
    assert np.array_equal(spectrum.flux, source.flux)


def test_one_dimensional_image_extension(shared_data: Path) -> None:
    with fits.open(shared_data / "ondrejov/oe270005.fits") as hdul:
        header, flux = hdul[0].header.copy(), hdul[0].data.copy()
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = "HD 208905"
    data = fits_bytes(primary, fits.ImageHDU(flux, header=header))
    spectrum = both(data, "ext.fits")
    assert spectrum.format == "fits-image-1d"
    assert np.array_equal(spectrum.flux, flux)


# --- metadata helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hours", "expected"),
    [
        ("21:57:18.2", True, (21 + 57 / 60 + 18.2 / 3600) * 15),
        ("-00:30:00", False, -0.5),
        ("+61 17 39.7", False, 61 + 17 / 60 + 39.7 / 3600),
        (14.5, True, 14.5),
        ("156.02", True, 156.02),
        ("unknown", True, None),
        (True, False, None),
        (None, False, None),
    ],
)
def test_angle_parsing(value: object, hours: bool, expected: float | None) -> None:
    result = angle_deg(value, hours=hours)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_spectrum_is_not_shared_mutable_state(shared_data: Path) -> None:
    """Cached LRS wavelengths are shared between spectra, so they must be read-only."""
    data = (shared_data / DR7_FILE).read_bytes()
    first = read_spectrum(data, "a.fits")
    second = read_spectrum(data, "b.fits")
    assert not first.wavelength_A.flags.writeable
    first.flux[0] = -1.0  # flux is each spectrum's own copy
    assert second.flux[0] != -1.0


def test_fast_path_scans_every_keyword_the_shared_code_asks_for() -> None:
    """The fast path hands the shared WCS/medium/metadata code a dict of pre-scanned cards; a
    keyword that code asks for but the scan skipped would silently read as missing."""
    from oraculum.spectra.readers import lamost
    from oraculum.spectra.readers.loglinear import NeedRow, log_linear_solution
    from oraculum.spectra.readers.metadata import is_sdss_telescope, meta_from_header

    asked: set[str] = set()

    def get(keyword: str) -> object:
        asked.add(keyword)
        return {"CRVAL1": 3.5682}.get(keyword)  # force every fallback keyword to be asked

    with pytest.raises(NeedRow):
        log_linear_solution(get, 3909)
    lamost.lamost_medium(get)
    is_sdss_telescope(get)
    meta_from_header(get)
    assert asked <= {keyword for keyword, _ in lamost._FAST_FIELDS}
    assert {"CD1_1", "CDELT1", "CRPIX1", "CTYPE1", "COEFF0", "COEFF1", "VACUUM", "TELESCOP",
            "SNRR", "SN_R", "TMID", "JD", "OBJNAME", "Z"} <= asked  # fmt: skip


def test_bytes_like_input(shared_data: Path) -> None:
    data = (shared_data / DR7_FILE).read_bytes()
    expected = read_spectrum(data, "x.fits")
    for variant in (bytearray(data), memoryview(data)):
        assert_identical(read_spectrum(variant, "x.fits"), expected)
        assert_identical(read_spectrum_reference(variant, "x.fits"), expected)
