"""SAMP for real: the dashboard's "Send to SAMP" and the notebook helpers (oraculum.client.samp) deliver
``spectrum.load.ssa-generic`` and ``table.load.votable`` through a real SAMP hub, and the links in
the messages serve, without any token, the spectrum and table the API serves.

Real parts: the SAMP hub of pyvo (astropy.samp's successor) in this process, with the Web Profile
on a free port and a consent "dialog" that accepts (and records) every registration, the way a
person would click "yes" in TOPCAT's; a SAMP client subscribed to both MTypes that records what it
receives, as SPLAT or TOPCAT would; the API and the dashboard as real processes on a copy of the
synthetic world (tests/support/api_world.py); Debian's headless Chromium, whose page speaks the Web
Profile (XML-RPC over HTTP) itself. The tests run in order: the last one stops the hub.
"""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.support.api_fixtures import ROOT, ApiProcess, TOKENS
from astropy.io import fits
from astropy.io.votable import parse
from tests.support.dashboard_harness import Api, DashboardProcess, browser, shown_index, sign_in, site_root, start_api, wait_for

from oraculum.client import samp
from oraculum.client import Client, ClientError

pytestmark = pytest.mark.slow

EXPERIMENT, DATASET = "exp", "pool"
RECEIVER = "oraculum-test-receiver"
SCREENSHOTS = ROOT / "docs" / "screenshots"


class Consent:
    """The hub's consent dialog, answered "yes" at once (and remembered): a Web Profile
    registration otherwise waits for a person."""

    def __init__(self) -> None:
        requests: list[tuple[str, str]] = []

        class AlwaysYes(samp.samp_library().WebProfileDialog):  # type: ignore[misc]
            def show_dialog(self, samp_name: str, details: Any, client: Any, origin: str) -> None:
                requests.append((samp_name, origin))
                self.consent()

        self.dialog = AlwaysYes()
        self.requests = requests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="samp-consent", daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.dialog.handle_queue()
            time.sleep(0.02)

    def start(self) -> "Consent":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Receiver:
    """A SAMP client subscribed to both MTypes, as SPLAT and TOPCAT are; records every message."""

    hub: Any
    got: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = samp.samp_library().SAMPIntegratedClient(name=RECEIVER)

    def connect(self) -> "Receiver":
        self.client.connect(hub=self.hub, pool_size=2)
        for mtype in (samp.SPECTRUM_MTYPE, samp.TABLE_MTYPE):
            self.client.bind_receive_notification(mtype, self._notified)
        return self

    def _notified(self, private_key: str, sender_id: str, mtype: str, params: dict[str, Any], extra: Any) -> None:
        self.got.append((mtype, params))

    def wait(self, mtype: str, after: int, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [params for kind, params in self.got[after:] if kind == mtype]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {mtype} message arrived within {timeout} s; got {self.got[after:]}")

    def disconnect(self) -> None:
        if self.client.is_connected:
            self.client.disconnect()


@dataclass
class Site:
    api: ApiProcess
    dashboard: DashboardProcess
    driver: Any
    hub: Any
    consent: Consent
    receiver: Receiver
    viewer: Api

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub._web_port}"  # noqa: SLF001 - the port the hub chose (web_port=0)


