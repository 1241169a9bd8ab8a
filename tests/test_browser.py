"""The app in a real headless Chromium (Debian's, driven by Playwright): the home page lists the
zoo, a share link opens its stored result, a bad link shows "Run not found". Screenshots are saved
under artifacts/ as test artifacts. Skipped, with the reason, where no Chromium is installed."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import loupe

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")]
pytest.importorskip("model_registry.zoo")
playwright = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the Streamlit server did not become healthy within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        browser.close()


def test_home_page_lists_the_zoo(app_url, page):
    page.goto(app_url)
    page.get_by_text("Models", exact=True).first.wait_for(timeout=60_000)
    # st.dataframe draws on a canvas; its cells exist in the DOM for accessibility but are hidden
    page.get_by_text("shapes_resnet").first.wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    assert "Traceback" not in page.content()


def test_share_link_shows_the_stored_result_quickly(app_url, page):
    res = loupe.explain("shapes_cnn", "shapes", "0:4", "integrated_gradients")
    page.goto(app_url)  # the first script run warms imports, as a user's open app would be
    page.get_by_text("Models", exact=True).first.wait_for(timeout=60_000)
    started = time.monotonic()
    page.goto(f"{app_url}/?run={res.key}")
    page.get_by_text(res.key).first.wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    seconds = time.monotonic() - started
    page.screenshot(path=str(ARTIFACTS / "run_link.png"), full_page=True)
    print(f"share link rendered its result in {seconds:.2f} s")
    assert page.locator(".js-plotly-plot").count() == 4
    page.goto(f"{app_url}/?run=not-a-key")
    page.get_by_text("Run not found").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "bad_link.png"), full_page=True)
