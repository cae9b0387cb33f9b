"""Accounts page (admin): create coach, researcher and candidate accounts, reset passwords, list who exists."""

import streamlit as st
from pymongo.errors import PyMongoError

from pipeline import auth
from pipeline.safe_text import md
from ui.navigation import run_inside_app
from ui.session import error_text, get_store, require_user

run_inside_app()

st.title("Accounts")
st.write("Coaches and researchers see the sessions of the candidates assigned to them (researchers also tune "
         "thresholds in the sidebar and on the Research page); candidates see only their own sessions.")
require_user(("admin",))
db = get_store().db
if db is None:
    st.warning("Accounts cannot be managed while the database is unreachable.")
    st.stop()

try:
    users = auth.list_users(db)
except PyMongoError as exc:
    st.error(f"Could not read accounts: {error_text(exc)}")
    st.stop()
coaches = [u["username"] for u in users if u.get("role") in auth.ASSIGNEE_ROLES]

st.subheader("New account", anchor=False)
with st.form("new_account", clear_on_submit=True):
    role = st.radio("Role", ["candidate", "coach", "researcher", "admin"], horizontal=True, key="acct_role")
    username = st.text_input("Username (3-64 of a-z 0-9 . _ -)", key="acct_username", max_chars=64)
    display_name = st.text_input("Display name", key="acct_display", max_chars=200)
    coach = st.selectbox("Coach or researcher (candidates only)", [""] + coaches, key="acct_coach",
                         format_func=lambda c: c or "— none —")
    password = st.text_input("Initial password", type="password", key="acct_password", max_chars=auth.MAX_PASSWORD)
    created = st.form_submit_button("Create account", type="primary", key="acct_create")
if created:
    try:
        user = auth.create_user(db, username, password, role, coach=coach or None, display_name=display_name or None)
    except (auth.AuthError, PyMongoError) as exc:
        st.error(error_text(exc))
    else:
        st.success(f"Created {md(user['role'])} {md(user['username'])}.")
        users = auth.list_users(db)

st.subheader("Reset a password", anchor=False)
with st.form("reset_password", clear_on_submit=True):
    who = st.selectbox("Account", [u["username"] for u in users], key="reset_user")
    new_password = st.text_input("New password", type="password", key="reset_password", max_chars=auth.MAX_PASSWORD)
    reset = st.form_submit_button("Reset password", key="reset_submit")
if reset and who:
    try:
        auth.set_password(db, who, new_password)
    except (auth.AuthError, PyMongoError) as exc:
        st.error(error_text(exc))
    else:
        st.success(f"Password of {md(who)} replaced; its earlier sign-ins have ended.")

st.subheader("All accounts", anchor=False)
st.dataframe(users, hide_index=True, width="stretch")
