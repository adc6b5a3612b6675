"""The oracle's dashboard in a real headless Chromium (Debian's chromium + chromium-driver).

Real parts only: the API (`oraculum serve api --run-jobs`, the local runner inside) on a copy of
the synthetic world (tests/support/api_world.py: an experiment whose batch of iteration 1 the real engine
chose), the dashboard (`oraculum serve dashboard`, gunicorn) under the ingress prefix /oraculum,
and a browser driven by selenium. The tests run in order, as one oracle's session: sign in, watch
the experiments page, label with the keyboard only, see a failed save, lasso-label a group after a
preview, submit, get the next batch from the retrained network, and read the performance page.
Every check of a label goes through the API. Screenshots go to docs/screenshots/.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.api_fixtures import ROOT, ApiProcess
from tests.support.dashboard_harness import (
    Api,
    DashboardProcess,
    browser,
    restart_api,
    shown_index,
    sign_in,
    sign_out,
    site_root,
    start_api,
    wait_for,
)

pytestmark = pytest.mark.slow

EXPERIMENT = "exp"
SCREENSHOTS = ROOT / "docs" / "screenshots"
LINE_NAMES = ("H-alpha", "[N II] 6548", "[N II] 6583", "He I 6678")


@dataclass
class Site:
    api: ApiProcess
    dashboard: DashboardProcess
    driver: Any
    oracle: Api
    root: Path

    @property
    def url(self) -> str:
        return self.dashboard.url


@pytest.fixture(scope="module")
def site(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:  # noqa: F811
    root = site_root(world, tmp_path_factory, "dashboard")
    store = root / "store"
    api = start_api(store, root / "api.log")
    dashboard = driver = None
    try:
        dashboard = DashboardProcess(api.url, root / "dashboard.log").start()
        driver = browser(root / "downloads")
        yield Site(api, dashboard, driver, Api(api.url), root)
    finally:
        if driver is not None:
            driver.quit()
        if dashboard is not None:
            dashboard.stop()
        api.stop()


def screenshot(site: Site, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    site.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def press(site: Site, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(site.driver).send_keys(key).perform()


def press_and_wait_move(site: Site, key: str) -> int | None:
    before = shown_index(site.driver)
    press(site, key)
    wait_for(site.driver, lambda d: shown_index(d) != before, 10, f"the spectrum after {key!r}")
    return shown_index(site.driver)


def element(site: Site, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return site.driver.find_element(By.CSS_SELECTOR, selector)


def click(site: Site, find: Any, what: str) -> None:
    """Click what ``find(driver)`` returns, again if a live refresh replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt(d: Any) -> bool:
        found = find(d)
        if not found:
            return False
        try:
            found[0].click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(site.driver, attempt, 15, what)


def text(site: Site, selector: str) -> str:
    from selenium.webdriver.common.by import By

    found = site.driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def batch(site: Site) -> dict[str, Any]:
    return site.oracle.get(f"/experiments/{EXPERIMENT}/batch")


def open_labelling(site: Site) -> None:
    site.driver.get(site.url + f"e/{EXPERIMENT}/label")
    wait_for(site.driver, lambda d: shown_index(d) is not None, 30, "the first spectrum")


def line_label_boxes(site: Site) -> list[dict[str, float]]:
    return site.driver.execute_script("""
        const names = arguments[0];
        return Array.from(document.querySelectorAll('#lab-graph text'))
          .filter((t) => names.includes(t.textContent.trim()))
          .map((t) => { const r = t.getBoundingClientRect();
                        return {name: t.textContent.trim(), left: r.left, right: r.right, top: r.top, bottom: r.bottom}; });
    """, list(LINE_NAMES))


def overlaps(boxes: list[dict[str, float]]) -> list[tuple[str, str]]:
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if not (a["right"] <= b["left"] or b["right"] <= a["left"] or a["bottom"] <= b["top"] or b["bottom"] <= a["top"]):
                found.append((a["name"], b["name"]))
    return found


def assert_no_overlap(boxes: list[dict[str, float]]) -> None:
    assert not overlaps(boxes), f"line labels overlap: {overlaps(boxes)} in {boxes}"


