"""The Dagster UI as a person sees it: headless Chromium (Debian's package, driven by Selenium
through Debian's chromedriver) on the server the backfill ran on.

Screenshots are left in the test-artifacts folder the test prints (MODEL_FACTORY_TEST_ARTIFACTS,
default `.test-artifacts/`).
"""

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from model_factory_tests.conftest import SERVER_GROUP, STAGES, TRAINABLE_WEEKS, artifacts_dir
from model_factory_tests.dagster_server import LOCATION
from model_factory_tests.postgres_server import REQUIRE_SERVERS

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(SERVER_GROUP)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# No network here: nothing may phone home, update itself or try QUIC.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1200",
)


@pytest.fixture(scope="module")
def browser(dagster_server) -> Iterator[webdriver.Chrome]:
    missing = [b for b in (CHROMIUM, CHROMEDRIVER) if not os.access(b, os.X_OK)]
    if missing:
        # As for PostgreSQL: only root can install them (scripts/ensure-browser.sh); CI is root
        # and sets MODEL_FACTORY_REQUIRE_SERVERS=1, so there a missing browser fails.
        message = (
            f"NO BROWSER: {', '.join(missing)} missing: run scripts/ensure-browser.sh as root "
            "(apt-get install chromium chromium-driver)"
        )
        if os.environ.get(REQUIRE_SERVERS) == "1":
            pytest.fail(f"{message} ({REQUIRE_SERVERS}=1: CI must run these tests)", pytrace=False)
        print(f"\n{'!' * 100}\n{message}\nSKIPPING the browser test\n{'!' * 100}")
        pytest.skip(message)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a driver
    # What the first-visit "join the community" dialog's Skip button records on the server.
    dagster_server.graphql("mutation { setNuxSeen }")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def visit(driver: webdriver.Chrome, url: str, expect: list[str], timeout: float = 60) -> str:
    """Open ``url`` and wait until every text in ``expect`` is on the page; returns the text."""
    driver.get(url)

    def shown(d) -> str | bool:
        text = d.find_element(By.TAG_NAME, "body").text
        return text if all(e in text for e in expect) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown)
    except Exception:
        shot(driver, "failed_" + url.rsplit("/", 1)[-1].replace("?", "_"))
        raise


def shot(driver: webdriver.Chrome, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    time.sleep(0.5)  # let the last render settle
    driver.save_screenshot(str(path))
    print(f"\nscreenshot: {path}")
    return path


def test_asset_graph_shows_the_six_stages(dagster_server, backfill, browser):
    text = visit(
        browser, f"{dagster_server.url}/locations/{LOCATION}/asset-groups/training", list(STAGES)
    )
    assert "training" in text
    assert shot(browser, "asset_graph").stat().st_size > 10_000


def test_bundle_partition_page_shows_partitions_and_the_ledger(dagster_server, backfill, browser):
    bundle_id, week = sorted(backfill.pass_bundles.items(), key=lambda kv: kv[1])[0]
    instance = dagster_server.instance()
    meta = {
        k: getattr(v, "value", v)
        for k, v in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_bundle"), asset_partitions=[week]),
            limit=1,
        )
        .records[0]
        .asset_materialization.metadata.items()
    }
    text = visit(
        browser,
        f"{dagster_server.url}/assets/model_bundle?view=partitions&partition={week}",
        [f"Materialized ({len(TRAINABLE_WEEKS)})", "Failed (1)", bundle_id, meta["train_run_id"]],
    )
    for key in (
        "train_run_id",
        "config_hash",
        "code_version",
        "input_manifests",
        "output_uri",
        "output_sha256",
        "triggered_by",
        "gate_status",
    ):
        assert key in text, f"ledger field {key} not shown"
    assert f"backfill:{backfill.id}" in text
    assert meta["output_sha256"] in text
    assert "published" in text  # the publish run's observation of this bundle
    # Bring the ledger rows (below the publish observation) into the screenshot.
    row = browser.find_element(By.XPATH, "//td[normalize-space()='train_run_id']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", row)
    assert shot(browser, "model_bundle_partition").stat().st_size > 10_000


def test_backtest_summary_page_shows_every_week(dagster_server, backfill, browser):
    # the automation condition's label renders in its own panel, after the metadata: wait for it
    text = visit(
        browser,
        f"{dagster_server.url}/assets/backtest_summary",
        ["trained_weeks", *TRAINABLE_WEEKS, "after new weeks"],
    )
    assert all(week in text for week in TRAINABLE_WEEKS)
    assert shot(browser, "backtest_summary").stat().st_size > 10_000
    # The plot is a data-URI image in Markdown metadata, behind its row's "[Show Markdown]":
    # the UI must really draw it (its sanitizer could drop a data: source).
    row = browser.find_element(By.XPATH, "//tr[td[normalize-space()='plot']]")
    link = row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]")
    browser.execute_script("arguments[0].click();", link)

    def drawn(d) -> list[int] | bool:
        images = d.find_elements(By.CSS_SELECTOR, "img[src^='data:image/svg+xml']")
        widths = [d.execute_script("return arguments[0].naturalWidth", i) for i in images]
        return widths if widths and all(widths) else False

    widths = WebDriverWait(browser, 30, poll_frequency=0.5).until(drawn)
    assert all(w > 100 for w in widths), widths
    assert shot(browser, "backtest_plot").stat().st_size > 10_000
