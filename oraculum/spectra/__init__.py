"""Spectra: from the bytes of an archive file to a row of a gridded dataset.

What this room offers (imported lazily, so ``import oraculum.spectra`` costs nothing):

- :mod:`~oraculum.spectra.wavelength`: air and vacuum wavelengths in Å (:func:`air_to_vacuum`,
  :func:`vacuum_to_air`, :data:`LINES_VACUUM_A`);
- :mod:`~oraculum.spectra.spectrum`: :class:`Spectrum` as read, and :class:`SpectrumRejected` with
  its :class:`RejectReason`;
- :mod:`~oraculum.spectra.readers`: :func:`read_spectrum` for LAMOST (LRS, MRS), Ondřejov and
  generic 1-D FITS;
- :mod:`~oraculum.spectra.preprocessing`: :class:`WavelengthGrid`, :class:`PreprocessingParameters`,
  :func:`preprocess` (resample, blur, normalise);
- :mod:`~oraculum.spectra.datasets`: :class:`Dataset`, HDF5 shards plus a JSON index in the store;
- :mod:`~oraculum.spectra.archive`: a :class:`Source` of files, its shards and spectrum ids;
- :mod:`~oraculum.spectra.synth`: synthetic LAMOST-format spectra with known labels, a package of
  its own: the line list and profiles (``lines``), one star's spectrum (``star``), the LAMOST FITS
  bytes (``lamost_fits``) and a whole labelled archive in the store (``generator``).

May import: :mod:`oraculum.store`, :mod:`oraculum.settings` and the scientific libraries; never the
other rooms.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["archive", "datasets", "preprocessing", "readers", "spectrum", "synth", "wavelength"],
    submod_attrs={
        "wavelength": ["LINES_VACUUM_A", "Medium", "air_to_vacuum", "vacuum_to_air"],
        "spectrum": ["RejectReason", "Spectrum", "SpectrumMeta", "SpectrumRejected"],
        "readers": ["read_spectrum"],
        "preprocessing": ["PreprocessingParameters", "WavelengthGrid", "preprocess"],
        "datasets": ["Dataset", "DatasetError", "list_datasets"],
        "archive": ["Source", "shard_bounds", "spectrum_id"],
    },
)
