"""The ``oraculum`` command line. Every Kubernetes Job runs one of these verbs; so can a person.

Settings come from flags (the global options, before or after the verb: see
:mod:`oraculum.cli.context`), then ``ORACULUM_*`` environment variables, then defaults (see
:mod:`oraculum.settings`). The group and its options live here; the verbs live by what they do in
:mod:`~oraculum.cli.data`, :mod:`~oraculum.cli.engine`, :mod:`~oraculum.cli.resources` and
:mod:`~oraculum.cli.servers`. ``python -m oraculum.cli.main`` runs it as the ``oraculum`` script does.
"""

from __future__ import annotations

from typing import Any

import click

from oraculum import __version__
from oraculum.cli import data, engine, resources, servers
from oraculum.cli.context import add_global_options, build_context

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

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every verb (and every verb of a verb group) takes the global options too."""
        super().add_command(add_global_options(cmd), name)


@add_global_options
@click.group(cls=OraculumGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="oraculum")
@click.pass_context
def main(ctx: click.Context) -> None:
    """oraculum: human-in-the-loop active deep learning on large spectra archives.

    Turn raw archive FITS files into a gridded dataset (preprocess), and inspect what came out
    (dataset). On one machine everything lives in a local folder; on a cluster in S3/MinIO.
    The global options (--store, --s3-endpoint, --progress, -v) go before or after the verb.
    """
    build_context(ctx)


for _module in (data, engine, resources, servers):
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
