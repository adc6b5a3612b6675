"""The ``oraculum`` command line. Every Kubernetes Job runs one of these verbs; so can a person.

Settings come from flags, then ``ORACULUM_*`` environment variables, then defaults (see
:mod:`oraculum.settings`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from oraculum import __version__
from oraculum.settings import Settings, get_settings

log = logging.getLogger("oraculum")


class Context:
    """What the group's options decided, handed to every verb."""

    def __init__(self, settings: Settings, progress: bool) -> None:
        self.settings = settings
        self.progress = progress


pass_context = click.make_pass_decorator(Context)


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _progress_bar(enabled: bool, description: str, unit: str = "file", also: Callable[[int, int], None] | None = None,
                  ) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar driven by ``update(done, total)`` calls; a no-op when progress is off.

    ``also(done, total)`` hears every update too, bar or not (a Job's report to the API, see
    :mod:`oraculum.progress`)."""
    if not enabled:
        return (also or (lambda done, total: None)), (lambda: None)
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if also:
            also(done, total)
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, file=sys.stderr)
        bar["bar"].total = total
        bar["bar"].n = done
        bar["bar"].refresh()

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return update, close


class OraculumGroup(click.Group):
    """Turns the core's "you asked for something impossible" errors into clean CLI errors.

    Each of these exceptions carries a message that names the file, field or value and how to
    fix it; a traceback would only hide that message.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from oraculum.spectra.datasets import DatasetError
        from oraculum.manifests import ManifestError
        from oraculum.store import StoreError

        try:
            return super().invoke(ctx)
        except (DatasetError, ManifestError, StoreError) as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=OraculumGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="oraculum")
@click.option(
    "--store",
    metavar="URL",
    help="Object store for datasets and experiments: a folder (default ./oraculum-data) or "
    "s3://bucket[/prefix]. Env: ORACULUM_STORE.",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="S3/MinIO endpoint for s3:// stores and sources, e.g. http://minio:9000. Credentials "
    "come from ORACULUM_S3_ACCESS_KEY/ORACULUM_S3_SECRET_KEY or AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY. Env: ORACULUM_S3_ENDPOINT.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress bars on stderr (default: only when stderr is a terminal).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, store: str | None, s3_endpoint: str | None, progress: bool | None, verbose: int) -> None:
    """oraculum: human-in-the-loop active deep learning on large spectra archives.

    Turn raw archive FITS files into a gridded dataset (preprocess), and inspect what came out
    (dataset). On one machine everything lives in a local folder; on a cluster in S3/MinIO.
    """
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = get_settings(store=store, s3_endpoint=s3_endpoint)
    except Exception as error:  # pydantic validation of ORACULUM_* variables
        _fail(f"invalid settings: {error}")
    ctx.obj = Context(settings, sys.stderr.isatty() if progress is None else progress)


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not I/N, e.g. 0/8", param_hint="--shard") from None
    if count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"{value!r}: need 0 <= I < N", param_hint="--shard")
    return index, count


