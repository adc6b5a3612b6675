"""Wavelength conventions: air and vacuum.

All wavelengths in oraculum are in ångström (Å). LAMOST publishes vacuum wavelengths; Ondřejov
CCD700 publishes air wavelengths. H-alpha is 6562.80 Å in air and 6564.61 Å in vacuum.

Conversions use the IAU standard formula of Morton (2000, ApJS 130, 403), eq. 8, for the
refractive index of standard air, as adopted by the SDSS and the VALD database:

    n(vacuum -> air) = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s^2) + 1.5998e-4 / (38.9 - s^2)
    s = 1e4 / lambda_vacuum  (lambda in Å, s in inverse micrometres)
    lambda_air = lambda_vacuum / n

and its inverse by N. Piskunov (VALD3 documentation), accurate to better than 1e-4 Å over
2000-100000 Å:

    n(air -> vacuum) = 1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s^2)
                         + 1.599740894897e-4 / (38.92568793293 - s^2)
    s = 1e4 / lambda_air
    lambda_vacuum = lambda_air * n
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Medium = Literal["air", "vacuum"]

#: Rest wavelengths (Å) of the lines the dashboard marks, in vacuum (from NIST ASD).
LINES_VACUUM_A: dict[str, float] = {
    "H-alpha": 6564.61,
    "[N II] 6548": 6549.86,
    "[N II] 6583": 6585.27,
    "He I 6678": 6679.99,
}


def vacuum_to_air(wavelength_vacuum_A: np.ndarray | float) -> np.ndarray:
    """Vacuum wavelength (Å) to air wavelength (Å), Morton (2000)."""
    lam = np.asarray(wavelength_vacuum_A, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return lam / n


def air_to_vacuum(wavelength_air_A: np.ndarray | float) -> np.ndarray:
    """Air wavelength (Å) to vacuum wavelength (Å), Piskunov's inverse of Morton (2000)."""
    lam = np.asarray(wavelength_air_A, dtype=np.float64)
    s2 = (1e4 / lam) ** 2
    n = (
        1.0
        + 8.336624212083e-5
        + 2.408926869968e-2 / (130.1065924522 - s2)
        + 1.599740894897e-4 / (38.92568793293 - s2)
    )
    return lam * n


def convert(wavelength_A: np.ndarray, source: Medium, target: Medium) -> np.ndarray:
    """Wavelengths (Å) given in medium ``source`` expressed in medium ``target``."""
    if source == target:
        return np.asarray(wavelength_A, dtype=np.float64)
    if source == "air":
        return air_to_vacuum(wavelength_A)
    return vacuum_to_air(wavelength_A)
