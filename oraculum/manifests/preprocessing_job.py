"""The spec of a ``PreprocessingJob``: raw archive files -> a sharded dataset on a wavelength grid.

Where the files come from (an archive folder or bucket, synthetic spectra, or VO documents fetched
over HTTP first), the common wavelength grid (Å, vacuum or air), the preprocessing and how the
work is split into shards.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from oraculum.manifests.common import NAME_PATTERN, ResourcesSpec, SpecModel, cel_rule, cel_rules
from oraculum.spectra.preprocessing import Normalisation, PreprocessingParameters, WavelengthGrid

__all__ = [
    "FetchSpec",
    "GridSpec",
    "PreprocessingJobSpec",
    "SourceSpec",
    "SyntheticSourceSpec",
    "UrlListSourceSpec",
    "VOTableSourceSpec",
]


class SyntheticSourceSpec(SpecModel):
    """Synthetic LAMOST-format spectra with known labels (oraculum.spectra.synth), made on first use.

    For demos, end-to-end tests and backtests: a pool that needs no archive. The files are
    written once to ``archive/synthetic-<count>-s<seed>/`` in the store, with ``labels.csv``
    beside them (the simulated oracle's answers); figures from them come from synthetic data.
    """

    count: int = Field(ge=10, le=10_000_000, description="Number of synthetic spectrum files.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed: the same seed gives the same files.")


class _DocumentSpec(SpecModel):
    """A document oraculum reads first (a VOTable, a URL list): over HTTP, or from the store."""

    #: The field name in SourceSpec, for messages.
    field_name: ClassVar[str] = "document"

    url: str | None = Field(
        None, pattern=r"^https?://", min_length=8,
        description="Where to GET it, e.g. an SSAP query URL (...?REQUEST=queryData&POS=...) for a VOTable.",
    )
    key: str | None = Field(
        None, min_length=1, pattern=r"^[^/]",
        description="Object-store key of an uploaded copy (e.g. a VOTable saved from TOPCAT).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "_DocumentSpec":
        if (self.url is None) == (self.key is None):
            raise ValueError(f"give exactly one of {self.field_name}.url (fetched over HTTP) and "
                             f"{self.field_name}.key (in the store)")
        return self

    def location(self) -> str:
        """The LOCATION of a ``votable:``/``urls:`` source string."""
        return self.url if self.url is not None else f"store:{self.key}"


def _url_or_key_rule(name: str) -> ConfigDict:
    return ConfigDict(json_schema_extra=cel_rules(
        cel_rule("has(self.url) != has(self.key)", f"give exactly one of {name}.url and {name}.key")))


class VOTableSourceSpec(_DocumentSpec):
    """A VOTable whose rows point at spectra: an SSAP/TAP query URL, or a table in the store.

    The access-reference column is found by UCD meta.ref.url, utype ssa:Access.Reference or name
    access_url/accref. When the table declares a DataLink service, each row is resolved through it.
    """

    model_config = _url_or_key_rule("votable")
    field_name: ClassVar[str] = "votable"

    datalink: Literal["auto", "this", "cutout", "none"] = Field(
        "auto",
        description="auto: through the table's DataLink service when it declares one, taking a SODA cutout "
        "around the grid when offered, else #this; this: always the #this product; cutout: require a SODA "
        "cutout; none: ignore DataLink, download the access references.",
    )
    cutout_margin: float = Field(
        50.0, ge=0, le=5000,
        description="Å added on both sides of the grid for SODA cutouts (covers air/vacuum and blur wings).",
    )


class UrlListSourceSpec(_DocumentSpec):
    """A text file with one spectrum URL per line (# starts a comment)."""

    model_config = _url_or_key_rule("urls")
    field_name: ClassVar[str] = "urls"


class FetchSpec(SpecModel):
    """How files are downloaded for votable, urls and httpIndex sources (per pod)."""

    concurrency: int = Field(8, ge=1, le=256, description="Downloads at once per pod.")
    retries: int = Field(
        4, ge=0, le=20,
        description="Extra attempts after a 5xx answer, timeout or dropped connection (exponential backoff); "
        "other 4xx answers are final.",
    )
    timeout_seconds: float = Field(60.0, ge=1, le=3600, description="Connect/read timeout per request, seconds.")


_SOURCES = ("url", "synthetic", "votable", "urls", "httpIndex")
_FETCH_ONLY_DOWNLOADS = "source.fetch applies to votable, urls and httpIndex sources only"


class SourceSpec(SpecModel):
    """Where the raw files are: an archive folder or bucket (url), synthetic spectra, or files
    fetched over HTTP first (votable, urls, httpIndex) into archive/vo/ in the store."""

    model_config = ConfigDict(json_schema_extra=cel_rules(
        cel_rule(" + ".join(f"(has(self.{name}) ? 1 : 0)" for name in _SOURCES) + " == 1",
                 "give exactly one of url, synthetic, votable, urls and httpIndex"),
    ))

    url: str | None = Field(
        None,
        description="A folder, or s3://bucket/prefix on the cluster's object store (searched recursively).",
        min_length=1,
    )
    synthetic: SyntheticSourceSpec | None = Field(
        None, description="Generate synthetic LAMOST-format spectra instead of reading an archive."
    )
    votable: VOTableSourceSpec | None = Field(
        None, description="Download the spectra a VOTable points at (SSAP/TAP answer, TOPCAT table, DataLink)."
    )
    urls: UrlListSourceSpec | None = Field(None, description="Download the spectra of a URL list.")
    http_index: str | None = Field(
        None, pattern=r"^https?://", min_length=8,
        description="Download every file matching patterns below this HTML index page, recursively.",
    )
    fetch: FetchSpec | None = Field(
        None, description="Download concurrency, retries and timeout (votable, urls, httpIndex only)."
    )
    patterns: list[str] = Field(
        default_factory=lambda: ["*.fits", "*.fit", "*.fts", "*.fits.gz", "*.fit.gz", "*.fts.gz"],
        description="File name patterns to include (shell globs on the file name; for httpIndex, the links followed).",
    )
    format: Literal["auto"] = Field(
        "auto", description="File format; detected per file (LAMOST LRS/MRS, Ondřejov CCD700, generic)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "SourceSpec":
        given = [self.url, self.synthetic, self.votable, self.urls, self.http_index]
        if sum(value is not None for value in given) != 1:
            raise ValueError(
                "give exactly one of source.url (an archive), source.synthetic (generated spectra), "
                "source.votable, source.urls or source.httpIndex (fetched over HTTP first)"
            )
        if self.fetch is not None and (self.url is not None or self.synthetic is not None):
            raise ValueError(_FETCH_ONLY_DOWNLOADS)
        return self

    def location(self, grid: "GridSpec | None" = None) -> str:
        """The SOURCE argument of ``oraculum preprocess``: the url, ``synthetic:COUNT?seed=S``, or a
        ``votable:``/``urls:``/``index:`` string (see :mod:`oraculum.vo.sources`) that carries the
        fetch settings and, for SODA cutouts, the band of ``grid`` plus the margin."""
        if self.synthetic is not None:
            return f"synthetic:{self.synthetic.count}?seed={self.synthetic.seed}"
        if self.url is not None:
            return self.url
        from oraculum.vo.spec import fetch_spec_string

        fetch = self.fetch or FetchSpec()
        if self.votable is not None:
            return fetch_spec_string(
                "votable", self.votable.location(), fetch.concurrency, fetch.retries, fetch.timeout_seconds,
                datalink=self.votable.datalink, grid=grid, margin_A=self.votable.cutout_margin,
            )
        if self.urls is not None:
            return fetch_spec_string("urls", self.urls.location(), fetch.concurrency, fetch.retries, fetch.timeout_seconds)
        assert self.http_index is not None
        return fetch_spec_string("index", self.http_index, fetch.concurrency, fetch.retries, fetch.timeout_seconds,
                                 patterns=tuple(self.patterns))


class GridSpec(SpecModel):
    """The common wavelength grid (defaults: Škoda et al. 2020)."""

    model_config = ConfigDict(json_schema_extra=cel_rules(
        cel_rule("self.end > self.start", "grid end must be greater than start")))

    start: float = Field(6519.0, gt=0, description="First grid wavelength in Å.")
    end: float = Field(6732.0, gt=0, description="Last grid wavelength in Å.")
    points: int = Field(140, ge=2, le=100_000, description="Number of grid points.")
    spacing: Literal["linear", "log"] = Field("linear", description="Equal steps in wavelength or in log wavelength.")
    medium: Literal["vacuum", "air"] = Field("vacuum", description="Grid wavelengths in vacuum or air.")

    @model_validator(mode="after")
    def _start_before_end(self) -> "GridSpec":
        if self.end <= self.start:
            raise ValueError(f"grid end ({self.end} Å) must be greater than start ({self.start} Å)")
        return self


class PreprocessingJobSpec(SpecModel):
    """Turn raw archive files into a sharded, gridded dataset."""

    # SourceSpec's validator, as a rule here (reported at .source.fetch): the source keeps its one rule
    model_config = ConfigDict(json_schema_extra=cel_rules(cel_rule(
        "!has(self.source.fetch) || !(has(self.source.url) || has(self.source.synthetic))",
        _FETCH_ONLY_DOWNLOADS, field_path=".source.fetch")))

    source: SourceSpec = Field(description="Where the raw files are.")
    grid: GridSpec = Field(default_factory=GridSpec, description="Wavelength grid to resample onto.")
    blur_sigma_px: float | None = Field(
        None, ge=0, le=1000,
        description="Gaussian blur sigma in native pixels before resampling (7 matches Ondřejov CCD700 to LAMOST).",
    )
    normalisation: Normalisation = Field(
        "minmax", description="minmax to [-1, 1] (published method), continuum, or none."
    )
    continuum_degree: int = Field(2, ge=0, le=10, description="Continuum polynomial degree.")
    max_masked_fraction: float = Field(
        0.2, ge=0, le=1,
        description="Reject a spectrum when more than this fraction of its native pixels inside the grid are bad "
        "(survey mask bits, no inverse variance, non-finite flux); fewer are interpolated across.",
    )
    max_masked_gap_A: float = Field(
        10.0, gt=0, le=100_000,
        description="Reject a spectrum when one run of bad pixels leaves a hole wider than this (Å) inside the grid: "
        "interpolation across it could erase a whole line.",
    )
    dataset: str = Field(pattern=NAME_PATTERN, description="Name of the dataset to write.")
    shards: int = Field(1, ge=1, le=100_000, description="Shards: pods of the Indexed Job, and HDF5 parts of the dataset.")
    parallelism: int = Field(1, ge=1, le=10_000, description="Pods running at once.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute per pod.")
    suspend: bool = Field(False, description="Pause: running pods stop, finished shards stay; clear to resume.")

    def parameters(self) -> PreprocessingParameters:
        """The core's preprocessing parameters for this spec."""
        return PreprocessingParameters(
            grid=WavelengthGrid(**self.grid.model_dump()),
            blur_sigma_px=self.blur_sigma_px,
            normalisation=self.normalisation,
            continuum_degree=self.continuum_degree,
            max_masked_fraction=self.max_masked_fraction,
            max_masked_gap_A=self.max_masked_gap_A,
        )
