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
MAPS = '[class*="st-key-"][class*="-map"] img'
"""The result maps' images (each sits in a container keyed ``…-map``)."""
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
        proc.terminate()  # the server also stops its embedded Dask cluster, which takes a while under load
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


def _new_page(browser):
    return browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()


@pytest.fixture(scope="module")
def page(browser):
    return _new_page(browser)


def _shot(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so the viewport is
    made as tall as that block first."""
    height = page.evaluate("(() => { const b = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
                           " return b.getBoundingClientRect().top + b.scrollHeight; })()")
    page.set_viewport_size({"width": 1400, "height": max(1000, min(int(height) + 100, 8000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def _idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished the current script run (the app root's script state)."""
    page.wait_for_timeout(200)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached",
                                                                                       timeout=timeout)


def _wait_text(page, text: str, timeout: float = 120_000) -> None:
    """Wait for ``text``; on a timeout fail with what the page showed instead (and a screenshot), so
    a failure in CI says which state the app was in."""
    try:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    except playwright.Error as err:
        _shot(page, "failure")
        shown = page.locator('[data-testid="stMain"]').inner_text()[:3000]
        pytest.fail(f"{text!r} did not show within {timeout / 1000:.0f} s ({err.message.splitlines()[0]}); "
                    f"the page showed:\n{shown}")