# -- the pages -----------------------------------------------------------------------------------


def test_probes_and_the_prefix(site: Site) -> None:
    base = f"http://127.0.0.1:{site.dashboard.port}"
    assert httpx.get(base + "/healthz").json()["status"] == "ok"  # the chart's probes, at the root
    assert httpx.get(site.url + "healthz").status_code == 200
    assert httpx.get(site.url + "readyz").json()["checks"]["api"] == "ok"
    page = httpx.get(site.url)
    assert page.status_code == 200 and "/oraculum/_dash-component-suites/" in page.text
    assert httpx.get(base + "/").status_code == 404  # nothing outside the prefix
    proxy = httpx.put(site.url + f"_oraculum/api/v1/experiments/{EXPERIMENT}/iterations/1/labels/1", json={"label": "x"})
    assert proxy.status_code == 403  # writes need the header a cross-site form cannot send
    assert httpx.get(site.url + "_oraculum/api/v1/whoami").status_code == 401


def test_experiments_page_with_live_job_progress(site: Site) -> None:
    d = site.driver
    d.get(site.url)
    wait_for(d, lambda d: d.find_elements("id", "login-token"), 10, "the sign-in page")
    sign_in(d, site.url)
    wait_for(d, lambda d: "AwaitingLabels" in text(site, "#exp-grid"), 20, "the experiment's row")
    row = text(site, "#exp-grid tbody tr")
    assert row.startswith(EXPERIMENT) and "batch 0 / 18" in row and "labelling 0 / 18" in row
    assert not d.find_elements("id", "exp-create-card")  # an oracle may not create experiments
    wait_for(d, lambda d: d.execute_script("return window.oraculum.sse.ready") >= 1, 15, "the event stream")
    worker = Api(site.api.url, "worker")
    worker.http.post(f"/experiments/{EXPERIMENT}/progress", json={
        "job": "exp-iter-1", "step": "score", "done": 3, "total": 4, "message": "scoring shard 3 of 4"}).raise_for_status()
    wait_for(d, lambda d: "scoring shard 3 of 4" in text(site, "#exp-grid"), 10, "the live progress")
    width = d.execute_script("return document.querySelector('#exp-grid .bar .fill').style.width")
    assert width in ("75%", "75.0%")
    screenshot(site, "experiments")


