"""Real parts for the dashboard's browser tests and benchmark: the API (`oraculum serve api`, with
the local runner) on a copy of the synthetic world (tests/support/api_world.py: a real experiment batch
made by the real engine), the dashboard (`oraculum serve dashboard`, gunicorn) under an ingress
path prefix, and Debian's headless Chromium driven by selenium.

Chromium and its driver come from Debian (`scripts/test-services` installs them; `make test` runs
it); nothing is downloaded. :func:`find_chromium` says why when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api_fixtures import NAMES, ROOT, TOKEN_LIST, TOKENS, ApiProcess, free_port, wait_port

PREFIX = "/oraculum"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars"]


def find_chromium() -> tuple[str | None, str | None, str]:
    """(chromium, chromedriver, why not) from the system (Debian packages chromium, chromium-driver)."""
    browser = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                    if p and os.path.exists(p)), None)
    driver = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
                   if p and os.path.exists(p)), None)
    why = ""
    if browser is None or driver is None:
        why = ("headless Chromium is not installed (Debian packages chromium and chromium-driver: run "
               "scripts/test-services, which `make test` does)")
    return browser, driver, why


def site_root(world: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder for one browser test module, with a pristine copy of the world in ``store/``;
    skips the module (saying why) when Chromium is not installed."""
    _, _, why = find_chromium()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(world, root / "store")
    return root


def start_api(store: Path, log: Path, run_jobs: bool = True, **env: str) -> ApiProcess:
    api = ApiProcess({"ORACULUM_STORE": str(store), "ORACULUM_API_TOKENS": TOKEN_LIST, "ORACULUM_API_BACKEND": "local",
                      "ORACULUM_API_RUN_JOBS": "1" if run_jobs else "0", "ORACULUM_REDIS_URL": "",
                      "ORACULUM_ROOT_PATH": "", "ORACULUM_CACHE_DIR": str(store.parent / "cache"),
                      "TF_CPP_MIN_LOG_LEVEL": "3", **env}, log)
    return api.start()


def restart_api(api: ApiProcess) -> ApiProcess:
    """Start the same API again on the same port (after :meth:`ApiProcess.kill`)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return api.start()
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


class DashboardProcess:
    """`oraculum serve dashboard` (gunicorn) as a subprocess."""

    def __init__(self, api_url: str, log: Path, prefix: str = PREFIX, env: dict[str, str] | None = None) -> None:
        self.api_url = api_url
        self.log = log
        self.prefix = prefix
        self.env = dict(env or {})  # more ORACULUM_DASHBOARD_* settings
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/"

    def start(self) -> DashboardProcess:
        # the sky view points at a closed local port: the tests never reach for the internet, and see
        # the page degrade as it does offline
        env = {**os.environ, "ORACULUM_API_URL": self.api_url, "ORACULUM_ROOT_PATH": self.prefix,
               "ORACULUM_DASHBOARD_EVENTS_SECONDS": "120",
               "ORACULUM_DASHBOARD_SKY_URL": f"http://127.0.0.1:{free_port()}/aladin/?target={{ra}}%20{{dec}}",
               **self.env}
        env.pop("ORACULUM_DASHBOARD_TOKEN", None)
        handle = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oraculum.cli.main", "serve", "dashboard", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--threads", "24", "--log-level", "warning"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
        handle.close()
        wait_port(self.port, timeout=60, process=self.process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the dashboard did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def browser(downloads: Path, width: int = 1500, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver, why = find_chromium()
    if why:
        raise RuntimeError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    downloads.mkdir(parents=True, exist_ok=True)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Api:
    """Synchronous checks against the API, as a given role (what the tests verify through)."""

    def __init__(self, url: str, who: str = "oracle") -> None:
        self.http = httpx.Client(base_url=url + "/api/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {TOKENS[who]}"})

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def delete(self, path: str) -> None:
        self.http.delete(path).raise_for_status()

    def labels(self, experiment: str, iteration: int) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.get(f"/experiments/{experiment}/iterations/{iteration}/labels")["labels"].items()}


def sign_in(driver: Any, base_url: str, who: str = "oracle") -> None:
    from selenium.webdriver.common.by import By

    driver.get(base_url + "login")
    wait_for(driver, lambda d: d.find_elements(By.ID, "login-token"))
    driver.find_element(By.ID, "login-token").send_keys(TOKENS[who])
    driver.find_element(By.ID, "login-submit").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "whoami"))
    assert NAMES[who] in driver.find_element(By.ID, "whoami").text
    # the browser holds a session id, never the token
    assert not [c["name"] for c in driver.get_cookies() if TOKENS[who] in c["value"]]


def sign_out(driver: Any) -> None:
    """The Sign out button of the top bar (a POST with the page's form token)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def press(d: Any) -> bool:
        try:
            found = d.find_elements(By.ID, "logout")
            return bool(found) and found[0].click() is None
        except StaleElementReferenceException:
            return False

    wait_for(driver, press, 15, "the Sign out button")
    wait_for(driver, lambda d: d.find_elements(By.ID, "login-token"), 15, "the sign-in page")


def wait_for(driver: Any, condition: Any, timeout: float = 20.0, message: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def safe(d: Any) -> Any:
        try:
            return condition(d)
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(safe)
    except Exception:  # noqa: BLE001 - any failure to wait becomes an assertion with the browser's log
        logs = ""
        try:
            logs = json.dumps(driver.get_log("browser")[-10:], indent=1)
        except Exception:  # noqa: BLE001, S110 - diagnostics only
            pass
        raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}; browser log: {logs}")


def shown_index(driver: Any) -> int | None:
    value = driver.execute_script("var g = document.getElementById('lab-graph'); return g && g.dataset.shown;")
    return int(value) if value not in (None, "", "undefined") else None
