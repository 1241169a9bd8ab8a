"""The optional access gate (views/access.py): the policy without Streamlit, then the gate in the
real app through AppTest (token and OIDC modes lock every page; open mode shows them). The app is
opened on a malformed share link, whose page answers at once, so no registry loads."""
from __future__ import annotations

import tomllib
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


def test_a_page_path_does_not_open_past_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for a page directly (as the URL /home does) still gets the gate. The page files live
    in app_pages/, not pages/: Streamlit serves a folder named pages/ as a multipage-v1 app until a
    session of a fresh server has called st.navigation, which would run a page without app.py."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("app_pages/home.py").run()
    assert not at.exception
    assert at.text_input[0].label == "Access token" and not at.dataframe and not at.metric
