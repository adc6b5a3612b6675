"""Progress reports of a running Job to the API gateway (``POST /api/v1/<kind>/<name>/progress``).

A Job's pod (or a subprocess of the local runner) learns from its environment where to report
and as whom; the Job builder (:mod:`oraculum.control.jobs`) puts these variables into every pod when the
installation has an API to report to:

``ORACULUM_API_URL``          the API gateway as the pod reaches it, e.g. http://oraculum-api.oraculum.svc:8000
``ORACULUM_PROGRESS_TOKEN``   a token with the role ``worker`` (from a Secret, never in the manifest)
``ORACULUM_PROGRESS_KIND``    ``ActiveLearningExperiment`` or ``PreprocessingJob``
``ORACULUM_PROGRESS_NAME``    the resource's metadata.name
``ORACULUM_PROGRESS_JOB``     the reporting Job, with the pod's completion index for Indexed Jobs

Reporting is a courtesy to the people watching, never a reason for the work to fail or slow down:

* :meth:`ProgressReporter.update` only records the latest state; a background thread sends it at
  most every ``interval`` seconds (the first report at once, the last one when the reporter
  closes), so a tight loop calling it costs a lock and a dict;
* an API that cannot be reached or answers an error is logged once as a warning and the work goes
  on; an answer that no retry can change (401, 403, 404, 422) stops the reports altogether;
* closing waits at most ``final_wait`` seconds for the last report;
* with any variable missing the reporter does nothing at all.

Only the standard library's HTTP client is used, so this module stays importable anywhere the core
is (a notebook, a worker image without the API's dependencies).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

__all__ = [
    "ENV_API_URL",
    "ENV_JOB",
    "ENV_KIND",
    "ENV_NAME",
    "ENV_TOKEN",
    "COLLECTIONS",
    "ProgressReporter",
    "ProgressTarget",
]

ENV_API_URL = "ORACULUM_API_URL"
ENV_TOKEN = "ORACULUM_PROGRESS_TOKEN"
ENV_KIND = "ORACULUM_PROGRESS_KIND"
ENV_NAME = "ORACULUM_PROGRESS_NAME"
ENV_JOB = "ORACULUM_PROGRESS_JOB"

#: The API's collection of each custom resource kind (the path segment after /api/v1/).
COLLECTIONS = {"ActiveLearningExperiment": "experiments", "PreprocessingJob": "preprocessingjobs"}
#: Longest step and message the API accepts (api/models.py ProgressIn); longer ones are cut.
MAX_STEP = 100
MAX_MESSAGE = 500
#: Answers after which a retry cannot succeed: wrong token, no such resource, a malformed report.
PERMANENT = frozenset({400, 401, 403, 404, 405, 410, 413, 422})


@dataclass(frozen=True)
class ProgressTarget:
    """Where a Job reports and as whom: the endpoint of its resource and a worker token."""

    api_url: str
    token: str
    kind: str
    name: str
    job: str

    def __post_init__(self) -> None:
        if self.kind not in COLLECTIONS:
            raise ValueError(f"{ENV_KIND}={self.kind!r}: use one of {', '.join(COLLECTIONS)}")
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"{ENV_API_URL}={self.api_url!r}: use an http:// or https:// URL of the API gateway")

    @property
    def endpoint(self) -> str:
        return f"{self.api_url.rstrip('/')}/api/v1/{COLLECTIONS[self.kind]}/{quote(self.name, safe='')}/progress"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ProgressTarget | None":
        """The target the environment describes, or None when it does not describe one.

        Missing variables mean "no reports" (a Job of an installation without an API, a person
        running the CLI by hand); inconsistent ones are logged as a warning and also mean no reports.
        """
        env = os.environ if environ is None else environ
        values = {key: (env.get(key) or "").strip() for key in (ENV_API_URL, ENV_TOKEN, ENV_KIND, ENV_NAME)}
        if not all(values.values()):
            missing = [key for key, value in values.items() if not value]
            if len(missing) < len(values):  # half configured: worth a word, it is probably a mistake
                log.info("no progress reports: %s not set", ", ".join(missing))
            return None
        try:
            return cls(api_url=values[ENV_API_URL], token=values[ENV_TOKEN], kind=values[ENV_KIND],
                       name=values[ENV_NAME], job=(env.get(ENV_JOB) or "").strip() or values[ENV_NAME])
        except ValueError as error:
            log.warning("no progress reports: %s", error)
            return None


class ProgressReporter:
    """Sends a Job's progress to the API from a background thread; see the module docstring.

    Use it as a context manager around the work::

        with ProgressReporter.from_env() as reporter:
            reporter.update(0, None, stage="preprocess", message="listing files")
            run_preprocess(..., progress=reporter.callback("preprocess", "files"))

    Leaving the block sends the last state; leaving it with an exception reports ``failed: ...``.
    """

    def __init__(self, target: ProgressTarget | None, *, interval: float = 2.0, timeout: float = 5.0,
                 final_wait: float = 5.0) -> None:
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.final_wait = final_wait
        self.sent = 0  # reports the API accepted (tests and logs read it)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._pending: dict[str, Any] | None = None
        self._latest: dict[str, Any] = {}
        self._last_sent = -math.inf
        self._failing = False  # the last attempt failed (warn once per run of failures)
        self._stopped = target is None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: float) -> "ProgressReporter":
        """A reporter for the target in the environment; a reporter that does nothing without one."""
        return cls(ProgressTarget.from_env(environ), **options)

    @property
    def enabled(self) -> bool:
        """Whether reports are still being sent (False when unconfigured or refused for good)."""
        return not self._stopped

    # -- what the work calls -----------------------------------------------------------------------

    def update(self, done: float | None, total: float | None, *, stage: str | None = None, unit: str | None = None,
               message: str | None = None) -> None:
        """Record the latest state; it is sent within ``interval`` seconds. Never blocks on the network.

        ``stage`` is the API's ``step`` (e.g. ``train``, ``score``); without a ``message`` one is
        made from the counts and ``unit`` ("1,024 / 4,096 spectra").
        """
        target = self.target
        if self._stopped or target is None:
            return
        if message is None and done is not None and total is not None:
            message = f"{_count(done)} / {_count(total)}" + (f" {unit}" if unit else "")
        report = {"job": target.job, "step": stage[:MAX_STEP] if stage else None,
                  "done": _amount(done), "total": _amount(total),
                  "message": message[:MAX_MESSAGE] if message else None}
        with self._lock:
            self._latest = report
            self._pending = report
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="oraculum-progress", daemon=True)
                self._thread.start()
        self._wake.set()

    def callback(self, stage: str, unit: str | None = None) -> Callable[[int, int], None]:
        """An ``update(done, total)`` function for the core's progress callbacks, for one stage."""

        def report(done: int, total: int) -> None:
            self.update(done, total, stage=stage, unit=unit)

        return report

    def close(self, message: str | None = None) -> None:
        """Send the last state (with ``message`` instead of its own, if given) and stop the thread.

        Waits at most ``final_wait`` seconds: an API that does not answer never holds the Job up longer.
        """
        if message is not None and not self._stopped and self._latest:
            with self._lock:
                self._pending = {**self._latest, "message": message[:MAX_MESSAGE]}
        self._closing.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.final_wait)
            if thread.is_alive():
                log.warning("the last progress report did not reach %s within %.0f s; going on without it",
                            self.target.api_url if self.target else "the API", self.final_wait)

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None) -> None:
        if error is None or (isinstance(error, SystemExit) and error.code in (None, 0)):
            self.close()
        else:
            self.close(f"failed: {_describe(error)}")

    # -- the sending thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing.is_set():  # throttle: at most one report per interval
                delay = self._last_sent + self.interval - time.monotonic()
                if delay > 0:
                    self._closing.wait(delay)  # the last report goes out at once
            with self._lock:
                report, self._pending = self._pending, None
                self._wake.clear()
            if report is not None and not self._stopped:
                self._last_sent = time.monotonic()
                self._send(report)
            if self._closing.is_set():
                with self._lock:
                    if self._pending is None or self._stopped:
                        return

    def _send(self, report: dict[str, Any]) -> None:
        assert self.target is not None
        body = json.dumps({key: value for key, value in report.items() if value is not None}).encode()
        request = urllib.request.Request(self.target.endpoint, data=body, method="POST", headers={
            "Authorization": f"Bearer {self.target.token}", "Content-Type": "application/json",
            "User-Agent": "oraculum-progress"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            detail = _detail(error)
            if error.code in PERMANENT:
                self._stopped = True
                log.warning("progress reports to %s stop: the API answered %s %s. The work goes on; check %s "
                            "(a worker token) and %s/%s", self.target.endpoint, error.code, detail, ENV_TOKEN,
                            ENV_KIND, ENV_NAME)
            else:
                self._failed(f"the API answered {error.code} {detail}")
        except (urllib.error.URLError, OSError, ValueError) as error:  # refused, unresolvable, timed out
            self._failed(f"cannot reach it: {getattr(error, 'reason', error)}")
        else:
            self.sent += 1
            if self._failing:
                log.info("progress reports reach %s again", self.target.api_url)
            self._failing = False

    def _failed(self, why: str) -> None:
        if not self._failing:
            log.warning("a progress report to %s failed (%s); the work goes on and later reports will be tried",
                        self.target.endpoint if self.target else "the API", why)
        self._failing = True


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _amount(value: float | None) -> float | None:
    """A count the API accepts (finite, non-negative), or None."""
    if value is None:
        return None
    number = float(value)
    return max(0.0, number) if math.isfinite(number) else None


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__  # click's exceptions: .message
    return " ".join(str(message).split())


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(2000).decode("utf-8", "replace")
        detail = json.loads(text).get("detail", text)
    except (OSError, ValueError, AttributeError):
        return error.reason if isinstance(error.reason, str) else ""
    return str(detail)[:300]
