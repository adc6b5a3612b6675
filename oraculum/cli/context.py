"""What every verb of the ``oraculum`` command line shares: the global options and the
:class:`Context` they decide, one way to fail with a clear message, and progress bars.

The global options (``--store``, ``--s3-endpoint``, ``--progress/--no-progress``, ``-v``) are
defined once, in :data:`GLOBAL_OPTIONS`, and :func:`add_global_options` puts them on the group and
on every verb, so they are accepted wherever a person types them: ``oraculum --store DIR
preprocess ...`` and ``oraculum preprocess ... --store DIR`` are the same command. A value given
after the verb overrides one given before it (``-v`` counts wherever it is given); either way it
flows into the one :class:`~oraculum.settings.Settings`, over the ``ORACULUM_*`` environment
variables.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from oraculum.settings import Settings, get_settings

__all__ = ["GLOBAL_OPTIONS", "Context", "add_global_options", "build_context", "fail", "pass_context", "progress_bar"]

#: Where the global options' given values are kept while the command line is parsed (``ctx.meta``
#: is shared by the group's context and every verb's).
_GIVEN = "oraculum.global-options"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The global options: (parameter declarations, keyword arguments of :class:`click.Option`).
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--store",), dict(
        metavar="URL",
        help="Object store for datasets and experiments: a folder (default ./oraculum-data) or "
        "s3://bucket[/prefix]. Env: ORACULUM_STORE.",
    )),
    (("--s3-endpoint",), dict(
        metavar="URL",
        help="S3/MinIO endpoint for s3:// stores and sources, e.g. http://minio:9000. Credentials "
        "come from ORACULUM_S3_ACCESS_KEY/ORACULUM_S3_SECRET_KEY or AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY. Env: ORACULUM_S3_ENDPOINT.",
    )),
    (("--progress/--no-progress",), dict(
        default=None, help="Show progress bars on stderr (default: only when stderr is a terminal).",
    )),
    (("-v", "--verbose"), dict(count=True, help="More log output (-v info, -vv debug).")),
)


class Context:
    """What the global options decided, handed to every verb."""

    def __init__(self, settings: Settings, progress: bool) -> None:
        self.settings = settings
        self.progress = progress


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> NoReturn:
    """Stop the verb with ``message`` (exit status 1, no traceback)."""
    raise click.ClickException(message)


def _given(ctx: click.Context) -> dict[str, Any]:
    given: dict[str, Any] = ctx.meta.setdefault(_GIVEN, {})
    return given


def _log_level(verbose: int) -> int:
    return logging.WARNING - 10 * min(verbose, 2)


def _decide(given: dict[str, Any]) -> Context:
    try:
        settings = get_settings(store=given.get("store"), s3_endpoint=given.get("s3_endpoint"))
    except Exception as error:  # pydantic validation of ORACULUM_* variables
        fail(f"invalid settings: {error}")
    progress = given.get("progress")
    return Context(settings, sys.stderr.isatty() if progress is None else bool(progress))


def build_context(ctx: click.Context) -> Context:
    """The group's part: logging and the :class:`Context` from the options given so far (before the
    verb); options given after the verb update it as they are parsed."""
    given = _given(ctx)
    logging.basicConfig(level=_log_level(given.get("verbose", 0)), format=_LOG_FORMAT)
    if given.get("verbose"):  # also when logging was configured before (an embedding program, a test)
        logging.getLogger().setLevel(_log_level(given["verbose"]))
    ctx.obj = _decide(given)
    return ctx.obj


def _record(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a global option's value when it was given; after the verb, update the Context."""
    if param.name is None or ctx.get_parameter_source(param.name) in (None, ParameterSource.DEFAULT):
        return value
    given = _given(ctx)
    given[param.name] = given.get(param.name, 0) + value if param.name == "verbose" else value
    decided = ctx.find_object(Context)
    if decided is not None:  # after the verb: the group's callback has made the Context already
        fresh = _decide(given)
        decided.settings, decided.progress = fresh.settings, fresh.progress
        if param.name == "verbose":
            logging.getLogger().setLevel(_log_level(given["verbose"]))
    return value


def add_global_options(command: click.Command) -> click.Command:
    """Put the global options on ``command`` and on each of its subcommands (once each)."""
    names = {param.name for param in command.params}
    for declarations, options in GLOBAL_OPTIONS:
        option = click.Option(list(declarations), expose_value=False, callback=_record, **options)
        if option.name not in names:
            command.params.append(option)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)
    return command


def progress_bar(enabled: bool, description: str, unit: str = "file", also: Callable[[int, int], None] | None = None,
                 ) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar driven by ``update(done, total)`` calls; a no-op when progress is off.

    ``also(done, total)`` hears every update too, bar or not (a Job's report to the API, see
    :mod:`oraculum.progress`)."""
    if not enabled:
        return (also or (lambda done, total: None)), (lambda: None)
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: a process with one thread may fork its workers
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
