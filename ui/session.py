"""Shared Streamlit session glue: the cached store and sidecar, sign-in, and safe error text."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import auth
from pipeline.questions import sync_to_db
from pipeline.safe_text import md
from pipeline.settings import get_settings
from pipeline.store import Store, db_error_message

if TYPE_CHECKING:
    from sidecar.supervisor import Sidecar

log = logging.getLogger(__name__)
TOKEN_KEY = "auth_token"  # st.session_state key holding this browser session's sign-in token
CLIENT_KEY = "auth_client"  # st.session_state key: this browser session's random id for the sign-in back-off


@st.cache_resource(show_spinner="Connecting to the database…")
def get_store() -> Store:
    # One per server process: the writer and its journal are shared by all browser sessions.
    store = Store(get_settings())
    if store.db is not None:
        try:  # MOCKAI_ADMIN_PASSWORD with no admin yet: create user "admin" at start
            auth.ensure_admin(store.db, store.settings)
            sync_to_db(store.db)  # the shipped question sets, so coaches can query them
        except PyMongoError as exc:
            log.warning("could not prepare the database: %s", exc)
    return store


# --------------------------------------------------------------------------- sign-in


def current_user() -> dict[str, Any] | None:
    """The signed-in user, re-checked against the database on every run (so expiry applies)."""
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    db = get_store().db
    if db is None:
        return None
    try:
        user = auth.user_for_token(db, token)
    except PyMongoError:
        return None
    if user is None:
        st.session_state.pop(TOKEN_KEY, None)  # expired or signed out elsewhere
    return user


def require_user(roles: Sequence[str] = auth.ROLES) -> dict[str, Any]:
    """The signed-in user when their role is in ``roles``; otherwise a sign-in form (or a refusal) and st.stop()."""
    store = get_store()
    db = store.db
    if db is None:
        st.warning("Signing in needs the database, which is unreachable right now.", icon=":material/cloud_off:")
        st.stop()
    user = current_user()
    if user is not None:
        if user.get("role") not in roles:
            st.error(f"This page is for {' or '.join(roles)} accounts; you are signed in as "
                     f"{md(user.get('username'))} ({md(user.get('role'))}).", icon=":material/lock:")
            st.stop()
        return user
    try:
        has_admin = auth.ensure_admin(db, store.settings)
    except PyMongoError as exc:
        st.error(f"Could not read accounts: {error_text(exc)}")
        st.stop()
    if has_admin:
        _sign_in_form(db)
    else:
        _first_run_form(db)
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _signed_in(db: Any, user: dict[str, Any]) -> None:
    st.session_state[TOKEN_KEY] = auth.start_login(db, user, get_settings())
    st.rerun()


def client_key() -> str:
    """Who is signing in, for the per-client back-off of pipeline.auth.verify_password.

    The address from ``MOCKAI_LOGIN_CLIENT_HEADER`` when a trusted reverse proxy sets it, else
    ``st.context.ip_address`` (None on loopback, where every local user shares one address),
    else this browser session: a random id kept in its session state, which lives exactly as
    long as Streamlit's own session (a reload starts a new one).
    """
    header = get_settings().access.login_client_header
    header_value = st.context.headers.get(header) if header else None
    if CLIENT_KEY not in st.session_state:
        st.session_state[CLIENT_KEY] = secrets.token_hex(16)
    return auth.client_key(header_value, st.context.ip_address, st.session_state[CLIENT_KEY])


def _sign_in_form(db: Any) -> None:
    st.info("Sign in to see this page.", icon=":material/lock:")
    with st.form("sign_in", clear_on_submit=True):
        username = st.text_input("Username", key="sign_in_username", max_chars=64)
        password = st.text_input("Password", type="password", key="sign_in_password", max_chars=auth.MAX_PASSWORD)
        submitted = st.form_submit_button("Sign in", type="primary", key="sign_in_submit")
    if submitted:
        try:
            user = auth.verify_password(db, username, password, get_settings(), client=client_key())
        except auth.AuthError as exc:
            st.error(md(exc), icon=":material/error:")
            return
        except PyMongoError as exc:
            st.error(f"Could not sign in: {error_text(exc)}")
            return
        _signed_in(db, user)


def _first_run_form(db: Any) -> None:
    st.info("First run: no admin account exists yet. Create it now (or start the server with "
            "MOCKAI_ADMIN_PASSWORD set). The admin then creates coach and candidate accounts.",
            icon=":material/admin_panel_settings:")
    st.warning("Anyone who can open this page can fill in this form and become the administrator, until an "
               "admin account exists. To avoid that, start the server with MOCKAI_ADMIN_PASSWORD set "
               f"({auth.MIN_PASSWORD} or more characters): it creates user 'admin' at start and this form "
               "never appears.", icon=":material/warning:")
    with st.form("first_admin"):
        username = st.text_input("Admin username", value="admin", key="first_admin_username", max_chars=64)
        password = st.text_input("Password", type="password", key="first_admin_password", max_chars=auth.MAX_PASSWORD)
        again = st.text_input("Password again", type="password", key="first_admin_again", max_chars=auth.MAX_PASSWORD)
        submitted = st.form_submit_button("Create admin account", type="primary", key="first_admin_submit")
    if submitted:
        if password != again:
            st.error("The two passwords differ.")
            return
        if auth.has_admin(db):  # someone else was quicker: sign in instead
            st.rerun()
        try:
            user = auth.create_user(db, username, password, "admin", display_name="Administrator")
        except (auth.AuthError, PyMongoError) as exc:
            st.error(error_text(exc))
            return
        _signed_in(db, user)


def show_account() -> None:
    """Sidebar: who is signed in, and a sign-out button."""
    user = current_user()
    if user is None:
        return
    st.caption(f":material/person: Signed in as **{md(user['username'])}** ({md(user['role'])})")
    if st.button("Sign out", key="sign_out", icon=":material/logout:"):
        db = get_store().db
        if db is not None:
            try:
                auth.sign_out(db, st.session_state.get(TOKEN_KEY))
            except PyMongoError as exc:
                log.warning("sign-out could not delete the token: %s", exc)
        st.session_state.pop(TOKEN_KEY, None)
        st.rerun()


def error_text(exc: BaseException) -> str:
    """What a user may read about ``exc``: a database failure in plain words (the details,
    hosts and ports included, go to the server log only), anything else escaped."""
    if isinstance(exc, PyMongoError):
        log.warning("database error (shown to the user as a plain message): %s", exc)
        return db_error_message(exc)
    return md(exc)


@st.cache_resource(show_spinner=False)
def get_sidecar() -> Sidecar | None:
    """The sidecar, started once per server and shared by every session (models stay warm)."""
    from pipeline.answer_audio import AudioSpool
    from pipeline.capacity import node_id
    from sidecar.recovery import OrphanSweeper
    from sidecar.supervisor import Sidecar  # noqa: F811 (imported here so pages start without it)

    settings = get_settings()
    if not settings.sidecar.enabled:
        return None
    store = get_store()
    node = node_id(settings.capacity, int(st.get_option("server.port") or 8501))
    car = Sidecar(settings, store=True)
    car.spool = AudioSpool(store.writer.insert, node)  # another node can finish an answer if this one dies
    car.start()
    OrphanSweeper(lambda: store.db, car, node, settings.sidecar.orphan_answer_seconds,
                  interval=min(10.0, settings.sidecar.orphan_answer_seconds / 3)).start()
    return car
