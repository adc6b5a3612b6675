"""The verbs that start long-running processes: ``operator``, ``serve api``, ``serve dashboard``
and ``demo`` (both servers and the loop on one machine).

The operator, the API and the dashboard are imported here only inside their verbs, so that
``oraculum --help`` or a Job's verb never imports kopf, FastAPI or Dash.
"""

from __future__ import annotations

import sys

import click

from oraculum.cli.context import Context, fail, pass_context

__all__ = ["COMMANDS"]


@click.command("operator")
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
        fail(f"cannot log in to Kubernetes: {error}")


@click.group()
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
        fail("--workers above 1 needs Redis (--redis-url or ORACULUM_REDIS_URL): in-process state is per process")
    try:
        serve_app(settings, host=host, port=port, workers=workers, log_level=log_level)
    except AuthConfigError as error:
        fail(f"invalid API tokens: {error}")


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


@click.command()
@click.option("--headless", is_flag=True,
              help="No person: a simulated oracle labels each batch through the API (as the dashboard would) with "
                   "the pool's true labels, until the stopping rule ends the experiment; then the performance table. "
                   "Exit status 0 when it finished.")
@click.option("--count", "-n", type=click.IntRange(min=10), default=None,
              help="Synthetic spectra in the pool (default: the manifests' 3,000).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the synthetic pool (default 0).")
@click.option("--source", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of real FITS files as the pool instead of synthetic spectra.")
@click.option("--min-snr", type=click.FloatRange(min=0), default=None, metavar="S/N",
              help="With --source: leave out spectra below this S/N (the header's, else a DER_SNR estimate "
                   "around the grid; default 5, 0 keeps all).")
@click.option("--mix-instruments", is_flag=True,
              help="With --source: put spectra of several resolutions (e.g. LAMOST low and medium resolution, "
                   "Ondřejov) on one grid; without it the demo refuses such a folder.")
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
def demo(ctx: Context, headless: bool, count: int | None, seed: int | None, source: str | None,
         min_snr: float | None, mix_instruments: bool, labels: str | None, iterations: int | None,
         experiment: str | None, manifests: str | None, api_port: int | None, port: int | None,
         dashboard: bool | None, timeout: float | None) -> None:
    """The whole loop on this machine: no cluster, no MinIO, no Redis.

    Starts the API (with the local runner) and the dashboard on localhost, applies the demo's
    manifests through the API (a PreprocessingJob making a synthetic LAMOST-format pool with rare
    emission-line and double-peak stars, and an ActiveLearningExperiment), follows them, and prints
    the dashboard's address and the token to sign in with. You label each batch in the browser and
    submit it; the next iteration trains on your labels. Everything lives in the store
    (./oraculum-data by default): Ctrl-C stops, and the same command again resumes.

    With --source DIR the pool is a folder of real spectra, read first: spectra of several
    resolutions are refused unless --mix-instruments, and those below --min-snr are left out.
    """
    from pathlib import Path

    from oraculum.demo.tour import DemoOptions, run_demo

    if ctx.settings.store.startswith("s3://"):
        fail("the demo runs on the embedded default: give --store a local folder, not an s3:// store")
    if source is not None and (count is not None or seed is not None):
        fail("--source replaces the synthetic pool: give either --source or --count/--seed")
    if source is None and (min_snr is not None or mix_instruments):
        fail("--min-snr and --mix-instruments check the spectra of --source: give --source DIR")
    options = DemoOptions(
        store=Path(ctx.settings.store), headless=headless, manifests=Path(manifests) if manifests else None,
        count=count, seed=seed, source=Path(source) if source else None, min_snr=min_snr,
        mix_instruments=mix_instruments, labels=labels, iterations=iterations,
        experiment=experiment, api_port=api_port, port=port, dashboard=dashboard, timeout=timeout,
    )
    sys.exit(run_demo(options, echo=click.echo))


#: The verbs of this module, as the group adds them (see :mod:`oraculum.cli.main`).
COMMANDS = [operator_command, serve, demo]
