"""The docs page at / in a real browser: headless Chromium (Debian's, driven by selenium and
chromedriver) shows the service's title and version, and Swagger UI's "Try it out" on
POST /predict gets predictions. Screenshots go to test-results/ (``TEST_RESULTS_DIR``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from contract import __version__
from tests.helpers import REPO_ROOT
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
RESULTS = Path(os.environ.get("TEST_RESULTS_DIR", REPO_ROOT / "test-results"))
PREDICT = "#operations-Prediction-predict"
WAIT_S = 30

if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("chromium and chromedriver are not installed (make browser-setup)", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only where a browser exists)
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",  # no calls home: the page must work offline
        "--disable-extensions",
        "--window-size=1280,1800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def test_try_it_out_on_predict(browser: WebDriver, server: Server) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{server.url}/")
    assert browser.title == "Crop-yield prediction service: API documentation"
    title = wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, ".info .title")))
    assert "Crop-yield prediction service" in title.text
    assert __version__ in title.text
    assert "None" not in title.text
    description = browser.find_element(By.CSS_SELECTOR, ".info .description").text
    assert f"Serving model {server.tag}" in description
    browser.save_screenshot(str(RESULTS / "docs-page.png"))

    operation = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, PREDICT)))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, f"{PREDICT} .try-out__btn"))).click()
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, f"{PREDICT} .execute"))).click()
    row = f"{PREDICT} .live-responses-table tr.response"
    status = wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, f"{row} .response-col_status")))
    assert status.text == "200"
    answer = browser.find_element(By.CSS_SELECTOR, f"{row} .response-col_description pre.microlight").text
    body = json.loads(answer)
    assert body["model"] == server.tag
    prediction = body["predictions"][0]  # the documented example asks for 95% intervals
    assert prediction["apples_lower"] < prediction["apples"] < prediction["apples_upper"]
    assert prediction["extrapolated"] is False
    browser.execute_script("arguments[0].scrollIntoView()", operation)
    browser.save_screenshot(str(RESULTS / "docs-page-predict.png"))

    # Everything the page loaded came from the service itself, and nothing failed.
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded
    assert {urlsplit(url).netloc for url in loaded} == {urlsplit(server.url).netloc}
    problems = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not problems
