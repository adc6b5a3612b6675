"""The verbs about resources and what is generated from them: ``run`` (manifests on this machine,
as the operator would on a cluster), ``crds`` and ``docs`` (the generated reference pages).
"""

from __future__ import annotations

import sys

import click

from oraculum.cli.context import Context, fail, pass_context

__all__ = ["COMMANDS"]


@click.command()
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
        fail("no manifest found")
    try:
        runner = LocalRunner(open_store(settings=ctx.settings), ctx.settings, echo=click.echo,
                             max_parallel=max_parallel, poll_seconds=poll)
    except ValueError as error:
        fail(str(error))
    result = runner.run(resources, timeout=timeout, exit_when_waiting=exit_when_waiting)
    for label, phase in result.phases.items():
        click.echo(f"{label}: {phase}: {result.statuses[label].get('message', '')}")
    if any(phase == "Failed" for phase in result.phases.values()):
        sys.exit(1)


@click.command()
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
            fail(f"out of date in {out}/: {', '.join(stale)}; run `oraculum crds --out {out}`")
        click.echo(f"{out}/ is up to date")
        return
    for path in write_crds(out):
        click.echo(f"wrote {path}")


@click.command()
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
        fail(f"{base.resolve()} has no crds/ folder: run this in the repository checkout or give --root")
    try:
        pages = [*core_pages(base), *api_pages()]
    except (ValueError, OSError) as error:  # a results file or CRD that cannot be read: name it, no traceback
        fail(str(error))
    if check:
        stale = stale_pages(base, pages)
        if stale:
            fail(f"out of date: {', '.join(stale)}; run `{REGENERATE}` in the repository checkout and commit the result")
        click.echo(f"{len(pages)} generated pages are up to date")
        return
    changed = write_pages(base, pages)
    for path in changed:
        click.echo(f"wrote {path}")
    if not changed:
        click.echo(f"{len(pages)} generated pages were already up to date")


#: The verbs of this module, as the group adds them (see :mod:`oraculum.cli.main`).
COMMANDS = [run, crds, docs]