def _number(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    _idle(page)


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the multiselect ``label`` as a keyboard user would (type to filter by the
    id in parentheses, Enter), and wait until its chip shows."""
    page.get_by_label(label).first.click()
    page.keyboard.type(option[option.rindex("("):])
    page.get_by_role("option", name=option).first.wait_for(timeout=120_000)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.get_by_text(option, exact=True).first.wait_for(timeout=120_000)  # the chosen option's chip
    _idle(page)


def test_home_page_lists_the_zoo(app_url, page):
    page.goto(app_url)
    page.get_by_text("Models", exact=True).first.wait_for(timeout=60_000)
    # st.dataframe draws on a canvas; its cells exist in the DOM for accessibility but are hidden
    page.get_by_text("shapes_resnet").first.wait_for(state="attached", timeout=30_000)
    _shot(page, "home")
    assert "Traceback" not in page.content()


def test_share_link_shows_the_stored_result_quickly(app_url, page):
    res = loupe.explain("shapes_cnn", "shapes", "0:4", "integrated_gradients")
    page.goto(f"{app_url}/explain?samples=0")  # warms the page's imports, as in a user's open app; opening
    page.get_by_text("Select samples in the gallery").first.wait_for(timeout=120_000)  # a stored result
    _idle(page)  # needs no worker: the gallery stays closed and the cost preview finds everything stored
    started = time.monotonic()
    assert res.link.endswith(f"/explain?run={res.key}")  # a link names the page of its kind
    page.goto(f"{app_url}/explain?run={res.key}")
    page.get_by_text(f"/explain?run={res.key}").first.wait_for(timeout=30_000)
    page.locator(MAPS).first.wait_for(timeout=30_000)
    seconds = time.monotonic() - started
    page.locator(MAPS).nth(3).wait_for(timeout=30_000)  # all four samples' maps, for the screenshot
    _shot(page, "run_link")
    print(f"share link rendered its result in {seconds:.2f} s")
    page.get_by_role("button", name="Change the model, samples or parameters").click()
    page.wait_for_url("**samples=0%2C1%2C2%2C3**", timeout=30_000)  # the explorer, holding the run's selection
    page.get_by_text("Integrated Gradients", exact=False).first.wait_for(timeout=30_000)
    page.goto(f"{app_url}/?run={res.key}")  # the short form: the home page routes it by the stored kind
    page.locator(MAPS).first.wait_for(timeout=30_000)
    assert "/explain?" in page.url
    page.goto(f"{app_url}/?run=not-a-key")
    page.get_by_text("Run not found").wait_for(timeout=30_000)
    _shot(page, "bad_link")


@pytest.mark.slow
def test_user_walk_explain_share_batch(app_url, browser):
    """Open the app, explain a shapes image with samp and osa_das (small, fast params), see two maps
    and their metrics, open a result's link in a fresh context (no recomputation), run a small batch
    and download its CSV; screenshots of every page go to artifacts/."""
    page = _new_page(browser)
    page.goto(app_url)
    page.get_by_text("Quick start").first.wait_for(timeout=60_000)
    page.get_by_role("link", name="Explain").first.click()
    page.get_by_text("From sample", exact=True).wait_for(timeout=60_000)
    _idle(page)
    page.get_by_text("#3 · circle → circle").wait_for(timeout=120_000)  # predictions came from the worker
    page.get_by_text("select #3", exact=True).click()
    page.wait_for_url("**samples=3**", timeout=120_000)
    _idle(page)
    _choose(page, "Explainers", "SAMP++ (salient manipulation path) (samp)")
    _choose(page, "Explainers", "OSA-DAS occlusion (osa_das)")
    page.get_by_text("SAMP++ (salient manipulation path) parameters").click()
    _number(page, "n_frag", "4")
    _number(page, "pixels_per_step", "512")
    page.get_by_text("OSA-DAS occlusion parameters").click()
    _number(page, "n_views", "2")
    _number(page, "patch", "16")
    _number(page, "stride", "16")
    assert "samp.n_frag=4" in page.url and "osa_das.n_views=2" in page.url
    page.get_by_text("Cost preview").wait_for()
    _shot(page, "explain_setup")

    runs_before = len(loupe.runs())
    started = time.monotonic()
    page.get_by_role("button", name="Explain").click()
    page.get_by_text("osa_das: computed 1 sample(s)").wait_for(timeout=300_000)
    _idle(page, 300_000)
    print(f"first explain (samp + osa_das, 1 image, CPU, cold worker) took {time.monotonic() - started:.1f} s")
    links = page.locator('a[href*="?run="]').all_inner_texts()
    assert len(links) == 2, links
    assert page.get_by_text("deletion_auc").count() >= 2 and page.get_by_text("insertion_auc").count() >= 2
    page.locator(MAPS).nth(1).wait_for(timeout=120_000)  # the two maps
    _shot(page, "explain_results")
    assert len(loupe.runs()) == runs_before + 2

    started = time.monotonic()
    page.get_by_role("button", name="Explain").click()
    page.get_by_text("osa_das: from the store, no model pass").wait_for(timeout=120_000)  # only the new run says so
    answered = time.monotonic() - started
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
    page.locator(MAPS).nth(1).wait_for()
    cached = time.monotonic() - started  # no fixed settling pause (as _idle's) inside the measured time
    print(f"cached result: served {answered:.2f} s and fully rendered {cached:.2f} s after the click (goal < 1 s)")
    page.get_by_text("Show deletion/insertion curves and method details").click()
    page.get_by_text("SAMP path logits").first.wait_for(timeout=120_000)
    page.get_by_text("OSA-DAS window scores").first.wait_for(timeout=120_000)
    _idle(page)
    _shot(page, "explain_details")

    link = links[0].strip()
    fresh = _new_page(browser)
    started = time.monotonic()
    fresh.goto(link)
    fresh.get_by_text(link).first.wait_for(timeout=120_000)
    fresh.locator(MAPS).first.wait_for(timeout=120_000)
    shared = time.monotonic() - started
    print(f"share link showed its result {shared:.2f} s after navigation (goal < 3 s)")
    _shot(fresh, "share_link")
    fresh.context.close()
    tab = page.context.new_page()  # a new tab of the first browser: its own session, the app's files cached
    started = time.monotonic()
    tab.goto(link)
    tab.get_by_text(link).first.wait_for(timeout=120_000)
    tab.locator(MAPS).first.wait_for(timeout=120_000)
    print(f"share link in a new tab showed its result {time.monotonic() - started:.2f} s after navigation")
    tab.close()
    page.bring_to_front()  # a background tab's timers are throttled: the batch fragment refreshes on one
    assert len(loupe.runs()) == runs_before + 2  # nothing recomputed or re-recorded

    page.goto(f"{app_url}/batch")
    page.get_by_text("New batch").wait_for(timeout=60_000)
    _idle(page)
    samples = page.get_by_label("Samples", exact=True)
    samples.fill("0:4")
    samples.press("Enter")
    _idle(page)
    _choose(page, "Explainers", "Saliency (gradient) (saliency)")
    page.get_by_role("button", name="Start").click()
    _wait_text(page, "4/4 sample explanations")
    _idle(page)
    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("run_key,link,model,dataset,sample_id")
    _shot(page, "batch")
    print(f"batch CSV: {len(rows) - 1} rows")

    page.goto(f"{app_url}/compare?dataset=shapes&models=shapes_cnn,shapes_resnet&explainers=saliency,gradcam"
              "&samples=0:4")
    page.get_by_role("button", name="Compute missing").click()
    page.get_by_text("Metrics (mean ± 95% CI over the samples)").wait_for(timeout=120_000)
    _idle(page)
    _shot(page, "compare")

    page.goto(f"{app_url}/embeddings?model=digits_cnn&dataset=digits&samples=0:60")
    page.get_by_role("button", name="Compute embedding").click()
    page.get_by_text("Colour by").wait_for(timeout=300_000)
    _idle(page)
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for(timeout=120_000)
    assert "run=" in page.url
    _shot(page, "embeddings")

    for name in ("registry", "home"):
        page.goto(f"{app_url}/{'' if name == 'home' else name}")
        page.get_by_role("heading", name="Loupe" if name == "home" else name.capitalize()).first.wait_for(timeout=60_000)
        _idle(page)
        assert "Traceback" not in page.content()
        _shot(page, name)