@pytest.fixture(scope="module")
def site(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # noqa: F811
    root = site_root(world, tmp_path_factory, "samp")
    store = root / "store"
    library = samp.samp_library()
    library.conf.use_internet = False  # the hub names itself 127.0.0.1, no lookups
    consent = Consent().start()
    hub = library.SAMPHubServer(web_profile=True, web_port=0, web_profile_dialog=consent.dialog,
                                lockfile=str(root / "samp-lock"), label="oraculum tests", pool_size=4)
    hub.start()
    api = dashboard = driver = receiver = None
    try:
        receiver = Receiver(hub).connect()
        api = start_api(store, root / "api.log", run_jobs=False, ORACULUM_API_SHARE_SECRET="samp-test-key-" + "k" * 40)
        dashboard = DashboardProcess(api.url, root / "dashboard.log", env={
            "ORACULUM_DASHBOARD_SAMP_HUB": f"http://127.0.0.1:{hub._web_port}"}).start()  # noqa: SLF001
        driver = browser(root / "downloads")
        yield Site(api, dashboard, driver, hub, consent, receiver, Api(api.url, "viewer"))
    finally:
        if driver is not None:
            driver.quit()
        if dashboard is not None:
            dashboard.stop()
        if api is not None:
            api.stop()
        if receiver is not None:
            receiver.disconnect()
        if hub.is_running:
            hub.stop()
        consent.stop()


def fetched(url: str) -> httpx.Response:
    """What a SAMP tool gets from the link: no token, no cookie."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response


def assert_same_spectrum(fits_bytes: bytes, wavelength: list[float | None], flux: list[float | None], medium: str) -> None:
    with fits.open(io.BytesIO(fits_bytes)) as hdus:
        table = hdus["SPECTRUM"]
        assert table.header["TUNIT1"] == "Angstrom" and table.header["AIRORVAC"] == ("air" if medium == "air" else "vac")
        np.testing.assert_array_equal(table.data["WAVELENGTH"], np.array(wavelength, dtype=np.float64))
        np.testing.assert_array_equal(table.data["FLUX"], np.array([np.nan if v is None else v for v in flux]))


def assert_candidates(site: Site, url: str, iteration: int) -> None:
    body = fetched(url).content
    expected = site.viewer.http.get(f"/experiments/{EXPERIMENT}/iterations/{iteration}/candidates.vot")
    assert body == expected.content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = parse(io.BytesIO(body)).get_first_table()
    assert [f.name for f in table.fields][:4] == ["id", "index", "ra", "dec"]


# -- from a notebook: oraculum.client.samp ----------------------------------------------------------------


def test_the_notebook_helpers_send_a_spectrum_and_the_candidates(site: Site) -> None:
    api = Client(site.api.url, token=TOKENS["viewer"])
    before = len(site.receiver.got)
    assert samp.send_spectrum(api, DATASET, 7, hub=site.hub) == [RECEIVER]
    params = site.receiver.wait(samp.SPECTRUM_MTYPE, before)
    assert params["meta"]["Access.Format"] == "application/fits" and params["spectrum-id"] == "oraculum:pool/7/preprocessed"
    assert params["url"].startswith(site.api.url + "/api/v1/shared/spectra/pool/7/preprocessed.fits?")
    expected = site.viewer.get(f"/datasets/{DATASET}/spectra/7/flux")
    assert_same_spectrum(fetched(params["url"]).content, expected["wavelength"], expected["flux"], expected["medium"])

    before = len(site.receiver.got)
    assert samp.send_candidates(api, EXPERIMENT, to="test-receiver", hub=site.hub) == [RECEIVER]
    table = site.receiver.wait(samp.TABLE_MTYPE, before)
    assert table["table-id"] == "oraculum:exp/1/candidates" and table["name"] == "exp iteration 1 candidates"
    assert_candidates(site, table["url"], 1)

    with pytest.raises(samp.SampError, match=f"no application called like 'splat'.*listening: {RECEIVER}"):
        samp.send_spectrum(api, DATASET, 7, to="splat", hub=site.hub)
    with pytest.raises(ClientError, match="HTTP 404"):  # nothing to share: the API's own message
        samp.send_spectrum(api, DATASET, 10**9, hub=site.hub)


def test_the_notebook_helper_says_when_no_hub_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:file://{tmp_path}/no-such-lockfile")
    with pytest.raises(samp.SampError, match="no SAMP hub can be reached.*start SPLAT or TOPCAT"):
        samp.send({"samp.mtype": samp.SPECTRUM_MTYPE, "samp.params": {"url": "http://127.0.0.1:1/x"}})


# -- from the dashboard: samp.js through the Web Profile ---------------------------------------------


def status_text(site: Site, element_id: str) -> str:
    return str(site.driver.execute_script(f"var e = document.getElementById('{element_id}'); return e ? e.textContent : '';"))


def test_send_the_spectrum_shown_from_the_labelling_page(site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = site.driver
    sign_in(driver, site.dashboard.url, "viewer")  # a viewer may share what they can see
    driver.get(site.dashboard.url + f"e/{EXPERIMENT}/label")
    wait_for(driver, lambda d: shown_index(d) is not None, 30, "the first spectrum")
    index = shown_index(driver)
    before = len(site.receiver.got)
    driver.find_element(By.ID, "lab-samp").click()
    params = site.receiver.wait(samp.SPECTRUM_MTYPE, before)
    wait_for(driver, lambda d: status_text(site, "lab-samp-status").startswith("sent"), 10, "the status of the send")
    assert status_text(site, "lab-samp-status") == f"sent spectrum #{index} (preprocessed) to {RECEIVER}"
    # the consent dialog saw one registration, from the dashboard's page
    assert site.consent.requests == [("oraculum", site.dashboard.url.split("/oraculum/")[0])]
    # the link points at the dashboard's own door, and serves the API's spectrum to anyone holding it
    assert params["url"].startswith(site.dashboard.url + "_oraculum/shared/spectra/pool/")
    assert params["meta"]["Access.Reference"] == params["url"] and f"#{index} " in params["name"]
    expected = site.viewer.get(f"/datasets/{DATASET}/spectra/{index}/flux")
    assert_same_spectrum(fetched(params["url"]).content, expected["wavelength"], expected["flux"], expected["medium"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "label-samp.png"))

    # f shows the raw archive spectrum, v sends what is shown: the raw file's full range
    before = len(site.receiver.got)
    ActionChains(driver).send_keys("f").perform()
    ActionChains(driver).send_keys("v").perform()
    raw = site.receiver.wait(samp.SPECTRUM_MTYPE, before, timeout=30)
    assert raw["spectrum-id"] == f"oraculum:pool/{index}/raw" and "/raw.fits?" in raw["url"]
    archive = site.viewer.get(f"/datasets/{DATASET}/spectra/{index}/raw")
    assert_same_spectrum(fetched(raw["url"]).content, archive["wavelength"], archive["flux"], archive["medium"])
    assert len(site.consent.requests) == 1  # still the page's first registration
    help_rows = driver.execute_script("return document.getElementById('lab-help-keys').textContent;")
    assert "send the spectrum shown to SAMP tools" in help_rows


def test_send_the_candidate_table_from_the_performance_page(site: Site) -> None:
    from selenium.webdriver.common.by import By

    driver = site.driver
    driver.get(site.dashboard.url + f"e/{EXPERIMENT}/performance")
    wait_for(driver, lambda d: "candidates" in status_text(site, "perf-cand-count"), 30, "the candidates table")
    before = len(site.receiver.got)
    driver.find_element(By.ID, "perf-samp").click()
    params = site.receiver.wait(samp.TABLE_MTYPE, before)
    wait_for(driver, lambda d: status_text(site, "perf-samp-status").startswith("sent"), 10, "the status of the send")
    assert status_text(site, "perf-samp-status") == f"sent the candidates of iteration 1 to {RECEIVER}"
    assert params["url"].startswith(site.dashboard.url + "_oraculum/shared/experiments/exp/iterations/1/candidates.vot?")
    assert_candidates(site, params["url"], 1)
    # a link someone changed opens nothing, through the dashboard either
    changed = params["url"].replace("/iterations/1/", "/iterations/0/")
    assert httpx.get(changed, timeout=30).status_code == 403


def test_the_page_says_when_nobody_listens_and_when_no_hub_runs(site: Site) -> None:
    from selenium.webdriver.common.by import By

    driver = site.driver  # still on the performance page
    site.receiver.disconnect()
    driver.find_element(By.ID, "perf-samp").click()
    wait_for(driver, lambda d: "no application" in status_text(site, "perf-samp-status"), 15, "the nobody-listens message")
    assert "accepts tables (start TOPCAT or Aladin)" in status_text(site, "perf-samp-status")

    site.hub.stop()
    started = time.monotonic()
    driver.find_element(By.ID, "perf-samp").click()
    wait_for(driver, lambda d: "no SAMP hub answers" in status_text(site, "perf-samp-status"), 15, "the hub-down message")
    assert time.monotonic() - started < 12  # a message, never a hang
    assert status_text(site, "perf-samp-status") == (f"no SAMP hub answers at {site.hub_url}: start TOPCAT or SPLAT "
                                                     "(each runs one) and try again")
    assert "error" in driver.find_element(By.ID, "perf-samp-status").get_attribute("class")
