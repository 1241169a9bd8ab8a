"""Optional access gate for a Loupe shared by a lab (issue #9).

The mode comes from configuration only, checked in this order:

* ``oidc``: ``.streamlit/secrets.toml`` has an ``[auth]`` section (``redirect_uri`` ending in
  ``/oauth2callback``, ``cookie_secret``, and a provider's ``client_id``, ``client_secret`` and
  ``server_metadata_url``). Users log in through Streamlit's built-in OpenID Connect flow
  (``st.login`` / ``st.user``); it needs Authlib, pinned in requirements.txt.
* ``token``: ``LOUPE_ACCESS_TOKEN`` is set. Each browser session asks for it once; the comparison
  is :func:`hmac.compare_digest` (constant time), and only "granted" is kept in the session, never
  the token. Tokens shorter than :data:`MIN_TOKEN_LENGTH` are refused (the app stays closed and
  says why), because a short token can be guessed.
* ``open``: neither is configured; there is no gate. The committed ``.streamlit/config.toml`` binds
  the server to 127.0.0.1, so an open Loupe is reachable only from its own machine.

:func:`access_policy` and :class:`AccessPolicy` hold the decisions and are tested without
Streamlit; :func:`require_access` is the layout that app.py calls before any page runs, and that
every page in ``pages/`` calls first as well. The second call is what holds on a fresh server:
Streamlit serves a folder named ``pages/`` as a multipage-v1 app until a session has run app.py
(whose ``st.navigation`` turns that off), so the first request for a page path (``/explain?run=…``)
runs that page without app.py: without its sidebar, page titles or wide layout. The gate therefore
first hands such a run to app.py's router (:func:`_route_through_app`). Inside app.py's router the
page's call returns at once.
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import streamlit as st

TOKEN_ENV = "LOUPE_ACCESS_TOKEN"
MIN_TOKEN_LENGTH = 16
_GRANTED = "_loupe_access_granted"
_ROUTED = "_loupe_routed_through_app"
Mode = Literal["open", "oidc", "token"]


class AccessConfigError(ValueError):
    """The access configuration is unsafe or incomplete; the message says how to fix it."""


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use this Loupe: everyone (``open``), OIDC-logged-in users, or token holders."""

    mode: Mode
    token: str | None = field(default=None, repr=False)

    def accepts(self, given: object) -> bool:
        """Whether ``given`` is the access token (constant-time comparison; False in other modes)."""
        if self.mode != "token" or self.token is None or not isinstance(given, str):
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


def access_policy(has_auth_section: bool, environ: Mapping[str, str]) -> AccessPolicy:
    """The policy from the configuration: OIDC when secrets have ``[auth]``, else a token when
    ``LOUPE_ACCESS_TOKEN`` is set, else open. Raises :class:`AccessConfigError` for a token that
    is too short to be safe."""
    if has_auth_section:
        return AccessPolicy("oidc")
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        return AccessPolicy("open")
    if len(token) < MIN_TOKEN_LENGTH:
        raise AccessConfigError(
            f"{TOKEN_ENV} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH}, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    return AccessPolicy("token", token)


def _has_auth_section() -> bool:
    """Whether Streamlit's secrets define ``[auth]`` (False when there is no secrets file)."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:
        return False


def _lock(gate: Callable[[], None]) -> NoReturn:
    """Serve ``gate`` as the app's only page and stop. Registering it through ``st.navigation``
    matters: a script that stops before ``st.navigation`` makes Streamlit fall back to listing and
    serving the ``pages/`` folder directly. Here every URL path lands on the gate, and the real pages
    are not registered until access is granted (called from a page that multipage v1 ran, this
    navigation also ends v1 for the server)."""
    st.navigation([st.Page(gate, title="Loupe", url_path="access", default=True)], position="hidden").run()
    st.stop()


def _login() -> None:
    st.title("Loupe")
    st.info("This Loupe is shared by a lab: log in to continue.")
    st.button("Log in", on_click=st.login, type="primary", key="loupe_login")


def _token_form(policy: AccessPolicy) -> None:
    st.title("Loupe")
    with st.form("loupe_access"):
        given = st.text_input("Access token", type="password", help=f"Ask whoever runs this Loupe ({TOKEN_ENV}).")
        entered = st.form_submit_button("Enter", type="primary")
    if entered:
        if policy.accepts(given):
            st.session_state[_GRANTED] = True
            st.rerun()
        st.error("That access token is not right.")


def _route_through_app() -> None:
    """A page run by Streamlit's multipage-v1 mode (a fresh process whose first request named a
    page) is run again through app.py: the mode is turned off for the process, as app.py's
    ``st.navigation`` would, and the rerun keeps the URL, so the router serves the same page. Once
    per session at most: that first run has no widget events a rerun could drop (Streamlit's
    AppTest turns the mode back on before every run; its later runs stay as they are)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get(_ROUTED):
        st.session_state[_ROUTED] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def require_access(router: bool = False) -> None:
    """Return when this session may use Loupe; otherwise serve the login, token or "closed" page
    in place of every page and stop the run. app.py calls it (``router=True``) before
    ``st.navigation``, and every page calls it first (see the module docstring); it renders nothing
    when access is granted. A page's call hands a run that bypassed app.py to app.py."""
    if not router:
        _route_through_app()
    try:
        policy = access_policy(_has_auth_section(), os.environ)
    except AccessConfigError as err:
        message = f"Loupe is closed: {err}"

        def closed() -> None:
            st.error(message)

        _lock(closed)
    if policy.mode == "oidc" and not st.user.is_logged_in:
        _lock(_login)
    elif policy.mode == "token" and not st.session_state.get(_GRANTED):
        _lock(lambda: _token_form(policy))


def account_menu() -> None:
    """With a login (OIDC): who is signed in, and "Log out", in the sidebar (app.py, once per run)."""
    if _has_auth_section() and st.user.is_logged_in:
        st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
        st.sidebar.button("Log out", on_click=st.logout, key="loupe_logout")
