"""The ``oraculum`` command line. Every Kubernetes Job runs one of these verbs; so can a person.

Settings come from flags, then ``ORACULUM_*`` environment variables, then defaults (see
:mod:`oraculum.settings`). The group and its options live here; the verbs live by what they do in
:mod:`~oraculum.cli.data`, :mod:`~oraculum.cli.engine`, :mod:`~oraculum.cli.resources` and
:mod:`~oraculum.cli.servers`. ``python -m oraculum.cli.main`` runs it as the ``oraculum`` script does.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from oraculum import __version__
from oraculum.cli import data, engine, resources, servers
from oraculum.cli.context import Context, fail
from oraculum.settings import get_settings

__all__ = ["main"]


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
        fail(f"invalid settings: {error}")
    ctx.obj = Context(settings, sys.stderr.isatty() if progress is None else progress)



for _module in (data, engine, resources, servers):
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