def test_label_a_batch_with_the_keyboard_only(site: Site) -> None:
    d = site.driver
    items = batch(site)["items"]
    order = [item["index"] for item in items]
    open_labelling(site)
    assert shown_index(d) == order[0]
    assert text(site, "#lab-progress-text") == "0 / 12 oracle, 0 / 6 estimation"
    assert element(site, "#lab-submit").get_attribute("disabled")

    # the lines and their labels: all four, none overlapping, also in a narrow window and zoomed in
    assert sorted(b["name"] for b in line_label_boxes(site)) == sorted(LINE_NAMES)
    assert_no_overlap(line_label_boxes(site))
    d.set_window_size(760, 1000)
    wait_for(d, lambda d: len(boxes := line_label_boxes(site)) == 4 and max(b["right"] for b in boxes) < 760
             and not overlaps(boxes), 10, "labels re-placed without overlap in a narrow window")
    assert len({b["top"] for b in line_label_boxes(site)}) > 1  # some had to move up a level
    d.set_window_size(1500, 1000)
    d.execute_script("var gd = document.querySelector('#lab-graph .js-plotly-plot');"
                     "Plotly.relayout(gd, {'xaxis.range': [6540, 6600]});")
    in_view = ["H-alpha", "[N II] 6548", "[N II] 6583"]
    wait_for(d, lambda d: sorted(b["name"] for b in line_label_boxes(site)) == in_view
             and not overlaps(line_label_boxes(site)), 10, "only the lines in view, apart")
    press(site, "r")  # reset zoom
    wait_for(d, lambda d: len(line_label_boxes(site)) == 4, 10, "the full range again")
    assert d.execute_script("return document.querySelector('#lab-graph .js-plotly-plot').layout.xaxis.autorange")

    # help and smoothing
    press(site, "?")
    wait_for(d, lambda d: element(site, "#lab-help").is_displayed(), 5, "the help")
    assert "label as emission" in text(site, "#lab-help") and "undo" in text(site, "#lab-help")
    screenshot(site, "label-help")
    press(site, "\ue00c")  # Escape
    wait_for(d, lambda d: not element(site, "#lab-help").is_displayed(), 5, "the help to close")
    traces = "return document.querySelector('#lab-graph .js-plotly-plot').data.map(t => t.name).join()"
    press(site, "s")
    wait_for(d, lambda d: "smoothed" in d.execute_script(traces), 5, "the smoothed curve")
    press(site, "s")
    wait_for(d, lambda d: "smoothed" not in d.execute_script(traces), 5, "smoothing off")
    # the full raw spectrum from the archive file, and back
    press(site, "f")
    wait_for(d, lambda d: "raw (archive file)" in d.execute_script(traces), 15, "the raw spectrum")
    raw_x = d.execute_script("return document.querySelector('#lab-graph .js-plotly-plot').data[0].x")
    assert len(raw_x) > 1000 and raw_x[0] < 4000 < 9000 < raw_x[-1]  # LAMOST's whole range, not the 140-point grid
    assert len(line_label_boxes(site)) == 4 and not overlaps(line_label_boxes(site))
    press(site, "f")
    wait_for(d, lambda d: "preprocessed" in d.execute_script(traces), 10, "the preprocessed spectrum again")
    # the sky view degrades gracefully when Aladin Lite cannot be reached (here: a closed local port)
    wait_for(d, lambda d: "stale" not in (element(site, "#lab-meta").get_attribute("class") or ""), 30,
             "the details of the shown spectrum")
    click(site, lambda d: d.find_elements("id", "lab-sky-show"), "the sky button")
    wait_for(d, lambda d: "cannot be reached" in text(site, "#lab-sky-note"), 15, "the reason the sky view is missing")
    assert not element(site, "#lab-sky-frame").is_displayed()
    assert "aladin" in element(site, "#lab-link-aladin").get_attribute("href").lower()

    # four labels from the keyboard: each key saves through the API and moves on
    expected = {order[0]: "absorption", order[1]: "emission", order[2]: "double-peak", order[3]: "unsure"}
    for key, index in zip("123u", order[:4], strict=True):
        assert shown_index(d) == index
        press_and_wait_move(site, key)
    wait_for(d, lambda d: {i: e["label"] for i, e in site.oracle.labels(EXPERIMENT, 1).items()} == expected, 15,
             "the four labels in the API")
    assert all(e["who"] == "olga" for e in site.oracle.labels(EXPERIMENT, 1).values())
    sets = {item["index"]: item["set"] for item in items}
    oracle_done = sum(1 for i in expected if sets[i] == "oracle")
    assert text(site, "#lab-progress-text") == f"{oracle_done} / 12 oracle, {4 - oracle_done} / 6 estimation"
    assert shown_index(d) == order[4]

    # left/right, then undo the last label ('unsure' on order[3]): cleared in the API
    assert press_and_wait_move(site, "\ue012") == order[3]  # ArrowLeft
    assert press_and_wait_move(site, "\ue014") == order[4]  # ArrowRight
    assert press_and_wait_move(site, "z") == order[3]
    wait_for(d, lambda d: order[3] not in site.oracle.labels(EXPERIMENT, 1), 15, "the undo in the API")

    # a comment goes with the label
    press(site, "c")
    element(site, "#lab-comment").send_keys("weak emission in the red wing")
    element(site, "#lab-comment").send_keys("\ue007")  # Enter saves (nothing to save yet: kept for the label)
    press_and_wait_move(site, "2")
    wait_for(d, lambda d: site.oracle.labels(EXPERIMENT, 1).get(order[3], {}).get("comment")
             == "weak emission in the red wing", 15, "the comment in the API")
    assert site.oracle.labels(EXPERIMENT, 1)[order[3]]["label"] == "emission"
    wait_for(d, lambda d: "ok" in element(site, "#lab-status").get_attribute("class"), 10, "every label saved")

    # reload: the labels, the progress and the place are all still there
    before = shown_index(d)
    d.refresh()
    wait_for(d, lambda d: shown_index(d) is not None, 30, "the page after reload")
    assert shown_index(d) == before
    assert text(site, "#lab-progress-text").startswith(f"{oracle_done} / 12 oracle")
    press(site, "\ue012")
    wait_for(d, lambda d: shown_index(d) == order[3], 10)
    assert "labelled emission" in text(site, "#lab-labelled")
    assert "weak emission" in element(site, "#lab-comment").get_attribute("value")
    assert "archive page" in text(site, "#lab-meta") and "SIMBAD" in text(site, "#lab-meta")
    wait_for(d, lambda d: "absorption: #" in d.execute_script(
        "return document.getElementById('lab-neighbours').textContent"), 15, "the nearest labelled spectra")
    press(site, "\ue014")
    wait_for(d, lambda d: shown_index(d) == order[4], 10)
    # the details panel belongs to the spectrum shown, or is dimmed as "stale" until it does
    meta_class = element(site, "#lab-meta").get_attribute("class") or ""
    assert "stale" in meta_class or f"{order[4]} in " in text(site, "#lab-meta"), text(site, "#lab-meta")
    wait_for(d, lambda d: f"{order[4]} in " in text(site, "#lab-meta")
             and "stale" not in element(site, "#lab-meta").get_attribute("class"), 30, "the details of the shown spectrum")
    screenshot(site, "label")


