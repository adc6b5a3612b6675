"""Air/vacuum conversion against published reference values."""

import numpy as np
import pytest

from oraculum.spectra.wavelength import air_to_vacuum, convert, vacuum_to_air


@pytest.mark.parametrize(
    ("air", "vacuum"),
    [
        (6562.80, 6564.61),  # H-alpha (NIST ASD)
        (4861.35, 4862.68),  # H-beta (NIST ASD: 4861.35 air, 4862.68 vacuum; 4862.71 in some tables)
        (6678.15, 6679.99),  # He I
    ],
)
def test_reference_lines(air: float, vacuum: float) -> None:
    assert float(air_to_vacuum(air)) == pytest.approx(vacuum, abs=0.035)
    assert float(vacuum_to_air(vacuum)) == pytest.approx(air, abs=0.035)


def test_round_trip_is_accurate_over_optical_range() -> None:
    wavelengths = np.linspace(3000.0, 11000.0, 1000)
    assert np.abs(air_to_vacuum(vacuum_to_air(wavelengths)) - wavelengths).max() < 1e-4
    assert np.array_equal(convert(wavelengths, "air", "air"), wavelengths)
    assert np.all(convert(wavelengths, "air", "vacuum") > wavelengths)
