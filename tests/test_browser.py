"""The app in a real headless Chromium (Debian's, driven by Playwright): the home page lists the
zoo, a share link opens its stored result, a bad link shows "Run not found", and the interactions a
researcher relies on work with the mouse, as a user makes them: a click on a channel of a stored
Pathways graph opens its detail, box and lasso selections on a stored embedding offer exactly the
samples inside them and open them in Explain, "Colour by" recolours, the rules table shows the rule
text without horizontal scrolling, one sample of a stored multi-sample run opens with its stored
maps and no computation, Compare's map grid links open stored results, and Batch's table keeps pace
with its progress bar. The stored results these need are computed through the Python API in the
test session's LOUPE_HOME, which the app server shares. Screenshots are saved under artifacts/ as
test artifacts. Skipped, with the reason, where no Chromium is installed."""
from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import loupe

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
MAPS = '[class*="st-key-"][class*="-map"] img'
"""The result maps' images (each sits in a container keyed ``…-map``)."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")]
playwright = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(module_home: Path):
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


def _new_page(browser, height: int = 1000):
    return browser.new_context(viewport={"width": 1400, "height": height}, accept_downloads=True).new_page()


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
    name = page.get_by_text("deletion AUC ↓", exact=True).first  # each metric with its direction, and on hover
    assert name.get_attribute("title").startswith("Lower is better. Target logit")  # its meaning
    assert page.get_by_text("confidence", exact=True).count() == 0  # a sample's property, not among the metrics
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
    assert page.get_by_text("deletion AUC ↓", exact=True).count() >= 2  # each metric with its direction
    assert page.get_by_text("insertion AUC ↑", exact=True).count() >= 2
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
    page.get_by_text("Metrics: mean and 95% confidence interval").wait_for(timeout=120_000)
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


# -- interactions with the mouse on stored results ------------------------------------------------------
PATHWAYS = {"strengths": "0.1,0.3,0.5", "steps": 5, "images": 6, "patch_pool": 24, "patches": 3}  # as test_pathways
POINTS = """(chart) => {
  const gd = chart.querySelector('.js-plotly-plot');
  const out = [];
  gd._fullData.forEach((trace) => {
    if (!trace.customdata || trace.mode.indexOf('markers') < 0) return;
    chart.querySelectorAll(`.scatterlayer .trace${trace.uid} path.point`).forEach((node, k) => {
      const r = node.getBoundingClientRect();
      out.push({id: Number(trace.customdata[k]), text: trace.text ? String(trace.text[k]) : null, trace: trace.name,
                x: r.x + r.width / 2, y: r.y + r.height / 2,
                ring: parseFloat(getComputedStyle(node).strokeWidth || '0'),
                opacity: parseFloat(getComputedStyle(node).opacity)});
    });
  });
  return out;
}"""
"""Every marker of a Plotly chart that carries customdata: its id, text, trace name, centre on the page,
its outline width and opacity as drawn."""


def _maps_on_disk() -> int:
    """Stored map files: a page that computes nothing leaves the count unchanged."""
    return len(list(Path(os.environ["LOUPE_HOME"], "maps").rglob("*.npy")))


def _chart(page, index: int = 0):
    chart = page.locator('[data-testid="stPlotlyChart"]').nth(index)
    chart.locator("path.point").first.wait_for(timeout=120_000)
    chart.evaluate("(c) => c.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    return chart


def _drag(page, path: list[tuple[float, float]], steps: int = 8) -> None:
    """Press the mouse at the first point, move through the others in small steps, release."""
    page.mouse.move(*path[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(path, path[1:]):
        for k in range(1, steps + 1):
            page.mouse.move(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
    page.mouse.up()


def _inside(polygon: list[tuple[float, float]], x: float, y: float) -> bool:
    """Ray casting: whether (x, y) lies inside ``polygon``."""
    hit = False
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            hit = not hit
    return hit


def _edge_distance(polygon: list[tuple[float, float]], x: float, y: float) -> float:
    """Distance from (x, y) to the nearest edge of ``polygon``."""
    best = float("inf")
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1]):
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)))
        best = min(best, ((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2) ** 0.5)
    return best


def _offered(page) -> list[int]:
    """The sample ids the Embeddings page offers for its selection ("N selected: #a, #b …")."""
    text = page.locator("[data-testid='stMarkdownContainer'] p").filter(has_text=re.compile(r"^\d+ selected:")).first \
        .inner_text()
    return [int(i) for i in re.findall(r"#(\d+)", text)]


def _opened_in_explain(page, expected: list[int]) -> None:
    """Follow "Open … in Explain" and check that Explain holds exactly ``expected`` as its samples."""
    page.get_by_role("link", name=re.compile(r"Open the \d+ selected sample")).click()
    page.wait_for_url("**/explain?**", timeout=60_000)
    _wait_text(page, "selected: #")
    title = page.get_by_text(re.compile(r"selected: #")).first.inner_text()
    assert [int(i) for i in re.findall(r"#(\d+)", title.split("selected:")[1])] == expected, title


@pytest.fixture(scope="module")
def stored_embedding():
    return loupe.analysis("umap_embedding", "digits_cnn", "digits", {"samples": "0:60"})


@pytest.mark.slow
def test_embedding_colour_box_and_lasso_selections_open_exactly_those_samples(app_url, browser, stored_embedding):
    """On a stored embedding: "Colour by" recolours; a box and then a lasso drawn with the mouse offer
    exactly the samples inside them, which open in Explain; Plotly's toolbar leaves the legend free."""
    emb = stored_embedding
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/embeddings?run={emb.key}")
    _wait_text(page, "Colour by")
    _idle(page)
    chart = _chart(page)
    assert {p["trace"] for p in chart.evaluate(POINTS)} <= set(emb.info["classes"])  # coloured by label
    page.get_by_text("correct", exact=True).first.click()
    page.wait_for_function("() => { const names = Array.from(document.querySelectorAll('.legendtext'))"
                           ".map(t => t.textContent); return names.length > 0 && names.every("
                           "n => n === 'correct' || n === 'wrong'); }", timeout=60_000)
    _idle(page)
    chart = _chart(page)
    right = dict(zip(emb.meta["sample_ids"], emb.arrays["labels"] == emb.arrays["predictions"]))
    points = chart.evaluate(POINTS)
    assert len(points) == 60 and all(p["trace"] == ("correct" if right[p["id"]] else "wrong") for p in points)
    assert "run=" in page.url  # the result stayed: the rerun did not reset the page

    area = chart.locator(".nsewdrag").first.bounding_box()
    xs = sorted(p["x"] for p in points)
    x0, x1 = area["x"] + 4, xs[len(xs) // 2]  # the left half of the points, the top two thirds of the plot
    y0, y1 = area["y"] + 4, area["y"] + area["height"] * 0.66
    boxed = [p["id"] for p in points if x0 < p["x"] < x1 and y0 < p["y"] < y1]
    assert 0 < len(boxed) < 60
    chart.hover()
    toolbar, legend = (chart.locator(sel).first.bounding_box() for sel in (".modebar", ".legend"))
    assert toolbar["y"] + toolbar["height"] <= legend["y"] or toolbar["x"] + toolbar["width"] <= legend["x"], \
        (toolbar, legend)  # the toolbar sits above (or beside) the legend, never over its entries
    page.locator('[data-title="Box Select"]').first.click()
    _drag(page, [(x0, y0), (x1, y1)])
    _wait_text(page, f"{len(boxed)} selected:")
    _idle(page)
    offered = _offered(page)
    assert sorted(offered) == sorted(boxed)
    _shot(page, "embedding_box_selection")
    _opened_in_explain(page, offered)

    page.goto(f"{app_url}/embeddings?run={emb.key}")
    _wait_text(page, "Colour by")
    _idle(page)
    chart = _chart(page)
    points = chart.evaluate(POINTS)
    cx, cy = sorted(p["x"] for p in points)[30], sorted(p["y"] for p in points)[30]
    radius = area["width"] * 0.22
    for _ in range(20):  # a pentagon around the median point, resized until no point sits on its outline
        polygon = [(cx + radius * math.cos(a), cy + radius * 0.8 * math.sin(a))
                   for a in (2 * math.pi * k / 5 + 0.3 for k in range(5))]
        if min(_edge_distance(polygon, p["x"], p["y"]) for p in points) > 6:
            break
        radius *= 0.93
    lassoed = [p["id"] for p in points if _inside(polygon, p["x"], p["y"])]
    assert 0 < len(lassoed) < 60
    chart.hover()
    page.locator('[data-title="Lasso Select"]').first.click()
    _drag(page, [*polygon, polygon[0]])
    _wait_text(page, f"{len(lassoed)} selected:")
    _idle(page)
    offered = _offered(page)
    assert sorted(offered) == sorted(lassoed)
    _shot(page, "embedding_lasso_selection")
    _opened_in_explain(page, offered)
    page.context.close()


@pytest.mark.slow
def test_clicking_a_channel_in_a_stored_pathways_graph_opens_its_detail(app_url, browser):
    res = loupe.pathways("shapes_cnn", "shapes", "circle", "square", **PATHWAYS)
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/pathways?run={res.key}")
    _wait_text(page, "Click a channel in the graph")
    _idle(page)
    chart = _chart(page)
    visible = [p for p in chart.evaluate(POINTS) if 60 < p["y"] < 840]
    first, second = visible[0], next(p for p in visible if p["text"] != visible[0]["text"])
    page.mouse.click(first["x"], first["y"])
    _wait_text(page, f"{first['text']} · column")
    _idle(page)
    assert page.get_by_text("Click a channel in the graph").count() == 0
    page.locator('[data-testid="stImage"] img').nth(2).wait_for(timeout=60_000)
    assert page.locator('[data-testid="stImage"] img').count() == 3  # its top dataset patches (patches=3)
    chart = _chart(page)
    page.mouse.click(second["x"], second["y"])
    _wait_text(page, f"{second['text']} · column")
    _idle(page)
    drawn = {p["text"]: p for p in _chart(page).evaluate(POINTS)}
    for pinned in (first, second):  # both clicked channels are pinned: a black ring at full opacity
        assert drawn[pinned["text"]]["ring"] >= 2.5 and drawn[pinned["text"]]["opacity"] == 1.0
    assert sum(p["ring"] > 0 for p in drawn.values()) == 2
    _shot(page, "pathways_clicked")
    page.context.close()


@pytest.mark.slow
def test_rules_table_shows_the_rule_text_without_horizontal_scrolling(app_url, browser):
    res = loupe.rules(model="breast_cancer_mlp", dataset="breast_cancer")
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/rules?run={res.key}")
    _wait_text(page, "Global rules")
    _idle(page)
    table = page.locator("[data-testid='stDataFrame']").filter(has=page.locator("th", has_text=re.compile("^rule$")))
    table.wait_for(timeout=60_000)
    table.evaluate("(t) => t.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    grid = table.evaluate("""(t) => { const s = t.querySelector('.dvn-scroller');
        return {scrollWidth: s.scrollWidth, clientWidth: s.clientWidth, scrollHeight: s.scrollHeight,
                clientHeight: s.clientHeight, right: t.getBoundingClientRect().right,
                headers: Array.from(t.querySelectorAll('th')).map(h => h.innerText),
                cells: Array.from(t.querySelectorAll('td')).map(c => c.innerText)}; }""")
    assert grid["headers"][:2] == ["id", "rule"]  # the rule text right after its id
    assert grid["scrollWidth"] <= grid["clientWidth"] and grid["right"] <= 1400, grid  # no horizontal scrolling
    assert grid["scrollHeight"] <= grid["clientHeight"] + 1  # and every rule in view
    assert grid["clientHeight"] >= 64 * len(res.rules)  # rows tall enough for the grid to wrap the text
    assert {r["rule"] for r in res.rules} <= set(grid["cells"])  # the whole text of every rule
    _shot(page, "rules")
    page.context.close()


def test_one_sample_of_a_stored_multi_sample_run_shows_its_stored_maps(app_url, browser):
    res = loupe.explain("shapes_cnn", "shapes", [720, 723, 729], "saliency")
    maps_before = _maps_on_disk()
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/explain?model=shapes_cnn&dataset=shapes&samples=723&explainers=saliency")
    page.locator(MAPS).first.wait_for(timeout=120_000)
    _idle(page)
    assert page.get_by_text("Not computed yet").count() == 0
    link = page.get_by_text(re.compile(r"/explain\?run=[0-9a-f]{64}")).first.inner_text()
    opened = loupe.run(re.search(r"run=([0-9a-f]{64})", link)[1])
    assert opened.sample_ids == [723] and opened.provenance["seconds"] == 0.0  # recorded, not computed
    np.testing.assert_array_equal(opened.attributions[0], res.attributions[1])  # the stored map of #723
    assert _maps_on_disk() == maps_before  # no sample was explained again
    _shot(page, "explain_one_of_a_stored_run")
    page.context.close()


@pytest.mark.slow
def test_compare_shows_the_map_grid_and_its_links_open_stored_results(app_url, browser):
    for explainer in ("saliency", "gradcam"):
        loupe.explain("shapes_cnn", "shapes", "600:604", explainer)
    maps_before = _maps_on_disk()
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/compare?dataset=shapes&models=shapes_cnn&explainers=saliency,gradcam&samples=600:604")
    _wait_text(page, "Metrics: mean and 95% confidence interval")
    _idle(page)
    grid = page.locator('[data-testid="stImage"] img')
    grid.nth(11).wait_for(timeout=60_000)
    assert grid.count() == 4 * 3  # four samples: the input and one map per explainer
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() == 2  # the metric chart and the agreement matrix
    page.get_by_text("deletion AUC ↓").first.wait_for(timeout=60_000)  # under each map, with its direction
    assert page.get_by_text("insertion AUC ↑").count() >= 1
    _shot(page, "compare")
    first = page.get_by_role("link", name="open in Explain").first
    href = first.get_attribute("href")
    assert re.search(r"/explain\?model=shapes_cnn&dataset=shapes&samples=60\d&explainers=(saliency|gradcam)$", href)
    page.goto(href)
    page.locator(MAPS).first.wait_for(timeout=120_000)
    _idle(page)
    assert page.get_by_text("Not computed yet").count() == 0 and _maps_on_disk() == maps_before
    page.context.close()


@pytest.mark.slow
def test_past_batches_table_keeps_pace_with_the_progress_bar(app_url, browser):
    page = _new_page(browser)
    page.goto(f"{app_url}/batch")
    _wait_text(page, "New batch")
    _idle(page)
    page.get_by_label("Samples", exact=True).fill("100:132")
    page.get_by_label("Samples", exact=True).press("Enter")
    _idle(page)
    page.get_by_label("Explainers").first.click()  # the option itself, clicked: typing then Enter takes the
    page.keyboard.type("occlusion")                    # first fuzzy match, which may be OSA-DAS occlusion
    page.get_by_role("option", name="Occlusion (occlusion)", exact=True).click()
    page.keyboard.press("Escape")
    _idle(page)
    page.get_by_text("Occlusion parameters", exact=True).click()
    assert page.get_by_text("OSA-DAS occlusion parameters").count() == 0
    _number(page, "window", "16")  # about 7 s per chunk of 16 samples here: the middle state lasts several refreshes
    _number(page, "stride", "8")
    page.get_by_role("button", name="Start").click()
    observed = []  # (progress bar count, past-batches table count), as the page showed them over time
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (32, 32) not in observed:
        bar, table = page.evaluate("""() => {
            const bar = document.querySelector('[data-testid="stProgress"]');
            const cells = Array.from(document.querySelectorAll('[data-testid="stDataFrame"] td')).map(c => c.innerText);
            return [bar ? bar.innerText : '', cells.find(c => /^\\d+\\/32$/.test(c)) || ''];
        }""")
        if re.search(r"\d+/32 sample", bar) and table:
            observed.append((int(re.search(r"(\d+)/32", bar)[1]), int(table.split("/")[0])))
        page.wait_for_timeout(200)
    middle = {b for b, _ in observed if 0 < b < 32}
    assert middle and all(any(t == b for bb, t in observed if bb == b) for b in middle), observed
    assert (32, 32) in observed, observed  # the table reached the end with the bar
    _shot(page, "batch_progress")
    page.context.close()


@pytest.mark.slow
def test_sanity_check_runs_from_explain_with_clicks_and_its_link_reopens_it(app_url, browser):
    """Issue #17: below a stored Explain result, one click runs the cascading randomisation check of the
    shown explainer; the verdict and figure show, and the permanent link opens the stored check on the
    Sanity page without computing it again."""
    loupe.explain("shapes_cnn", "shapes", [610, 611], "integrated_gradients", {"n_steps": 8})
    page = _new_page(browser, 900)
    page.goto(f"{app_url}/explain?model=shapes_cnn&dataset=shapes&samples=610,611&explainers=integrated_gradients"
              "&integrated_gradients.n_steps=8")
    page.locator(MAPS).first.wait_for(timeout=120_000)
    _idle(page)
    button = page.get_by_role("button", name="Run the sanity check of integrated_gradients")
    button.scroll_into_view_if_needed()
    button.click()
    _wait_text(page, "Similarity per stage", timeout=180_000)
    _idle(page)
    verdict = page.get_by_text(re.compile(r"^(PASS|FAIL|INCONCLUSIVE)")).first.inner_text()
    link = page.locator('a[href*="/sanity?run="]').first  # the permanent link
    key = re.search(r"run=([0-9a-f]{64})", link.get_attribute("href"))[1]
    stored = loupe.sanity_result(key)
    assert verdict.startswith(stored.verdict.upper()) and stored.sample_ids == [610, 611]
    assert stored.explainer_params["n_steps"] == 8 and stored.explainer_params["baseline"] == "normalized_zero"
    assert page.locator(".js-plotly-plot").count() >= 1  # the similarity-per-layer chart
    assert page.get_by_role("button", name=re.compile("Run the sanity check")).count() == 0  # stored now
    _shot(page, "explain_sanity")
    page.goto(link.get_attribute("href"))  # the server's links name its own address (LOUPE_BASE_URL)
    _wait_text(page, "Stored result: integrated_gradients on shapes_cnn / shapes")
    _idle(page)
    assert page.get_by_text(re.compile(r"^(PASS|FAIL|INCONCLUSIVE)")).first.inner_text().startswith(stored.verdict.upper())
    assert page.get_by_role("button", name=re.compile("Run the sanity check")).count() == 0
    _shot(page, "sanity_link")
    page.context.close()