def test_a_failed_save_is_shown_and_nothing_is_lost(site: Site) -> None:
    d = site.driver
    open_labelling(site)
    # someone else is labelling the spectrum shown: the save is refused, shown, and undone on screen
    index = shown_index(d)
    other = Api(site.api.url, "oracle2")
    other.post(f"/experiments/{EXPERIMENT}/iterations/1/locks/{index}")
    press(site, "1")
    wait_for(d, lambda d: "otto" in text(site, "#lab-status"), 15, "the refused save")
    assert "error" in element(site, "#lab-status").get_attribute("class")
    assert index not in site.oracle.labels(EXPERIMENT, 1)
    other.delete(f"/experiments/{EXPERIMENT}/iterations/1/locks/{index}")

    # the API goes away: the save fails, is shown, kept in the browser, and sent once it is back
    press(site, "\ue012")
    wait_for(d, lambda d: shown_index(d) == index, 10)
    site.api.kill()
    press(site, "3")
    wait_for(d, lambda d: "save failed" in text(site, "#lab-status"), 15, "the failed save")
    assert "retrying" in text(site, "#lab-status") and "1 unsaved" in text(site, "#lab-status")
    screenshot(site, "label-save-failed")
    d.refresh()  # reload while the API is still down: the label waits in the browser
    time.sleep(1.0)
    restart_api(site.api)
    d.refresh()
    wait_for(d, lambda d: site.oracle.labels(EXPERIMENT, 1).get(index, {}).get("label") == "double-peak", 30,
             "the kept label in the API after the restart")
    wait_for(d, lambda d: shown_index(d) is not None, 30)


