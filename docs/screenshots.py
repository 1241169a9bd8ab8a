"""Screenshots of every page of the app, for the README and for reviewing a change by eye.

    python -m docs.screenshots                 # writes docs/screenshots/<page>.png at 1440 px
    python -m docs.screenshots --width 1280 --out /tmp/shots

It starts the app on a fresh temporary LOUPE_HOME (or ``--home``), computes through the Python API
what each page shows (a few explanations, a comparison, pathways, rules, an embedding, a batch), then
drives headless Chromium (Debian's /usr/bin/chromium through Playwright) to each page by its URL,
performs the one interaction that page is about (a click on a pathways channel, a box selection on the
embedding, the gallery's mistakes filter) and saves a full-height screenshot, reduced to 256 colours
so the PNGs stay small. A page that fails to render is still shot and reported, and the script exits
with status 1. Everything runs on this machine; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PATHWAYS = {"strengths": "0.1,0.3,0.5", "steps": 5, "images": 6, "patch_pool": 24, "patches": 3}
COMPARED = ("saliency", "gradcam", "integrated_gradients")


@dataclass(frozen=True)
class Shot:
    """One screenshot: the page's URL path and query, and what to do there before the picture."""

    name: str
    url: str
    act: Callable[..., None] | None = None


def _batch() -> str:
    from loupe import background

    spec = background.BatchSpec("digits_cnn", "digits", "0:32", {"saliency": {}, "gradcam": {}})
    return background.wait(background.start(spec).id, timeout=600).id


def precompute() -> tuple[dict[str, str], list[str]]:
    """Store what the pages show; returns the keys the URLs need and the steps that failed (each
    step on its own, so one that a later change breaks costs only its own pages)."""
    import loupe

    steps = {
        "explain": lambda: loupe.explain_batch("shapes_cnn", "shapes", [3, 9, 12],
                                               ["saliency", "integrated_gradients"])[0].key,
        "compare": lambda: [loupe.explain_batch(m, "shapes", "0:8", list(COMPARED))[0].key
                            for m in ("shapes_cnn", "shapes_resnet")][0],
        "pathways": lambda: loupe.pathways("shapes_cnn", "shapes", "circle", "square", **PATHWAYS).key,
        "rules": lambda: loupe.rules(model="breast_cancer_mlp", dataset="breast_cancer").key,
        "embedding": lambda: loupe.analysis("umap_embedding", "digits_cnn", "digits", {"samples": "0:200"}).key,
        "sanity": lambda: loupe.sanity("shapes_cnn", "shapes", [3, 9], "integrated_gradients").key,
        "batch": _batch,
    }
    keys, problems = {}, []
    for name, step in steps.items():
        try:
            keys[name] = step()
        except Exception as err:  # noqa: BLE001 - reported, and the other pages are still shot
            problems.append(f"precompute {name}: {type(err).__name__}: {err}")
    return keys, problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int) -> subprocess.Popen:
    """The app on ``port`` (same LOUPE_HOME as this process); returns once it answers its health check."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_BASE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not become healthy within 120 s")


def settle(page: Page, timeout: float = 180_000) -> None:
    """Wait until the script run has finished, every Plotly chart has drawn and every image loaded."""
    page.wait_for_timeout(400)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached",
                                                                                       timeout=timeout)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
                                  .every(c => c.querySelector('.main-svg'))
                              && Array.from(document.images).every(i => i.complete)""", timeout=timeout)
    page.wait_for_timeout(800)


def click_first_channel(page: Page) -> None:
    """Click the first channel of the pathways graph that is in view (its detail opens on the right)."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.locator("path.point").first.wait_for(timeout=120_000)
    chart.evaluate("(c) => c.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)
    height = page.viewport_size["height"]
    for point in chart.locator("path.point").all():
        box = point.bounding_box()
        if box and 80 < box["y"] < height - 80 and point.evaluate("(p) => getComputedStyle(p).fill").startswith("rgb("):
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            break
    page.get_by_text(" · column ").first.wait_for(timeout=60_000)


def box_select(page: Page) -> None:
    """Draw a box over the left part of the embedding with the mouse (the page offers those samples)."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.locator("path.point").first.wait_for(timeout=120_000)
    chart.evaluate("(c) => c.scrollIntoView({block: 'center'})")
    area = chart.locator(".nsewdrag").first.bounding_box()
    chart.hover()
    page.locator('[data-title="Box Select"]').first.click()
    x0, y0 = area["x"] + area["width"] * 0.05, area["y"] + area["height"] * 0.05
    x1, y1 = area["x"] + area["width"] * 0.4, area["y"] + area["height"] * 0.6
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
    page.mouse.up()
    page.get_by_text(" selected:").first.wait_for(timeout=60_000)


