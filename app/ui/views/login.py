"""Log in (local account) or, when configured, single sign-on. Shows no patient data."""

from __future__ import annotations

import streamlit as st

from app.ui.client import ApiError
from app.ui.common import api, end_session, show_error

st.title("RadCheck")
st.caption(
    "Report checking for chest radiographs. Research software: every flag is unverified AI output."
)

flash = st.session_state.pop("flash", None)
if flash:
    st.warning(flash)

user = st.session_state.get("user")
if user is not None and st.session_state.get("token"):
    st.success(f"Logged in as {user['name']} ({user['role']}).")
    if st.button("Log out", key="logout"):
        try:
            api().logout()
        except ApiError as err:
            if err.kind != "unauthorized":
                show_error(err, "logging out")
        end_session("You have logged out.")
        st.rerun()
    st.stop()

with st.form("login"):
    username = st.text_input("Username", key="login_username", autocomplete="username")
    password = st.text_input(
        "Password", type="password", key="login_password", autocomplete="current-password"
    )
    submitted = st.form_submit_button("Log in", type="primary")

if submitted:
    if not username or not password:
        st.error("Enter your username and password.")
    else:
        client = api()
        try:
            body = client.login(username.strip(), password)
        except ApiError as err:
            if err.kind == "unauthorized":
                st.error(f"Login refused: {err.detail}")
            elif err.kind == "locked":
                st.error(f"Account locked: {err.detail}")
            else:
                show_error(err, "logging in")
        else:
            st.session_state["token"] = body["token"]
            st.session_state["user"] = body["user"]
            st.session_state["after_login"] = True
            st.rerun()

sso = st.secrets.get("auth") if st.secrets.load_if_toml_exists() else None
if sso:
    st.divider()
    if not st.user.get("is_logged_in"):
        st.button("Log in with single sign-on", on_click=st.login)
    else:
        tokens = getattr(st.user, "tokens", {}) or {}
        id_token = tokens.get("id")
        if id_token:
            st.session_state["token"] = id_token
            try:
                me = api().me()
            except ApiError as err:
                end_session()
                show_error(err, "checking your single sign-on account")
            else:
                st.session_state["user"] = {
                    "username": me["username"],
                    "name": me["name"],
                    "role": me["role"],
                }
                st.rerun()