def test_lasso_label_a_group_after_a_preview(site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = site.driver
    d.get(site.url + f"e/{EXPERIMENT}/map")
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-graph .scatterlayer .point")) == 18, 30,
             "the 18 points of the map")
    area = element(site, "#map-graph .nsewdrag")
    width, height = area.size["width"], area.size["height"]
    margin = 6
    chain = ActionChains(d).move_to_element_with_offset(area, -width // 2 + margin, -height // 2 + margin).click_and_hold()
    for dx, dy in ((width - 2 * margin, 0), (0, height - 2 * margin), (-(width - 2 * margin), 0), (0, -(height - 2 * margin) + 2)):
        for _ in range(4):
            chain = chain.move_by_offset(dx // 4, dy // 4)
    chain.release().perform()
    wait_for(d, lambda d: "12 spectra selected" in text(site, "#map-selection"), 10, "the lasso selection")
    assert "6 estimation, left out" in text(site, "#map-selection")
    assert element(site, "#map-confirm").get_attribute("disabled")
    d.find_element(By.XPATH, "//*[@id='map-class']//label[contains(., 'absorption')]").click()
    assert "preview first" in element(site, "#map-confirm").text
    element(site, "#map-preview").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "map-preview-graph"), 15, "the preview")
    assert "6 of the 12 selected" in text(site, "#map-preview-text")
    wait_for(d, lambda d: element(site, "#map-confirm").is_enabled(), 10, "the confirm button")
    assert element(site, "#map-confirm").text == "Label 12 spectra as absorption"
    d.set_window_size(1500, 1500)  # the map and the preview below it
    time.sleep(0.5)
    screenshot(site, "map")
    d.set_window_size(1500, 1000)
    element(site, "#map-confirm").click()
    wait_for(d, lambda d: d.find_elements(By.ID, "map-done"), 15, "the bulk label")
    oracle_items = [item["index"] for item in batch(site)["items"] if item["set"] == "oracle"]
    labels = site.oracle.labels(EXPERIMENT, 1)
    assert all(labels[i]["label"] == "absorption" and labels[i]["bulk"] for i in oracle_items)
    events = site.oracle.get(f"/experiments/{EXPERIMENT}/iterations/1/labels/events")["events"]
    assert any(e["bulk"] and len(e["items"]) == 12 for e in events)

    # a click on a point opens that spectrum on the labelling page
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-graph .scatterlayer .point")) == 18, 20)
    point = d.find_elements(By.CSS_SELECTOR, "#map-graph .scatterlayer .trace .point")[-1]
    index = d.execute_script("const p = arguments[0]; return p.closest('.trace').__data__[0].trace.customdata[p.__data__.i];",
                             point)
    ActionChains(d).move_to_element(point).click().perform()
    wait_for(d, lambda d: "/label" in d.current_url and shown_index(d) == index, 20, f"spectrum {index} opened")
    assert "item=" not in d.current_url  # a reload keeps the place the oracle moves on to


def test_submit_and_the_next_batch_opens(site: Site) -> None:
    d = site.driver
    open_labelling(site)
    items = batch(site)["items"]
    remaining = [item["index"] for item in items if not item.get("label")]
    assert remaining, "the earlier tests leave estimation spectra to label"
    if shown_index(d) not in remaining:  # the page reopens where the oracle was: n goes to the next unlabelled
        press_and_wait_move(site, "n")
    assert shown_index(d) in remaining
    press(site, *("1" * len(remaining)))  # as fast as selenium types: no key may be lost
    wait_for(d, lambda d: len(site.oracle.labels(EXPERIMENT, 1)) == len(items), 20, "a complete batch in the API")
    wait_for(d, lambda d: element(site, "#lab-submit").is_enabled(), 15, "Submit enabled")
    assert text(site, "#lab-progress-text") == "12 / 12 oracle, 6 / 6 estimation"
    element(site, "#lab-submit").click()
    wait_for(d, lambda d: d.find_elements("id", "lab-submitted"), 15, "the submission")
    assert site.oracle.get(f"/experiments/{EXPERIMENT}/iterations/1/progress")["submitted"]
    # the local runner retrains the network and chooses the next batch; the page opens it by itself
    wait_for(d, lambda d: "0 / 12 oracle, 0 / 6 estimation" == text(site, "#lab-progress-text")
             and site.oracle.get(f"/experiments/{EXPERIMENT}")["iteration"] == 2, 150, "the batch of iteration 2")
    assert site.oracle.get(f"/experiments/{EXPERIMENT}")["phase"] == "AwaitingLabels"
    assert shown_index(d) in [item["index"] for item in batch(site)["items"]]


