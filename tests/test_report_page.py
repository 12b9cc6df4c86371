"""``report.html`` in a real browser: headless Chromium driven by Selenium (Debian's ``chromium`` and
``chromium-driver``; nothing is downloaded). The page of a report with a planted failure is opened,
a table sorted, a table filtered, the failure's link followed; a screenshot of each state is saved
in the test's temporary folder. Skipped, with the reason, where no browser or driver is found —
``.ci/run`` installs both, so CI always runs it.
"""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from backprop_verify import manual
from backprop_verify.reports.cli import build_parser
from backprop_verify.reports.commands.report import main

ONLY = r"seed004|activation-sigmoid-saturation-f64"
ADDRESS, ELEMENT, PLANTED = "layers.0.weight.grad", (1, 0), 0.25
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def plant_failure(monkeypatch):
    """The manual engine's dL/dW of layer 0 off by 0.25 at one element, in seed004 only: one kink-like bug."""
    honest = manual.run

    def planted(scenario):
        trace = honest(scenario)
        if scenario.name.startswith("seed004"):
            trace[ADDRESS] = np.array(trace[ADDRESS], copy=True)
            trace[ADDRESS][ELEMENT] += PLANTED
        return trace

    monkeypatch.setattr(manual, "run", planted)


def _which(names, extra=()):
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in extra if Path(path).is_file()), None)


def _driver():
    """A headless Chromium WebDriver, or pytest.skip with the reason."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    browser = _which(BROWSERS, ("/usr/bin/chromium", "/usr/lib/chromium/chromium"))
    driver_path = _which(DRIVERS, ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"))
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium chromium-driver; .ci/run does it)")
    if driver_path is None:
        pytest.skip("no chromedriver found (apt-get install chromium-driver; .ci/run does it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a download
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        plant_failure(monkeypatch)
        args = build_parser().parse_args(["report", "--only", ONLY, "--random", "0", "--random-conv", "0",
                                          "--out", str(out), "--quiet"])
        assert main(args) == 1
    return out


def _visible_rows(driver, table):
    return [row for row in table.find_elements("css selector", "tbody tr") if row.is_displayed()]


@pytest.mark.subprocess
def test_page_sorts_filters_and_links_to_the_failure(planted_report, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _driver()
    try:
        driver.get((planted_report / "report.html").resolve().as_uri())
        assert driver.title.startswith("backprop-verify report")
        driver.save_screenshot(str(tmp_path / "1-opened.png"))

        # Sort the per-component table by its failures column, twice: descending, the planted bug's layer on top.
        components = driver.find_element(By.ID, "components")
        header = next(th for th in components.find_elements(By.TAG_NAME, "th") if th.text == "failures")
        column = [th.text for th in components.find_elements(By.TAG_NAME, "th")].index("failures")
        header.click()
        ascending = [int(r.find_elements(By.TAG_NAME, "td")[column].text) for r in _visible_rows(driver, components)]
        assert ascending == sorted(ascending) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        rows = _visible_rows(driver, components)
        descending = [int(r.find_elements(By.TAG_NAME, "td")[column].text) for r in rows]
        assert descending == sorted(descending, reverse=True) and descending[0] > 0
        assert header.get_attribute("aria-sort") == "descending"
        assert rows[0].find_elements(By.TAG_NAME, "td")[0].text in ("activation:sigmoid", "layer:linear", "loss:mse",
                                                                    "optimizer:sgd")  # what seed004 exercises
        driver.save_screenshot(str(tmp_path / "2-sorted.png"))

        # Filter it: only float32 rows of the sigmoid component remain.
        total = len(rows)
        box = driver.find_element(By.CSS_SELECTOR, 'input[data-table="components"]')
        box.send_keys("sigmoid dtype:float64")
        shown = _visible_rows(driver, components)
        assert 0 < len(shown) < total
        for row in shown:
            cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            assert "sigmoid" in cells[0] and cells[1] == "float64"
        assert box.find_element(By.XPATH, "..").text.endswith(f"{len(shown)} of {total} rows")
        driver.save_screenshot(str(tmp_path / "3-filtered.png"))

        # The failure: its row names the worst element; its link leads to the scenario's section.
        failures = driver.find_element(By.ID, "failures")
        row = _visible_rows(driver, failures)[0]
        text = row.text
        assert ADDRESS in text and "[1,0]" in text
        link = row.find_element(By.TAG_NAME, "a")
        assert link.text.startswith("seed004")
        link.click()
        assert driver.current_url.endswith("#scenario-" + link.text)
        section = driver.find_element(By.ID, "scenario-" + link.text)
        top = driver.execute_script("return arguments[0].getBoundingClientRect().top;", section)
        assert -2 <= top < 200, top  # scrolled to the section
        assert "linear" in section.find_element(By.CLASS_NAME, "arch").text
        caption = section.find_element(By.CSS_SELECTOR, "figure.heatmap figcaption").text
        assert ADDRESS in caption and "worst [1,0]" in caption
        image = section.find_element(By.CSS_SELECTOR, "figure.heatmap img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", image) == 2
        driver.save_screenshot(str(tmp_path / "4-followed-link.png"))
    finally:
        driver.quit()
    for name in ("1-opened", "2-sorted", "3-filtered", "4-followed-link"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
