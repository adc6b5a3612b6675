"""Synthetic stellar spectra in the real LAMOST low-resolution file format, with ground-truth labels.

Why this exists: the demo, the tests, the benchmarks (up to millions of spectra) and the
active-learning backtests all need data at any scale with known labels, and none of them may
depend on the real archive being present. Everything written here is marked synthetic
(``DATA_V = 'SYNTHETIC'``, ``AUTHOR = 'oraculum.spectra.synth'`` and a ``COMMENT`` card), so every figure
made from it can say so.

Labels (:data:`~oraculum.spectra.synth.star.CLASSES`): ``absorption`` (an ordinary star),
``emission`` (single-peak H-alpha emission), ``double-peak`` (Be-star-like disc profile) and
``bad`` (files the ingestion must reject). The targets of the active-learning loop are
``emission`` and ``double-peak``. All wavelengths are vacuum Å, like LAMOST's.

What this package offers (imported lazily):

- :mod:`~oraculum.spectra.synth.lines`: the line list (vacuum Å) and the profile shapes
  (pseudo-Voigt absorption, Gaussian and double-peaked emission, the weak metal-line forest);
- :mod:`~oraculum.spectra.synth.star`: one star, :func:`simulate` (continuum, lines, emission,
  noise and damage on any vacuum grid) with its drawn :class:`SpectrumParams`;
- :mod:`~oraculum.spectra.synth.lamost_fits`: the bytes of a LAMOST-layout FITS file
  (:func:`lamost_fits_bytes`, the LAMOST pixel grid :func:`lamost_wavelength_A`);
- :mod:`~oraculum.spectra.synth.generator`: :func:`generate`, a whole synthetic archive in the
  store with ``labels.csv`` and ``truth.csv``, deterministic from a :class:`SynthConfig`.

Inside the package, modules import the module that holds a name, not this door.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["generator", "lamost_fits", "lines", "star"],
    submod_attrs={
        "lines": ["double_peak_profile"],
        "star": ["BAD_KINDS", "CLASSES", "RESOLVING_POWER", "TARGET_CLASSES", "SimulatedSpectrum",
                 "SpectrumParams", "simulate", "spectral_type", "synth_spectrum"],
        "lamost_fits": ["LAMOST_CD1_1", "LAMOST_CRVAL1", "LAMOST_NPIX", "FileMeta", "designation",
                        "lamost_fits_bytes", "lamost_wavelength_A"],
        "generator": ["DEFAULT_FRACTIONS", "SynthConfig", "SynthSummary", "generate"],
    },
)