def test_performance_page_renders_the_curve(site: Site) -> None:
    from selenium.webdriver.common.by import By

    d = site.driver
    d.get(site.url + f"e/{EXPERIMENT}/performance")
    metrics = site.oracle.get(f"/experiments/{EXPERIMENT}/iterations/1/metrics")["metrics"]
    assert metrics["estimable"] and metrics["accuracy"]["estimate"] is not None  # evaluated after the submission
    precision = [p for p in site.oracle.get(f"/experiments/{EXPERIMENT}/curves")["points"] if p["estimate"] is not None]
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#perf-estimate .scatterlayer .point"))
             == 1 + len(precision), 20, "the points of the estimate curves")
    assert d.find_elements(By.CSS_SELECTOR, "#perf-estimate .errorbar")  # the interval
    shown = d.execute_script("return document.querySelector('#perf-estimate .js-plotly-plot').data"
                             ".filter(t => t.name === 'accuracy (stratified sample)')[0].y")
    assert shown == [metrics["accuracy"]["estimate"]]
    for note in metrics.get("notes") or []:
        assert note in text(site, "#perf-notes")
    rows = [row.split()[0] for row in text(site, "#perf-iteration-table tbody").splitlines() if row.strip()]
    assert rows == ["0", "1", "2"]
    wait_for(d, lambda d: "candidates" in text(site, "#perf-cand-count").lower(), 20, "the candidates")
    rows = site.oracle.http.get(f"/experiments/{EXPERIMENT}/iterations/2/candidates.csv").text.splitlines()
    element(site, "#perf-dl-csv").click()
    target = site.root / "downloads" / f"{EXPERIMENT}-iteration-2-candidates.csv"
    wait_for(d, lambda d: target.exists() and target.stat().st_size > 0, 15, "the CSV download")
    downloaded = list(csv.reader(target.read_text().splitlines()))
    assert downloaded[0] == rows[0].split(",") and len(downloaded) == len(rows)
    d.execute_script("window.scrollTo(0, 0)")
    screenshot(site, "performance")


def test_an_admin_creates_an_experiment_then_suspends_and_resumes_it(site: Site) -> None:
    import yaml
    from tests.support.api_world import manifest
    from selenium.webdriver.common.by import By

    d = site.driver
    d.get(site.url)
    sign_out(d)
    d.get(site.url)
    wait_for(d, lambda d: d.find_elements(By.ID, "login-token"), 10, "still signed out after the session ended")
    sign_in(d, site.url, "admin")
    wait_for(d, lambda d: d.find_elements(By.ID, "exp-create-card"), 15, "the create form (admin only)")
    document = manifest("second", acquisition={"strategy": "entropy", "batchSize": 6, "initialBatchSize": 8},
                        estimation={"size": 3, "stratifiedSize": 3, "blind": True})
    path = site.root / "second.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    element(site, "#exp-upload input[type=file]").send_keys(str(path))
    wait_for(d, lambda d: "name: second" in (element(site, "#exp-manifest").get_attribute("value") or ""), 10,
             "the uploaded manifest")
    element(site, "#exp-create").click()
    wait_for(d, lambda d: "Created second" in text(site, "#exp-create-msg"), 15, "the new experiment")
    wait_for(d, lambda d: "second" in text(site, "#exp-grid"), 15, "its row")
    # its labelling page waits for the first batch and opens it by itself (the local runner's cold start)
    d.get(site.url + "e/second/label")
    wait_for(d, lambda d: shown_index(d) is not None, 90, "the first batch of the new experiment")
    assert text(site, "#lab-progress-text") == "0 / 8 oracle, 0 / 0 estimation"
    d.get(site.url)

    def button(action: str) -> list[Any]:
        return d.find_elements(By.CSS_SELECTOR, f"button[id*='\"name\":\"second\"'][id*='\"{action}\"']")

    def row() -> str:
        return text(site, "tr[id*='\"name\":\"second\"']")

    click(site, lambda d: button("suspend"), "the suspend button")
    wait_for(d, lambda d: site.oracle.get("/experiments/second")["suspended"], 15, "suspended in the API")
    wait_for(d, lambda d: "Suspended" in row() and button("resume"), 15, "shown as suspended")
    screenshot(site, "experiments-admin")
    click(site, lambda d: button("resume"), "the resume button")
    wait_for(d, lambda d: not site.oracle.get("/experiments/second")["suspended"], 15, "resumed in the API")
    wait_for(d, lambda d: button("suspend"), 15, "shown as running again")
