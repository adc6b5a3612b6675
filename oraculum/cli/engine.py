"""The verbs an experiment's Jobs run, and a person can: ``iterate``, ``evaluate``, ``answer`` (the
simulated oracle) and ``backtest``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from oraculum.cli.context import Context, fail, pass_context, progress_bar

__all__ = ["COMMANDS"]


def _experiment(manifest: str, name: str | None) -> tuple[str, Any]:
    from oraculum.learning.experiments import ExperimentError, load_experiment
    from oraculum.manifests import ManifestError

    try:
        return load_experiment(manifest, name)
    except (ManifestError, ExperimentError) as error:
        fail(str(error))


@click.command()
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
    update, close = progress_bar(ctx.progress, f"score {spec.dataset}", unit="spectrum")
    with ProgressReporter.from_env() as reporter:  # a Job's report to the API; a no-op by hand

        def progress(stage: str, done: int | None, total: int | None) -> None:
            reporter.update(done, total, stage=stage, unit=STAGE_UNITS.get(stage))
            if stage == "score" and done is not None and total is not None:
                update(done, total)

        try:
            result = run_iteration(experiment, spec, iteration, open_store(settings=ctx.settings), ctx.settings, progress)
        except (ExperimentError, DatasetError, StoreError, ValueError) as error:
            fail(str(error))
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


@click.command()
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
    from oraculum.learning.evaluation import evaluate_iteration
    from oraculum.store import StoreError, open_store

    experiment, spec = _experiment(manifest, name)
    try:
        metrics = evaluate_iteration(experiment, spec, iteration, open_store(settings=ctx.settings))
    except (ExperimentError, StoreError, ValueError) as error:
        fail(str(error))
    if metrics.get("estimable"):
        click.echo(f"iteration {iteration}: " + _precision_line(metrics))
    else:
        click.echo(f"iteration {iteration}: " + "; ".join(metrics.get("notes", [])))
    click.echo(f"  labels so far: {json.dumps(metrics['labels_so_far'])} "
               f"({metrics['batch_labelled']}/{metrics['batch_size']} of this batch labelled)")


@click.command()
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
        fail(str(error))
    click.echo(f"iteration {iteration}: the simulated oracle labelled {summary.oracle} oracle and "
               f"{summary.estimation} estimation spectra ({summary.skipped} already labelled): "
               + json.dumps(summary.labels))


@click.command()
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
        fail("give either MANIFEST or --synthetic N (not both)")
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
        fail(str(error))
    click.echo(result.table)
    click.echo(f"wrote {result.curves_path}" + (f" and {result.figure_path}" if result.figure_path else ""))


#: The verbs of this module, as the group adds them (see :mod:`oraculum.cli.main`).
COMMANDS = [iterate, evaluate, answer, backtest]