def mistakes_only(page: Page) -> None:
    page.get_by_text("Mistakes only", exact=True).first.click()


def show_details(page: Page) -> None:
    page.get_by_text("Show deletion/insertion curves", exact=False).first.click()


def watch_batch(page: Page) -> None:
    page.get_by_role("button", name="Watch this batch").click()
    page.get_by_text("sample explanations").first.wait_for(timeout=60_000)


def plan(keys: dict[str, str]) -> list[Shot]:
    """Every page, in the state a researcher would look at, showing the stored results ``keys``."""
    compared = ",".join(COMPARED)
    return [
        Shot("home", "/"),
        Shot("explain", "/explain?model=shapes_cnn&dataset=shapes&samples=3,9,12"
                        "&explainers=saliency,integrated_gradients", show_details),
        Shot("explain_gallery", "/explain?model=shapes_cnn&dataset=shapes", mistakes_only),
        Shot("share_link", f"/explain?run={keys.get('explain')}"),
        Shot("compare", f"/compare?dataset=shapes&models=shapes_cnn,shapes_resnet&explainers={compared}&samples=0:8"),
        Shot("pathways", f"/pathways?run={keys.get('pathways')}", click_first_channel),
        Shot("rules", f"/rules?run={keys.get('rules')}"),
        Shot("embeddings", f"/embeddings?run={keys.get('embedding')}", box_select),
        Shot("sanity", f"/sanity?run={keys.get('sanity')}"),
        Shot("batch", "/batch", watch_batch if "batch" in keys else None),
        Shot("registry", "/registry"),
    ]


def shots(keys: dict[str, str]) -> list[Shot]:
    """The :func:`plan` less the pages whose stored result is missing (the precompute step says why)."""
    return [shot for shot in plan(keys) if "=None" not in shot.url]


def save(page: Page, path: Path, width: int) -> None:
    """A full-height picture of the page (Streamlit scrolls inside its main block, so the viewport
    is made as tall as that block first), reduced to 256 colours."""
    from PIL import Image

    page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]'); if (m) m.scrollTo(0, 0);"
                  " window.scrollTo(0, 0); }")
    page.wait_for_timeout(300)
    height = page.evaluate("(() => { const b = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
                           " return b ? b.getBoundingClientRect().top + b.scrollHeight : 1000; })()")
    page.set_viewport_size({"width": width, "height": max(900, min(int(height) + 60, 7000))})
    page.wait_for_timeout(1200)
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def take(url: str, plan: list[Shot], out: Path, width: int) -> list[str]:
    """Shoot every page of ``plan``; returns the problems (the pictures are taken regardless)."""
    from playwright.sync_api import Error, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for shot in plan:
            page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
            try:
                page.goto(url + shot.url)
                settle(page)
                if shot.act is not None:
                    shot.act(page)
                    settle(page)
                if page.locator('[data-testid="stException"]').count():
                    problems.append(f"{shot.name}: the page shows an exception")
            except Error as err:
                problems.append(f"{shot.name}: {err.message.splitlines()[0]}")
            save(page, out / f"{shot.name}.png", width)
            print(f"{shot.name}: {out / shot.name}.png", flush=True)
            page.context.close()
        browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs (default {OUT})")
    parser.add_argument("--width", type=int, default=1440, help="browser width in pixels (default 1440)")
    parser.add_argument("--home", type=Path, help="LOUPE_HOME to use (default: a fresh temporary folder)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="take only these shots (e.g. rules explain)")
    args = parser.parse_args(argv)
    names = [shot.name for shot in plan({})]
    if unknown := sorted(set(args.only or ()) - set(names)):
        parser.error(f"no shot named {', '.join(unknown)}; the shots are {', '.join(names)}")
    home = args.home or Path(tempfile.mkdtemp(prefix="loupe-screenshots-"))  # removed at the end
    os.environ["LOUPE_HOME"] = str(home)
    os.environ.pop("LOUPE_SCHEDULER", None)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    keys, problems = precompute()
    print(f"stored what the pages show in {home} ({time.monotonic() - started:.0f} s)", flush=True)
    port = _free_port()
    app = start_app(port)
    try:
        wanted = [shot for shot in shots(keys) if not args.only or shot.name in args.only]
        problems += take(f"http://127.0.0.1:{port}", wanted, args.out, args.width)
    finally:
        app.terminate()
        try:
            app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            app.kill()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
