"""The verbs that make and inspect data: ``preprocess``, ``fetch``, ``dataset list|info``, ``synth``
and ``upload``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from oraculum.cli.context import Context, fail, pass_context, progress_bar

__all__ = ["COMMANDS"]


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
        click.option(
            "--max-masked-fraction", type=float, default=0.2, show_default=True, metavar="F",
            help="Reject a spectrum when more than this fraction of its pixels inside the grid are bad "
            "(mask bits, no inverse variance, non-finite); fewer are interpolated across.",
        ),
        click.option(
            "--max-masked-gap", "max_masked_gap_a", type=float, default=10.0, show_default=True, metavar="Å",
            help="Reject a spectrum when one run of bad pixels leaves a wider hole than this inside the grid.",
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
            continuum_degree=values["continuum_degree"], max_masked_fraction=values["max_masked_fraction"],
            max_masked_gap_A=values["max_masked_gap_a"],
        )
    except ValidationError as error:
        problems = "; ".join(
            f"--{'-'.join(str(part) for part in issue['loc'] if part != 'grid').replace('_', '-') or 'grid'}: {issue['msg']}"
            for issue in error.errors()
        )
        fail(f"invalid preprocessing parameters: {problems}")


@click.command()
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
    help="Worker processes, one pool for all shards, fed chunks of files (default: the CPUs available, "
    "within the CPU quota; 1 with --shard, where the pods are the parallelism).",
)
@click.option(
    "--start-method", type=click.Choice(["auto", "fork", "forkserver", "spawn", "thread"]), default="auto",
    show_default=True,
    help="How the worker pool starts: auto forks this process when it runs one thread, else a fork server "
    "with the readers preloaded; thread runs the workers as threads.",
)
@click.option(
    "--glob", "patterns", multiple=True, metavar="PATTERN",
    help="File name pattern to include (repeatable), e.g. '*.fits.gz' or '*.csv'. Default: FITS "
    "files (*.fits, *.fit, *.fts, plain or .gz).",
)
@grid_options
@pass_context
def preprocess(ctx: Context, source: str, dataset: str, shard: str | None, shards: int | None,
               workers: int | None, start_method: str, patterns: tuple[str, ...], **grid: Any) -> None:
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
        fail(f"--shard {shard} and --shards {shards} disagree on the number of shards")
    with ProgressReporter.from_env() as reporter:  # a Job's report to the API; a no-op by hand
        reporter.update(None, None, stage="preprocess", message=f"listing {source}")
        update, close = progress_bar(ctx.progress, f"preprocess {dataset}",
                                      also=reporter.callback("preprocess", "files"))
        fetch_update, fetch_close = progress_bar(ctx.progress, "fetch", also=reporter.callback("fetch", "files"))
        try:
            source = _fetching_source(ctx, source, params.grid, patterns)
            report = run_preprocess(
                source, dataset, params, ctx.settings,
                patterns=patterns or None,
                shard=shard_spec[0] if shard_spec else None,
                shards=shard_spec[1] if shard_spec else shards,
                workers=workers or (1 if shard_spec else environment_worker_count()),
                start_method=start_method,
                progress=update,
                fetch_progress=fetch_update,
            )
        except (DatasetError, StoreError, ValueError) as error:
            fail(str(error))
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


@click.command()
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

    update, close = progress_bar(ctx.progress, "fetch")
    try:
        spec = recognise(source, ctx.settings)
        if spec is None:
            fail(f"{source!r} is not something to fetch: give a VOTable or URL list (file or http(s) URL), "
                  "an index page URL, or votable:/urls:/index: LOCATION")
        spec = override(spec, datalink=datalink, band=band, concurrency=concurrency, retries=retries, timeout=timeout)
        report = fetch_source(spec, ctx.settings, prefix=prefix, shard=_parse_shard(shard), progress=update)
    except (StoreError, ValueError) as error:
        close()
        fail(str(error))
    close()
    click.echo(f"{spec.canonical()} -> {prefix or spec.archive_prefix}")
    for line in report_lines(report):
        click.echo(line)
    if report.records and report.stored + report.count("duplicate") == 0:
        fail(f"nothing could be fetched: all {len(report.records)} downloads failed")


@click.group()
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
        fail(str(error))
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


@click.command()
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
    from oraculum.spectra.synth import generator as synthmod
    from oraculum.store import open_store

    config = _synth_config(count, seed, compress, fractions)
    update, close = progress_bar(ctx.progress, "synth", unit="spectrum")
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
    from oraculum.spectra.synth import generator as synthmod

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


@click.command()
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
        fail(str(error))
    with client:
        try:
            report = client.upload(list(paths), prefix, progress=ctx.progress, chunk_size=chunk_size, parallel=parallel)
        except ClientError as error:
            fail(f"upload stopped: {error} (run the same command again to continue)")
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())
    if not report.ok:
        sys.exit(1)


#: The verbs of this module, as the group adds them (see :mod:`oraculum.cli.main`).
COMMANDS = [preprocess, fetch, dataset, synth, upload]