def grid_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The preprocessing parameters as options; defaults reproduce Škoda et al. (2020)."""
    options = [
        click.option("--start", type=float, default=6519.0, show_default=True, help="First grid wavelength, Å."),
        click.option("--end", type=float, default=6732.0, show_default=True, help="Last grid wavelength, Å."),
        click.option("--points", type=int, default=140, show_default=True, help="Number of grid points."),
        click.option(
            "--spacing", type=click.Choice(["linear", "log"]), default="linear", show_default=True,
            help="Grid points equally spaced in wavelength or in log wavelength.",
        ),
        click.option(
            "--medium", type=click.Choice(["vacuum", "air"]), default="vacuum", show_default=True,
            help="Grid wavelengths in vacuum (LAMOST) or air (most ground-based archives); "
            "spectra are converted to it.",
        ),
        click.option(
            "--blur-sigma", type=float, default=None, metavar="PX",
            help="Gaussian blur sigma in native pixels before resampling, to match a "
            "high-resolution archive to a low-resolution pool (7 for Ondřejov to LAMOST).",
        ),
        click.option(
            "--normalisation", type=click.Choice(["minmax", "continuum", "none"]), default="minmax",
            show_default=True,
            help="minmax: each spectrum to [-1, 1] (published method); continuum: divide by a "
            "sigma-clipped polynomial continuum; none: archive flux units.",
        ),
        click.option(
            "--continuum-degree", type=int, default=2, show_default=True,
            help="Polynomial degree of the continuum (with --normalisation continuum).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _parameters(**values: Any) -> Any:
    from pydantic import ValidationError

    from oraculum.spectra.preprocessing import PreprocessingParameters, WavelengthGrid

    try:
        grid = WavelengthGrid(
            start=values["start"], end=values["end"], points=values["points"],
            spacing=values["spacing"], medium=values["medium"],
        )
        return PreprocessingParameters(
            grid=grid, blur_sigma_px=values["blur_sigma"], normalisation=values["normalisation"],
            continuum_degree=values["continuum_degree"],
        )
    except ValidationError as error:
        problems = "; ".join(
            f"--{'-'.join(str(part) for part in issue['loc'] if part != 'grid').replace('_', '-') or 'grid'}: {issue['msg']}"
            for issue in error.errors()
        )
        _fail(f"invalid preprocessing parameters: {problems}")


@main.command()
@click.argument("source", metavar="SOURCE")
@click.option("--dataset", "-d", required=True, help="Name of the dataset to write (lowercase, digits, '-').")
@click.option(
    "--shard", metavar="I/N", default=None,
    help="Process only shard I of N (0-based), as one pod of an Indexed Job does; the index is "
    "written by whichever shard finishes last. Default: all shards, here.",
)
@click.option(
    "--shards", type=click.IntRange(min=1), default=None,
    help="Number of shards when processing all of them (default: one per 20,000 files).",
)
@click.option(
    "--workers", "-j", type=click.IntRange(min=1), default=None,
    help="Worker processes for the shards (default: the CPUs available).",
)
@click.option(
    "--glob", "patterns", multiple=True, metavar="PATTERN",
    help="File name pattern to include (repeatable), e.g. '*.fits.gz' or '*.csv'. Default: FITS "
    "files (*.fits, *.fit, *.fts, plain or .gz).",
)
@grid_options
@pass_context
def preprocess(ctx: Context, source: str, dataset: str, shard: str | None, shards: int | None,
               workers: int | None, patterns: tuple[str, ...], **grid: Any) -> None:
    """Preprocess raw spectra in SOURCE into a sharded dataset.

    SOURCE is a folder (searched recursively), a single file, s3://bucket/prefix, or
    synthetic:COUNT?seed=S (synthetic LAMOST-format spectra with labels, made once in the store
    under archive/synthetic-COUNT-sS/). Every file is either resampled onto the grid and stored,
    or listed in the dataset's rejected.jsonl with the reason. Re-running skips finished shards.

    SOURCE may also be fetched first (see `oraculum fetch`): a VOTable (file, URL such as an
    SSAP query, or votable:store:KEY), a URL list, or an HTML index page; each shard downloads
    its share into archive/vo/ in the store, then preprocesses it. SODA cutouts cover the grid
    plus 50 Å.
    """
    from oraculum.spectra.datasets import DatasetError
    from oraculum.ingest.pipeline import environment_worker_count, run_preprocess
    from oraculum.progress import ProgressReporter
    from oraculum.store import StoreError

    params = _parameters(**grid)
    shard_spec = _parse_shard(shard)
    if shard_spec and shards and shards != shard_spec[1]:
        _fail(f"--shard {shard} and --shards {shards} disagree on the number of shards")
    with ProgressReporter.from_env() as reporter:  # a Job's report to the API; a no-op by hand
        reporter.update(None, None, stage="preprocess", message=f"listing {source}")
        update, close = _progress_bar(ctx.progress, f"preprocess {dataset}",
                                      also=reporter.callback("preprocess", "files"))
        fetch_update, fetch_close = _progress_bar(ctx.progress, "fetch", also=reporter.callback("fetch", "files"))
        try:
            source = _fetching_source(ctx, source, params.grid, patterns)
            report = run_preprocess(
                source, dataset, params, ctx.settings,
                patterns=patterns or None,
                shard=shard_spec[0] if shard_spec else None,
                shards=shard_spec[1] if shard_spec else shards,
                workers=workers or environment_worker_count(),
                progress=update,
                fetch_progress=fetch_update,
            )
        except (DatasetError, StoreError, ValueError) as error:
            _fail(str(error))
        finally:
            fetch_close()
            close()
        files = sum(r.info.count + r.info.rejected for r in report.shards)
        reporter.update(files, files, stage="preprocess", message=(
            f"{sum(r.info.count for r in report.shards):,} spectra stored, {sum(r.info.rejected for r in report.shards):,} "
            f"files rejected; " + ("index written" if report.index is not None else "other shards still to run")))
    _print_report(report)


def _fetching_source(ctx: Context, source: str, grid: Any, patterns: tuple[str, ...]) -> str:
    """A VO source (votable:, urls:, index:, an http(s) URL, a local VOTable or URL list) as its
    canonical string, with the grid's band for SODA cutouts and --glob for index pages; any
    other source unchanged."""
    from dataclasses import replace

    from oraculum.vo.sources import recognise
    from oraculum.vo.spec import banded

    fetching = recognise(source, ctx.settings)
    if fetching is None:
        return source
    if patterns and fetching.kind == "index":
        fetching = replace(fetching, globs=tuple(patterns))
    return banded(fetching, grid).canonical()


def _print_report(report: Any) -> None:
    processed = sum(r.info.count for r in report.shards)
    rejected = sum(r.info.rejected for r in report.shards)
    skipped = sum(1 for r in report.shards if r.skipped)
    rate = (processed + rejected) / report.seconds if report.seconds > 0 else float("nan")
    click.echo(
        f"dataset {report.dataset}: {len(report.shards)} shard(s) run"
        + (f" ({skipped} already done)" if skipped else "")
        + f", {processed} spectra stored, {rejected} files rejected, {report.seconds:.1f} s"
        + (f" ({rate:,.0f} files/s)" if skipped < len(report.shards) else "")
    )
    for reason, count in sorted(report.reasons.items()):
        click.echo(f"  rejected {reason}: {count}")
    if report.index is not None:
        index = report.index
        click.echo(
            f"index written: {index.count} spectra in {len(index.shards)} shard(s), "
            f"{index.rejected} rejected, grid {index.grid.start:g}-{index.grid.end:g} Å "
            f"({index.grid.points} points, {index.grid.medium}), checksum {index.checksum[:12]}"
        )
    else:
        click.echo("index not written yet: other shards are still to be processed")


@main.command()
@click.argument("source", metavar="SOURCE")
@click.option("--to", "prefix", metavar="PREFIX", default=None,
              help="Store prefix for the files. Default: archive/vo/<kind>-<name>-<digest>, where "
              "`oraculum preprocess SOURCE` finds them without downloading again.")
@click.option("--shard", metavar="I/N", default=None,
              help="Fetch only shard I of N (0-based): a contiguous slice of the rows, as one pod does.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None, help="Downloads at once (default 8).")
@click.option("--retries", type=click.IntRange(0, 20), default=None,
              help="Extra attempts after 5xx, timeouts, dropped connections (default 4, exponential backoff).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=None, help="Connect/read timeout, s (default 60).")
@click.option("--datalink", type=click.Choice(["auto", "this", "cutout", "none"]), default=None,
              help="VOTables: resolve rows through DataLink (auto: when declared), take #this or a SODA cutout.")
@click.option("--band", metavar="LO-HI", default=None,
              help="VOTables: SODA cutout range in Å (vacuum), e.g. 6469-6782; without it, #this is fetched.")
@pass_context
def fetch(ctx: Context, source: str, prefix: str | None, shard: str | None, concurrency: int | None,
          retries: int | None, timeout: float | None, datalink: str | None, band: str | None) -> None:
    """Download the spectra SOURCE points at into the store, resumably.

    SOURCE is a VOTable (a file, e.g. saved from TOPCAT; an http(s) URL such as an SSAP query;
    votable:store:KEY for one in the store), a URL list (one URL per line), or an HTML index
    page (every FITS file below it). Failures are retried (5xx, timeouts) or reported (4xx) and
    never stop the rest; a second run fetches only what is missing. Exit status 0 unless
    nothing at all could be fetched.
    """
    from oraculum.store import StoreError
    from oraculum.vo.fetch import report_lines
    from oraculum.vo.sources import fetch_source, recognise
    from oraculum.vo.spec import override

    update, close = _progress_bar(ctx.progress, "fetch")
    try:
        spec = recognise(source, ctx.settings)
        if spec is None:
            _fail(f"{source!r} is not something to fetch: give a VOTable or URL list (file or http(s) URL), "
                  "an index page URL, or votable:/urls:/index: LOCATION")
        spec = override(spec, datalink=datalink, band=band, concurrency=concurrency, retries=retries, timeout=timeout)
        report = fetch_source(spec, ctx.settings, prefix=prefix, shard=_parse_shard(shard), progress=update)
    except (StoreError, ValueError) as error:
        close()
        _fail(str(error))
    close()
    click.echo(f"{spec.canonical()} -> {prefix or spec.archive_prefix}")
    for line in report_lines(report):
        click.echo(line)
    if report.records and report.stored + report.count("duplicate") == 0:
        _fail(f"nothing could be fetched: all {len(report.records)} downloads failed")


@main.group()
def dataset() -> None:
    """Inspect datasets in the store."""


@dataset.command("list")
@pass_context
def dataset_list(ctx: Context) -> None:
    """Names, sizes and grids of the finished datasets."""
    from oraculum.spectra.datasets import Dataset, list_datasets
    from oraculum.store import open_store

    store = open_store(settings=ctx.settings)
    names = list_datasets(store)
    if not names:
        click.echo(f"no datasets in {store.url}")
    for name in names:
        ds = Dataset.open(store, name)
        g = ds.grid
        click.echo(f"{name}\t{len(ds)} spectra\t{ds.index.rejected} rejected\t{g.start:g}-{g.end:g} Å x {g.points}")


@dataset.command("info")
@click.argument("name")
@click.option("--rejected", is_flag=True, help="Also list every rejected file with its reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole index as JSON.")
@pass_context
def dataset_info(ctx: Context, name: str, rejected: bool, as_json: bool) -> None:
    """Summary of dataset NAME: counts, grid, source, shards, rejections."""
    from oraculum.spectra.datasets import Dataset, DatasetError
    from oraculum.store import open_store

    try:
        ds = Dataset.open(open_store(settings=ctx.settings), name)
    except DatasetError as error:
        _fail(str(error))
    if as_json:
        click.echo(ds.index.model_dump_json(indent=2))
        return
    index = ds.index
    click.echo(f"dataset {name}: {index.count} spectra, {index.rejected} rejected, {len(index.shards)} shard(s)")
    click.echo(f"  grid: {index.grid.model_dump()}")
    click.echo(f"  parameters: blur_sigma_px={index.parameters.blur_sigma_px} normalisation={index.parameters.normalisation}")
    click.echo(f"  source: {index.source.url} ({index.source.files} files)")
    click.echo(f"  checksum: {index.checksum}")
    lines = ds.rejected()
    reasons: dict[str, int] = {}
    for line in lines:
        reasons[line["reason"]] = reasons.get(line["reason"], 0) + 1
    for reason, count in sorted(reasons.items()):
        click.echo(f"  rejected {reason}: {count}")
    if rejected:
        for line in lines:
            click.echo(f"  {line['key']}: {line['reason']}: {line['message']}")


@main.command()
@click.argument("out", metavar="OUT")
@click.option("--count", "-n", type=click.IntRange(min=1), required=True, help="Number of spectra to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same files.")
@click.option("--compress", is_flag=True, help="Write gzip-compressed .fits.gz files.")
@click.option(
    "--fraction", "fractions", multiple=True, metavar="LABEL=F",
    help="Share of a label (repeatable), e.g. emission=0.05; labels: absorption, emission, "
    "double-peak, bad. The rest keep their default shares, rescaled to sum to 1.",
)
@pass_context
def synth(ctx: Context, out: str, count: int, seed: int, compress: bool, fractions: tuple[str, ...]) -> None:
    """Write COUNT synthetic LAMOST-format spectra with labels to OUT (folder or s3:// prefix).

    Files are LAMOST DR2-like low-resolution FITS (5 x 3909, log-linear WCS, vacuum) with
    absorption-line stars, single- and double-peak H-alpha emitters and some bad files;
    OUT/labels.csv holds the true label of each. For tests, demos and backtests: figures
    from these files come from synthetic data.
    """
    from oraculum.spectra import synth as synthmod
    from oraculum.store import open_store

    config = _synth_config(count, seed, compress, fractions)
    update, close = _progress_bar(ctx.progress, "synth", unit="spectrum")
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        update(done, count)

    try:
        summary = synthmod.generate(open_store(out, ctx.settings), "", config, progress=step)
    finally:
        close()
    click.echo(f"wrote {count} synthetic spectra to {out}: " + json.dumps(summary.counts))


def _synth_config(count: int, seed: int, compress: bool, fractions: tuple[str, ...]) -> Any:
    from oraculum.spectra import synth as synthmod

    shares = dict(synthmod.SynthConfig(count=1).fractions)
    given: dict[str, float] = {}
    for item in fractions:
        label, _, value = item.partition("=")
        if label not in shares:
            raise click.BadParameter(f"unknown label {label!r}; use one of {', '.join(shares)}", param_hint="--fraction")
        try:
            given[label] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not LABEL=NUMBER", param_hint="--fraction") from None
    if given:
        rest = 1.0 - sum(given.values())
        others = {k: v for k, v in shares.items() if k not in given}
        scale = rest / sum(others.values()) if others and sum(others.values()) > 0 else 0.0
        shares = {**{k: v * scale for k, v in others.items()}, **given}
    try:
        return synthmod.SynthConfig(count=count, seed=seed, fractions=shares, compress=compress)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--fraction") from None


@main.command()
@click.option("--headless", is_flag=True,
              help="No person: a simulated oracle labels each batch through the API (as the dashboard would) with "
                   "the pool's true labels, until the stopping rule ends the experiment; then the performance table. "
                   "Exit status 0 when it finished.")
@click.option("--count", "-n", type=click.IntRange(min=10), default=None,
              help="Synthetic spectra in the pool (default: the manifests' 3,000).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the synthetic pool (default 0).")
@click.option("--source", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of real FITS files as the pool instead of synthetic spectra.")
@click.option("--labels", default=None, metavar="CSV",
              help="True labels of the pool (columns id or filename, and label) for --headless with --source "
                   "(default: labels.csv in the --source folder).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Iterations at most (the experiment's stopping.maxIterations; default: the manifests' 5).")
@click.option("--experiment", default=None, metavar="NAME",
              help="Name of the experiment (default: demo-emission, with -headless for --headless).")
@click.option("--manifests", type=click.Path(dir_okay=False), default=None,
              help="The demo's manifests: one PreprocessingJob and one ActiveLearningExperiment "
                   "(default: the built-in ones, also in examples/demo.yaml).")
@click.option("--api-port", type=click.IntRange(1, 65535), default=None,
              help="Port of the API on 127.0.0.1 (default 8000, or a free one).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port of the dashboard on 127.0.0.1 (default 8050, or a free one).")
@click.option("--dashboard/--no-dashboard", default=None,
              help="Start the dashboard (default: yes, except with --headless).")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Give up (exit status 1) when the experiment has not finished after this long; run again to resume.")
@pass_context
def demo(ctx: Context, headless: bool, count: int | None, seed: int | None, source: str | None, labels: str | None,
         iterations: int | None, experiment: str | None, manifests: str | None, api_port: int | None,
         port: int | None, dashboard: bool | None, timeout: float | None) -> None:
    """The whole loop on this machine: no cluster, no MinIO, no Redis.

    Starts the API (with the local runner) and the dashboard on localhost, applies the demo's
    manifests through the API (a PreprocessingJob making a synthetic LAMOST-format pool with rare
    emission-line and double-peak stars, and an ActiveLearningExperiment), follows them, and prints
    the dashboard's address and the token to sign in with. You label each batch in the browser and
    submit it; the next iteration trains on your labels. Everything lives in the store
    (./oraculum-data by default): Ctrl-C stops, and the same command again resumes.
    """
    from pathlib import Path

    from oraculum.demo.tour import DemoOptions, run_demo

    if ctx.settings.store.startswith("s3://"):
        _fail("the demo runs on the embedded default: give --store a local folder, not an s3:// store")
    if source is not None and (count is not None or seed is not None):
        _fail("--source replaces the synthetic pool: give either --source or --count/--seed")
    options = DemoOptions(
        store=Path(ctx.settings.store), headless=headless, manifests=Path(manifests) if manifests else None,
        count=count, seed=seed, source=Path(source) if source else None, labels=labels, iterations=iterations,
        experiment=experiment, api_port=api_port, port=port, dashboard=dashboard, timeout=timeout,
    )
    sys.exit(run_demo(options, echo=click.echo))


def _experiment(manifest: str, name: str | None) -> tuple[str, Any]:
    from oraculum.learning.experiments import ExperimentError, load_experiment
    from oraculum.manifests import ManifestError

    try:
        return load_experiment(manifest, name)
    except (ManifestError, ExperimentError) as error:
        _fail(str(error))
    raise AssertionError  # unreachable: _fail raises


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--iteration", "-k", type=click.IntRange(min=0), required=True,
              help="Iteration to run (0 = the first); iteration K-1 must have run and been labelled.")
@click.option("--name", default=None,
              help="metadata.name of the ActiveLearningExperiment, when the file holds several.")
@pass_context
def iterate(ctx: Context, manifest: str, iteration: int, name: str | None) -> None:
    """Run one iteration of the experiment in MANIFEST (what an iteration Job runs).

    Evaluates iteration K-1 from its labels, trains the network on every label so far, scores the
    whole pool, and writes the oracle batch, estimation sample, scores, candidates (CSV and
    VOTable), a map of the batch and run.json under experiments/NAME/iterations/K/ in the store.
    Re-running an iteration with the same store contents gives the same batch.
    """
    from oraculum.spectra.datasets import DatasetError
    from oraculum.learning.experiments import ExperimentError
    from oraculum.learning.iteration import STAGE_UNITS, run_iteration
    from oraculum.progress import ProgressReporter
    from oraculum.store import StoreError, open_store

    experiment, spec = _experiment(manifest, name)
    update, close = _progress_bar(ctx.progress, f"score {spec.dataset}", unit="spectrum")
    with ProgressReporter.from_env() as reporter:  # a Job's report to the API; a no-op by hand

        def progress(stage: str, done: int | None, total: int | None) -> None:
            reporter.update(done, total, stage=stage, unit=STAGE_UNITS.get(stage))
            if stage == "score" and done is not None and total is not None:
                update(done, total)

        try:
            result = run_iteration(experiment, spec, iteration, open_store(settings=ctx.settings), ctx.settings, progress)
        except (ExperimentError, DatasetError, StoreError, ValueError) as error:
            _fail(str(error))
        finally:
            close()
        reporter.update(1, 1, stage="finished", message=f"iteration {iteration}: {result.counts['oracle_batch']} spectra "
                        f"for the oracle, {result.counts['estimation']} for the estimate")
    if result.previous_metrics and result.previous_metrics.get("estimable"):
        click.echo(f"iteration {iteration - 1}: " + _precision_line(result.previous_metrics))
    counts = result.counts
    if result.cold_start:
        click.echo(f"iteration {iteration}: no labels yet, random batch of {counts['oracle_batch']} spectra "
                   f"from {counts['pool']} (no model)")
    else:
        click.echo(f"iteration {iteration}: trained on {counts['training']} labels, scored {counts['pool']} spectra, "
                   f"{counts['candidates']} predicted targets; batch of {counts['oracle_batch']} for the oracle "
                   f"+ {counts['estimation']} for the estimate ({spec.acquisition.strategy})")
    for note in result.notes:
        click.echo(f"  note: {note}")
    durations = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result.durations.items() if seconds >= 0.05)
    click.echo(f"  {durations}")
    click.echo(f"  artifacts: {result.keys['run'].rsplit('/', 1)[0]}/")


def _precision_line(metrics: dict[str, Any]) -> str:
    tp = metrics["target_precision"]
    if tp["estimate"] is None:
        return "precision not estimable yet (" + "; ".join(metrics.get("notes") or ["no labelled estimation spectrum"]) + ")"
    conf = metrics["confidence"]
    count = metrics["estimated_target_count"]
    line = (f"precision {tp['estimate']:.3f} [{tp['low']:.3f}, {tp['high']:.3f}] ({conf:.0%}, {tp['method']}, "
            f"{tp['successes']}/{tp['trials']}{', census' if tp['census'] else ''}); "
            f"{metrics['predicted_target_count']} predicted targets")
    if count.get("estimate") is not None:
        line += f", about {count['estimate']:.0f} true [{count['low']:.0f}, {count['high']:.0f}]"
    return line


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--iteration", "-k", type=click.IntRange(min=0), required=True, help="Iteration to evaluate.")
@click.option("--name", default=None,
              help="metadata.name of the ActiveLearningExperiment, when the file holds several.")
@pass_context
def evaluate(ctx: Context, manifest: str, iteration: int, name: str | None) -> None:
    """Estimate iteration K's performance from the labels of its estimation sample.

    Writes experiments/NAME/iterations/K/metrics.json: precision of the predicted targets with a
    confidence interval, predicted and estimated true target counts, labels so far per class.
    """
    from oraculum.learning.experiments import ExperimentError
    from oraculum.learning.iteration import evaluate_iteration
    from oraculum.store import StoreError, open_store

    experiment, spec = _experiment(manifest, name)
    try:
        metrics = evaluate_iteration(experiment, spec, iteration, open_store(settings=ctx.settings))
    except (ExperimentError, StoreError, ValueError) as error:
        _fail(str(error))
    if metrics.get("estimable"):
        click.echo(f"iteration {iteration}: " + _precision_line(metrics))
    else:
        click.echo(f"iteration {iteration}: " + "; ".join(metrics.get("notes", [])))
    click.echo(f"  labels so far: {json.dumps(metrics['labels_so_far'])} "
               f"({metrics['batch_labelled']}/{metrics['batch_size']} of this batch labelled)")


@main.command()
@click.argument("manifest", required=False, type=click.Path(dir_okay=False))
@click.option("--strategies", default="entropy,random", show_default=True,
              help="Comma-separated acquisition strategies to compare: entropy, margin, least-confidence, bald, random.")
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=5, show_default=True,
              help="Iterations per strategy (iteration 0 is a random cold start unless the spec has initial labels).")
@click.option("--synthetic", type=click.IntRange(min=100), default=None, metavar="N",
              help="Generate N synthetic spectra with rare targets, preprocess them, and backtest on them with a "
              "built-in spec (no MANIFEST needed).")
@click.option("--out", type=click.Path(file_okay=False), default="backtest-results", show_default=True,
              help="Folder for curves.json and curves.png.")
@click.option("--name", default=None,
              help="metadata.name of the ActiveLearningExperiment in MANIFEST, when it holds several; also the "
              "prefix of the backtest experiments (default: the experiment's name, or 'backtest-synthetic').")
@click.option("--labels", default=None,
              help="Label file (CSV id/filename,label; local path or store key) for the simulated oracle; default: "
              "the manifest's oracle.labels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the synthetic pool and the built-in spec (with --synthetic).")
@click.option("--preset", type=click.Choice(["tiny", "podsztavek2020"]), default="tiny", show_default=True,
              help="Network preset of the built-in spec (with --synthetic).")
@click.option("--precision", "goal_precision", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Report the labels each strategy needs to reach this real precision on the pool...")
@click.option("--recall", "goal_recall", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="...together with this real recall.")
@pass_context
def backtest(ctx: Context, manifest: str | None, strategies: str, iterations: int, synthetic: int | None, out: str,
             name: str | None, labels: str | None, seed: int, preset: str, goal_precision: float,
             goal_recall: float) -> None:
    """Learning curves of several strategies with a simulated oracle: does uncertainty sampling
    beat random labelling here, and do the intervals cover the truth?

    Runs N iterations per strategy on the same pool with the same seeds, the oracle answering
    from known labels, and writes OUT/curves.json and OUT/curves.png. With --synthetic N it needs
    nothing else; its figures come from synthetic data and say so.
    """
    from oraculum.learning.backtest import default_spec, prepare_synthetic, run_backtest
    from oraculum.spectra.datasets import DatasetError
    from oraculum.learning.experiments import ExperimentError
    from oraculum.store import StoreError, open_store

    if (manifest is None) == (synthetic is None):
        _fail("give either MANIFEST or --synthetic N (not both)")
    store = open_store(settings=ctx.settings)
    try:
        if synthetic is not None:
            dataset, labels_key = prepare_synthetic(store, ctx.settings, synthetic, seed, echo=click.echo)
            spec = default_spec(dataset, labels or labels_key, preset=preset, seed=seed)
            prefix = name or "backtest-synthetic"
        else:
            experiment, spec = _experiment(manifest, name)  # type: ignore[arg-type]
            prefix = f"{experiment}-backtest"
        click.echo(f"backtest of {', '.join(strategies.split(','))} on dataset {spec.dataset!r}, {iterations} iterations each"
                   + (" (synthetic data)" if synthetic is not None else ""))
        result = run_backtest(
            spec, [s.strip() for s in strategies.split(",") if s.strip()], iterations, store, ctx.settings, out,
            name_prefix=prefix, labels=labels, synthetic=synthetic is not None, precision=goal_precision,
            recall=goal_recall, echo=click.echo,
        )
    except (ExperimentError, DatasetError, StoreError, ValueError) as error:
        _fail(str(error))
    click.echo(result.table)
    click.echo(f"wrote {result.curves_path}" + (f" and {result.figure_path}" if result.figure_path else ""))


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="crds", show_default=True,
              help="Folder to write the CustomResourceDefinition YAML files to.")
@click.option("--check", is_flag=True,
              help="Write nothing; fail if the files in --out differ from what the models generate.")
def crds(out: str, check: bool) -> None:
    """Write the CRDs of PreprocessingJob and ActiveLearningExperiment, generated from the spec
    models (descriptions, defaults, enums and bounds included), to OUT."""
    from pathlib import Path

    from oraculum.control.crds import CRD_KINDS, crd_file_name, render, write_crds

    if check:
        stale = [crd_file_name(kind) for kind in CRD_KINDS
                 if not (Path(out) / crd_file_name(kind)).is_file()
                 or (Path(out) / crd_file_name(kind)).read_text(encoding="utf-8") != render(kind)]
        if stale:
            _fail(f"out of date in {out}/: {', '.join(stale)}; run `oraculum crds --out {out}`")
        click.echo(f"{out}/ is up to date")
        return
    for path in write_crds(out):
        click.echo(f"wrote {path}")


@main.command()
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=".", show_default=True,
              help="The repository checkout (with crds/, benchmarks/results/ and docs/).")
@click.option("--check", is_flag=True, help="Write nothing; fail if a generated page differs from what its source gives.")
def docs(root: str, check: bool) -> None:
    """Write the generated reference pages: docs/reference/manifests.md (from crds/),
    docs/reference/openapi.json and api.md (from the API application), docs/benchmarks.md
    (from benchmarks/results/*.json) and examples/demo.yaml (from oraculum/demo/manifests.py)."""
    from pathlib import Path

    from oraculum.api.reference import api_pages
    from oraculum.docs.page import REGENERATE
    from oraculum.docs.pages import core_pages, stale_pages, write_pages

    base = Path(root)
    if not (base / "crds").is_dir():
        _fail(f"{base.resolve()} has no crds/ folder: run this in the repository checkout or give --root")
    try:
        pages = [*core_pages(base), *api_pages()]
    except (ValueError, OSError) as error:  # a results file or CRD that cannot be read: name it, no traceback
        _fail(str(error))
    if check:
        stale = stale_pages(base, pages)
        if stale:
            _fail(f"out of date: {', '.join(stale)}; run `{REGENERATE}` in the repository checkout and commit the result")
        click.echo(f"{len(pages)} generated pages are up to date")
        return
    changed = write_pages(base, pages)
    for path in changed:
        click.echo(f"wrote {path}")
    if not changed:
        click.echo(f"{len(pages)} generated pages were already up to date")


@main.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--max-parallel", "-j", type=click.IntRange(min=1), default=None,
              help="Subprocesses (pods) running at once (default: the CPUs available).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop after this many seconds (run again to resume).")
@click.option("--exit-when-waiting", is_flag=True,
              help="Return when only a person can make progress (a human oracle's batch), instead of waiting.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=0.5, show_default=True, metavar="SECONDS",
              help="How often to look at the subprocesses and the store.")
@pass_context
def run(ctx: Context, manifests: tuple[str, ...], max_parallel: int | None, timeout: float | None,
        exit_when_waiting: bool, poll: float) -> None:
    """Run MANIFESTS (files or folders of YAML) on this machine, as the operator would on a cluster.

    The same reconcile functions decide; each Job runs as a subprocess of the same `oraculum` verb
    its pod would run, against the local store. PreprocessingJobs make their datasets first;
    an experiment with a simulated oracle runs to the end unattended, one with a human oracle waits
    for the labels to be submitted. Progress and Kubernetes-style events are printed; running the
    same command again resumes. Exit status 1 if a resource Failed.
    """
    from oraculum.control.runner import LocalRunner, load_all
    from oraculum.store import open_store

    resources = load_all(manifests)
    if not resources:
        _fail("no manifest found")
    try:
        runner = LocalRunner(open_store(settings=ctx.settings), ctx.settings, echo=click.echo,
                             max_parallel=max_parallel, poll_seconds=poll)
    except ValueError as error:
        _fail(str(error))
    result = runner.run(resources, timeout=timeout, exit_when_waiting=exit_when_waiting)
    for label, phase in result.phases.items():
        click.echo(f"{label}: {phase}: {result.statuses[label].get('message', '')}")
    if any(phase == "Failed" for phase in result.phases.values()):
        sys.exit(1)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--iteration", "-k", type=click.IntRange(min=0), required=True, help="Iteration whose batch to label.")
@click.option("--name", default=None, help="metadata.name of the ActiveLearningExperiment, when the file holds several.")
@click.option("--labels", default=None,
              help="Label file (CSV id/filename,label; local path or store key); default: the manifest's oracle.labels.")
@pass_context
def answer(ctx: Context, manifest: str, iteration: int, name: str | None, labels: str | None) -> None:
    """The simulated oracle: label iteration K's batch from a file of known labels.

    Writes the same durable label events the API writes for a person (oracle and estimation
    items; unknown spectra are answered unsure). Idempotent: items already labelled are skipped.
    This is the Job a simulated-oracle experiment runs after each iteration.
    """
    from oraculum.learning.experiments import ExperimentError
    from oraculum.learning.oracle import SimulatedOracle
    from oraculum.store import StoreError, open_store

    experiment, spec = _experiment(manifest, name)
    store = open_store(settings=ctx.settings)
    try:
        summary = SimulatedOracle.from_spec(spec, store, labels).answer(store, experiment, iteration)
    except (ExperimentError, StoreError, ValueError) as error:
        _fail(str(error))
    click.echo(f"iteration {iteration}: the simulated oracle labelled {summary.oracle} oracle and "
               f"{summary.estimation} estimation spectra ({summary.skipped} already labelled): "
               + json.dumps(summary.labels))


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--to", "prefix", required=True, metavar="PREFIX",
              help="Archive prefix in the store: files go to archive/PREFIX/<path relative to the folder given>.")
@click.option("--api", "api_url", envvar="ORACULUM_API_URL", default=None, metavar="URL",
              help="The API gateway, e.g. http://oraculum-api:8000. Env: ORACULUM_API_URL (default http://127.0.0.1:8000).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="File holding an admin token. Default: env ORACULUM_TOKEN, else the file in ORACULUM_TOKEN_FILE.")
@click.option("--chunk-size", type=click.IntRange(min=1024), default=None, metavar="BYTES",
              help="Bytes per request (default and maximum: what the server allows, its body limit).")
@click.option("--parallel", "-j", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Files sent at once (a tree of small files is bound by round trips, not bandwidth).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def upload(ctx: Context, paths: tuple[str, ...], prefix: str, api_url: str | None, token_file: str | None,
           chunk_size: int | None, parallel: int, as_json: bool) -> None:
    """Upload files and folders (recursively) through the API into archive/PREFIX/ of the store.

    Each file is hashed (SHA-256) and sent in chunks, each checked on arrival; the server verifies
    the whole file before it stores it atomically. Files whose content is already under the
    prefix are reported as duplicates and not sent. Run the same command again after an
    interruption: only the missing bytes are sent. Exit status 1 if a file failed.
    """
    from oraculum.client import Client, ClientError

    try:
        client = Client(api_url, token_file=token_file)
    except ValueError as error:
        _fail(str(error))
    with client:
        try:
            report = client.upload(list(paths), prefix, progress=ctx.progress, chunk_size=chunk_size, parallel=parallel)
        except ClientError as error:
            _fail(f"upload stopped: {error} (run the same command again to continue)")
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


@main.command("operator")
@click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
              help="Watch only this namespace (repeatable). Default: every namespace.")
@click.option("--liveness", "liveness", default=None, metavar="URL",
              help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@pass_context
def operator_command(ctx: Context, namespaces: tuple[str, ...], liveness: str | None) -> None:
    """Run the Kubernetes operator: reconcile PreprocessingJobs and ActiveLearningExperiments.

    Uses the in-cluster service account, or the kubeconfig outside a cluster. Child Jobs are built
    from ORACULUM_JOB_* settings (image, settings ConfigMap, S3 Secret; see `oraculum.control.jobs.JobConfig`);
    the store settings (ORACULUM_STORE, ...) must match the ones the Jobs get.
    """
    import kopf

    from oraculum.operator.main import run_operator

    try:
        run_operator(ctx.settings, namespaces=list(namespaces), liveness=liveness)
    except kopf.LoginError as error:
        _fail(f"cannot log in to Kubernetes: {error}")


@main.group()
def serve() -> None:
    """Run a server: the API gateway or the oracle's dashboard."""


@serve.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (more than one needs ORACULUM_REDIS_URL: live state is then shared in Redis).")
@click.option("--redis-url", default=None, metavar="URL",
              help="Redis for live state (locks, progress, events), e.g. redis://redis:6379/0. Env: ORACULUM_REDIS_URL.")
@click.option("--backend", type=click.Choice(["auto", "local", "kubernetes"]), default=None,
              help="Where experiments live: kubernetes custom resources, the local runner's registry, or auto "
                   "(kubernetes inside a cluster). Env: ORACULUM_API_BACKEND.")
@click.option("--run-jobs/--no-run-jobs", default=None,
              help="Local backend: also run the Jobs of resources created through the API (the local runner). "
                   "Env: ORACULUM_API_RUN_JOBS.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Server log level.")
@pass_context
def serve_api(ctx: Context, host: str, port: int, workers: int, redis_url: str | None, backend: str | None,
              run_jobs: bool | None, log_level: str) -> None:
    """Serve the API gateway with uvicorn: OpenAPI at /docs, everything under /api/v1, probes at
    /healthz and /readyz, Prometheus metrics at /metrics.

    Tokens come from ORACULUM_AUTH_FILE (a YAML/JSON list of {name, role, token}) and/or
    ORACULUM_API_TOKENS ("name:role:token,..."); roles viewer, oracle, admin, worker. Serve under an
    ingress path prefix with ORACULUM_ROOT_PATH.
    """
    from oraculum.api.app import serve as serve_app
    from oraculum.api.auth import AuthConfigError

    updates = {key: value for key, value in {"redis_url": redis_url, "api_backend": backend,
                                            "api_run_jobs": run_jobs}.items() if value is not None}
    settings = ctx.settings.model_copy(update=updates)
    if workers > 1 and not settings.redis_url:
        _fail("--workers above 1 needs Redis (--redis-url or ORACULUM_REDIS_URL): in-process state is per process")
    try:
        serve_app(settings, host=host, port=port, workers=workers, log_level=log_level)
    except AuthConfigError as error:
        _fail(f"invalid API tokens: {error}")



@serve.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a container).")
@click.option("--port", type=click.IntRange(1, 65535), default=8050, show_default=True, help="TCP port to listen on.")
@click.option("--api-url", default=None, metavar="URL",
              help="The API gateway as this server reaches it, e.g. http://oraculum-api:8000. "
                   "Env: ORACULUM_API_URL (default http://127.0.0.1:8000).")
@click.option("--root-path", default=None, metavar="PREFIX",
              help="Path prefix behind an ingress, e.g. /oraculum (requests arrive with it). Env: ORACULUM_ROOT_PATH.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="gunicorn worker processes (the dashboard keeps no state of its own: any number works).")
@click.option("--threads", type=click.IntRange(min=2), default=32, show_default=True,
              help="Threads per worker; each open page holds one for its live event stream.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Server log level (debug also logs every request).")
def serve_dashboard(host: str, port: int, api_url: str | None, root_path: str | None, workers: int, threads: int,
                    log_level: str) -> None:
    """Serve the oracle's dashboard with gunicorn: experiments, labelling (keyboard first), the batch
    map and performance, all through the API (ORACULUM_API_URL). Oracles sign in with their API
    token; health probe at /healthz, readiness (the API answers) at <prefix>readyz.
    """
    from oraculum.dashboard.app import serve as serve_app
    from oraculum.dashboard.config import DashboardSettings

    updates = {key: value for key, value in {"api_url": api_url, "root_path": root_path}.items() if value is not None}
    settings = DashboardSettings(**updates)
    serve_app(settings, host=host, port=port, workers=workers, threads=threads, log_level=log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
