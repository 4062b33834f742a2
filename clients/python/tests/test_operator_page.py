"""The operator page (`/ui`) in a real headless Chromium (Debian's, from
scripts/browser): it loads, draws the dependency graph the API describes, shows the
numbers the API answers, and its replay button replays a dead letter. Screenshots go to
FSTORE_UI_SCREENSHOTS (a temporary directory when unset)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

import fstore_client as fs
from fstore_client import feature, request

from conftest import Server

T = TypeVar("T")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = os.environ.get("FSTORE_CHROMIUM") or shutil.which("chromium")
    driver_path = os.environ.get("FSTORE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("no chromium/chromedriver: run scripts/browser (it installs Debian's) or set FSTORE_CHROMIUM and FSTORE_CHROMEDRIVER")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots() -> Path:
    d = Path(os.environ.get("FSTORE_UI_SCREENSHOTS") or tempfile.mkdtemp(prefix="fstore-ui-"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def until(what: str, check: Callable[[], T], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # the page is still drawing: try again
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_the_page_is_open_and_built_in(on_nats: Server) -> None:
    with urllib.request.urlopen(on_nats.addr + "/ui", timeout=10) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        page = r.read().decode()
    assert "<script>" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", ""), "the page loads nothing from elsewhere"


def test_the_page_shows_what_the_api_says_and_replays(dev: Server, browser: object, shots: Path, unique: str) -> None:
    from selenium.webdriver.common.by import By

    driver = browser  # type: ignore[assignment]
    length, double, hopeless, slow = f"{unique}.len", f"{unique}.double", f"{unique}.hopeless", f"{unique}.slow"
    with dev.client() as c:
        c.register([
            feature(length, entity_type="doc", flow="text.stats@1", inputs={"text": request("text")}),
            feature(double, entity_type="doc", flow="num.affine@1", inputs={"x": length}, params={"scale": 2}),
            feature(hopeless, entity_type="doc", flow="test.probe@1", params={"fail": "transient"}),
            feature(slow, entity_type="doc", flow="test.probe@1", params={"delay_ms": 3000}),
        ])
        texts = {"a": {"text": "one two"}, "b": {"text": "three"}}
        for _ in range(3):  # a miss, then hits
            c.get_features(texts, [double], mode="sync", wait=10)
        assert c.get_features(["h"], [hopeless], mode="sync", wait=10)[0].status == "FAILED"
        letter = next(d for d in c.dead_letters().dead_letters if d.feature == f"{hopeless}@1")

        driver.get(dev.addr + "/ui")
        until("the graph", lambda: driver.find_elements(By.CSS_SELECTOR, f'g.node[data-feature="{double}"]'))
        until("a refresh", lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed"))
        driver.save_screenshot(str(shots / "operator-page.png"))

        # The graph: a node per feature and exactly the edges the API describes.
        listed = [f.name for f in c.list_features()]
        nodes = {e.get_attribute("data-feature") for e in driver.find_elements(By.CSS_SELECTOR, "g.node")}
        assert nodes == set(listed)
        want = set()
        for name in listed:
            for dep in c.describe(name).dependencies:
                want.add((dep.rsplit("@", 1)[0], name))
        edges = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in driver.find_elements(By.CSS_SELECTOR, "line.edge")}
        assert edges == want and (length, double) in edges

        # The flows' numbers are the API's.
        for flow in c.list_flows():
            row = driver.find_element(By.CSS_SELECTOR, f'#flows tr[data-flow="{flow.name}@{flow.version}"]')
            assert row.find_element(By.CSS_SELECTOR, "td.workers").text == str(flow.live_workers)
            assert row.find_element(By.CSS_SELECTOR, "td.queued").text.isdigit()

        # Jobs of this tenant waiting on a slow flow: the page shows them and the slots
        # serving them as they change, and so does the API.
        c.get_features([f"s{i}" for i in range(12)], [slow], mode="async")
        probe = lambda: driver.find_element(By.CSS_SELECTOR, '#flows tr[data-flow="test.probe@1"]')
        number = lambda cls: int(probe().find_element(By.CSS_SELECTOR, f"td.{cls}").text)
        until("the tenant's queued jobs and their slots on the page", lambda: number("tenant-queued") > 0 and number("slots") > 0)
        listed = next(f for f in c.list_flows() if f.name == "test.probe")
        assert listed.tenant_queued > 0 and listed.slots > 0 and listed.queued >= listed.tenant_queued
        driver.save_screenshot(str(shots / "operator-page-queued.png"))
        until("the queue to drain on the page", lambda: number("tenant-queued") == 0, timeout=30)

        # A feature's serving figures, after a click on it.
        driver.find_element(By.CSS_SELECTOR, f'#features tr[data-feature="{double}"]').click()
        stats = c.describe(double).stats
        until("the hit rate", lambda: driver.find_element(By.ID, "hit-rate").text == f"{stats.hit_rate * 100:.1f}%")
        bars = driver.find_elements(By.CSS_SELECTOR, "#ages div")
        assert len(bars) == len(stats.ages) and len(bars) > 0
        driver.save_screenshot(str(shots / "operator-page-feature.png"))

        # Replay the dead letter from the page: it leaves the list, here and in the API.
        row = until("the dead letter", lambda: driver.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-id="{letter.id}"]'))
        row.find_element(By.CSS_SELECTOR, "button.replay").click()
        until("the dead letter to go", lambda: not driver.find_elements(By.CSS_SELECTOR, f'#dead-letters tr[data-id="{letter.id}"]'))
        assert letter.id not in [d.id for d in c.dead_letters().dead_letters]
        driver.save_screenshot(str(shots / "operator-page-replayed.png"))
    print(f"screenshots in {shots}")
