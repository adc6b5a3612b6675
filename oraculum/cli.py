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


def _progress_bar(enabled: bool, description: str, unit: str = "file") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar driven by ``update(done, total)`` calls; a no-op when progress is off."""
    if not enabled:
        return (lambda done, total: None), (lambda: None)
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
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
        from oraculum.datasets import DatasetError
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

    from oraculum.preprocessing import PreprocessingParameters, WavelengthGrid

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

    SOURCE is a folder (searched recursively), a single file, or s3://bucket/prefix. Every file
    is either resampled onto the grid and stored, or listed in the dataset's rejected.jsonl
    with the reason. Re-running skips finished shards.
    """
    from oraculum.datasets import DatasetError
    from oraculum.ingest import environment_worker_count, run_preprocess
    from oraculum.store import StoreError

    params = _parameters(**grid)
    shard_spec = _parse_shard(shard)
    if shard_spec and shards and shards != shard_spec[1]:
        _fail(f"--shard {shard} and --shards {shards} disagree on the number of shards")
    update, close = _progress_bar(ctx.progress, f"preprocess {dataset}")
    try:
        report = run_preprocess(
            source, dataset, params, ctx.settings,
            patterns=patterns or None,
            shard=shard_spec[0] if shard_spec else None,
            shards=shard_spec[1] if shard_spec else shards,
            workers=workers or environment_worker_count(),
            progress=update,
        )
    except (DatasetError, StoreError, ValueError) as error:
        close()
        _fail(str(error))
    close()
    _print_report(report)


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


@main.group()
def dataset() -> None:
    """Inspect datasets in the store."""


@dataset.command("list")
@pass_context
def dataset_list(ctx: Context) -> None:
    """Names, sizes and grids of the finished datasets."""
    from oraculum.datasets import Dataset, list_datasets
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
    from oraculum.datasets import Dataset, DatasetError
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
    from oraculum import synth as synthmod
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
    from oraculum import synth as synthmod

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
@click.option("--count", "-n", type=click.IntRange(min=10), default=5000, show_default=True,
              help="Synthetic spectra to generate when no --source is given.")
@click.option("--source", type=click.Path(exists=True, file_okay=False), default=None,
              help="Ingest real FITS files from this folder instead of generating synthetic ones.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the CPUs available).")
@pass_context
def demo(ctx: Context, count: int, source: str | None, workers: int | None) -> None:
    """Run ingestion end to end on this machine, with no cluster, MinIO or Redis.

    Generates a synthetic LAMOST-format archive (or uses --source), preprocesses it into the
    dataset 'demo' in the local store, and prints what was stored and what was rejected.
    A second run reuses what the first one made.
    """
    from oraculum.datasets import Dataset
    from oraculum.ingest import environment_worker_count, run_preprocess
    from oraculum.preprocessing import PreprocessingParameters
    from oraculum.store import open_store

    store = open_store(settings=ctx.settings)
    if store.url.startswith("s3://"):
        _fail("the demo runs on the embedded default: use a local folder as --store")
    dataset_name = "demo"
    if source is None:
        from oraculum import synth as synthmod

        archive = f"archive/synthetic-{count}"
        source = f"{store.url}/{archive}"
        if not store.exists(f"{archive}/labels.csv"):
            click.echo(f"generating {count} synthetic LAMOST-format spectra in {source} (synthetic data)")
            update, close = _progress_bar(ctx.progress, "synth", unit="spectrum")
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                update(done, count)

            try:
                summary = synthmod.generate(store, archive, synthmod.SynthConfig(count=count), progress=step)
            finally:
                close()
            click.echo("  labels: " + json.dumps(summary.counts))
        else:
            click.echo(f"reusing the synthetic archive in {source}")
        dataset_name = f"demo-synthetic-{count}"
    else:
        dataset_name = "demo-" + "".join(c if c.isalnum() else "-" for c in source.lower()).strip("-")[-40:].strip("-")
    click.echo(f"preprocessing {source} into dataset {dataset_name!r} in {store.url}")
    update, close = _progress_bar(ctx.progress, f"preprocess {dataset_name}")
    try:
        report = run_preprocess(
            source, dataset_name, PreprocessingParameters(), ctx.settings,
            workers=workers or environment_worker_count(), progress=update,
        )
    finally:
        close()
    _print_report(report)
    ds = Dataset.open(store, dataset_name)
    first = next(ds.iter_batches(batch_size=5), None)
    if first is not None and first.flux is not None:
        click.echo("first spectra of the dataset (id, header class, flux range on the grid):")
        for sid, cls, row in zip(first.ids, first.meta["header_class"], first.flux):
            click.echo(f"  {sid}  {cls or '-'}  [{row.min():+.2f}, {row.max():+.2f}]")
    click.echo(f"inspect it with: oraculum --store {store.url} dataset info {dataset_name} --rejected")


if __name__ == "__main__":  # pragma: no cover
    main()
