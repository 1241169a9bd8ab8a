"""The optional access gate (views/access.py): the policy without Streamlit, then the gate in the
real app through AppTest (token and OIDC modes lock every page; open mode shows them). The app is
opened on a malformed share link, whose page answers at once, so no registry loads."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from typing import Any
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from views.access import MIN_TOKEN_LENGTH, TOKEN_ENV, AccessConfigError, AccessPolicy, access_policy

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "lab-token-4f9c2a7e1b"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32, "client_id": "loupe",
        "client_secret": "x", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}


# -- the policy --------------------------------------------------------------------------------
@pytest.mark.parametrize(("has_auth", "environ", "mode"), [
    (False, {}, "open"),
    (False, {TOKEN_ENV: "   "}, "open"),
    (False, {TOKEN_ENV: TOKEN}, "token"),
    (True, {}, "oidc"),
    (True, {TOKEN_ENV: TOKEN}, "oidc"),  # OIDC wins when both are configured
])
def test_policy_mode_follows_the_configuration(has_auth: bool, environ: dict, mode: str) -> None:
    assert access_policy(has_auth, environ).mode == mode


def test_a_short_token_keeps_loupe_closed_with_the_reason() -> None:
    with pytest.raises(AccessConfigError, match=f"{TOKEN_ENV} has 5 characters; use at least {MIN_TOKEN_LENGTH}"):
        access_policy(False, {TOKEN_ENV: "hunter"[:5]})


@pytest.mark.parametrize(("given", "ok"), [
    (TOKEN, True), (f"  {TOKEN} ", True), (TOKEN[:-1], False), (TOKEN + "x", False), (TOKEN.upper(), False),
    ("", False), (None, False), (123, False),
])
def test_token_check(given: object, ok: bool) -> None:
    assert access_policy(False, {TOKEN_ENV: TOKEN}).accepts(given) is ok


def test_open_and_oidc_policies_accept_no_token_and_the_token_is_not_in_repr() -> None:
    assert not AccessPolicy("open").accepts(TOKEN) and not AccessPolicy("oidc").accepts(TOKEN)
    assert TOKEN not in repr(access_policy(False, {TOKEN_ENV: TOKEN}))


def test_committed_server_config_binds_to_localhost() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


# -- the gate in the app -----------------------------------------------------------------------
def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "not-a-key"
    return at


def _page_shown(at: AppTest) -> bool:
    return any("Run not found" in e.value for e in at.error)


def test_open_mode_shows_the_page_without_a_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    at = _app().run()
    assert not at.exception and _page_shown(at) and not at.text_input and not at.button


def test_token_gate_locks_until_the_right_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at = _app().run()
    assert not at.exception and not _page_shown(at)
    assert at.text_input[0].label == "Access token"
    at.text_input[0].input("guess-guess-guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["That access token is not right."] and not _page_shown(at)
    at.text_input[0].input(TOKEN)
    at.button[0].click().run()
    assert not at.exception and _page_shown(at) and not at.text_input
    at.run()  # granted once per session: later reruns need no token
    assert _page_shown(at) and not at.text_input


def test_misconfigured_token_closes_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "short")
    at = _app().run()
    assert not at.exception and not _page_shown(at)
    assert "Loupe is closed" in at.error[0].value and "at least 16" in at.error[0].value


def test_oidc_gate_asks_for_login_then_shows_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    at = _app()
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and not _page_shown(at)
    assert [b.label for b in at.button] == ["Log in"]
    at.user = {"is_logged_in": True, "email": "ada@lab.example"}
    at.run()
    assert not at.exception and _page_shown(at)
    assert "Signed in as ada@lab.example" in [c.value for c in at.sidebar.caption]
    assert [b.label for b in at.sidebar.button] == ["Log out"]


PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))


def test_every_page_file_is_routed_by_app_py() -> None:
    routed = re.findall(r'st\.Page\("pages/(\w+\.py)"', (ROOT / "app.py").read_text())
    assert sorted(routed) == PAGES and len(PAGES) == 9


@pytest.mark.parametrize("page", PAGES)
def test_a_page_path_does_not_open_past_the_gate(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for a page directly (as the URL /home does) still gets the gate, for every page. On a
    fresh server Streamlit serves the pages/ folder as a multipage-v1 app until a session has run
    app.py's st.navigation, so a page path runs the page without app.py and its gate; AppTest starts
    every run that way (it resets Streamlit's pages-directory flag), so this is the fresh server's
    first request, and only the page's own require_access() call can stop it."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "not-a-key"  # pages that read a link answer at once instead of loading registries
    at.switch_page(f"pages/{page}").run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Access token"]
    assert not _page_shown(at) and not at.dataframe and not at.metric and not at.title[1:]
    assert [t.value for t in at.title] == ["Loupe"]


def _chromium(playwright: Any) -> Any:
    """Debian's headless Chromium, launched as every browser test here launches it."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def _fresh_server(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """A new `streamlit run app.py` on a free port, once it answers its health check: (process, port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the Streamlit server did not become healthy within 90 s")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium installed (apt-get install chromium)")
def test_every_route_of_a_fresh_server_gets_the_gate(tmp_path: Path) -> None:
    """The same as above on real servers in real Chromium: for each page, a fresh `streamlit run
    app.py` whose first request is that page's path shows the token form and nothing of the page."""
    playwright = pytest.importorskip("playwright.sync_api")
    env = {**os.environ, "PYTHONPATH": str(ROOT), TOKEN_ENV: TOKEN, "LOUPE_HOME": str(tmp_path)}
    routes = ["home" if p == "home.py" else p.removesuffix(".py") for p in PAGES]
    with playwright.sync_playwright() as p:
        browser = _chromium(p)
        try:
            for route in routes:
                server, port = _fresh_server(env)
                try:
                    page = browser.new_page()
                    page.goto(f"http://127.0.0.1:{port}/{route}")
                    page.get_by_label("Access token").first.wait_for(timeout=60_000)
                    page.wait_for_timeout(1000)  # a page that ran past the gate would have drawn by now
                    shown = page.locator('[data-testid="stMain"]').inner_text()
                    titles = page.locator("h1").all_inner_texts()
                    page.close()
                finally:
                    server.terminate()
                    server.wait(timeout=60)
                assert titles == ["Loupe"], (route, titles)
                assert "Access token" in shown and "Run not found" not in shown, (route, shown[:500])
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium installed (apt-get install chromium)")
def test_a_share_link_as_a_fresh_servers_first_request_gets_the_app_router(tmp_path: Path) -> None:
    """Without the gate's hand-over to app.py, a fresh server's first request for a page path ran
    the page as Streamlit's multipage-v1 app: a sidebar of file names with an "app" entry, and no
    wide layout. With it, the link's page is served by app.py's router and keeps its query string."""
    playwright = pytest.importorskip("playwright.sync_api")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_HOME": str(tmp_path)}
    env.pop(TOKEN_ENV, None)
    server, port = _fresh_server(env)
    try:
        with playwright.sync_playwright() as p:
            browser = _chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/sanity?run=not-a-key")
                page.get_by_text("Run not found").first.wait_for(timeout=60_000)
                nav = [t.split("\n")[-1] for t in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]
                url = page.url
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert nav == ["Home", "Explain", "Compare", "Pathways", "Rules", "Embeddings", "Sanity check", "Batch",
                   "Registry"], nav
    assert url.endswith("/sanity?run=not-a-key"), url
