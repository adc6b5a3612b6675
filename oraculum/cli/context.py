"""What every verb of the ``oraculum`` command line shares: the :class:`Context` the group's
options decided, one way to fail with a clear message, and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from oraculum.settings import Settings

__all__ = ["Context", "fail", "pass_context", "progress_bar"]


class Context:
    """What the group's options decided, handed to every verb."""

    def __init__(self, settings: Settings, progress: bool) -> None:
        self.settings = settings
        self.progress = progress


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> NoReturn:
    """Stop the verb with ``message`` (exit status 1, no traceback)."""
    raise click.ClickException(message)


def progress_bar(enabled: bool, description: str, unit: str = "file", also: Callable[[int, int], None] | None = None,
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
