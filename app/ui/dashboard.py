"""RadCheck's dashboard for radiologists (Streamlit). Run it with ``radcheck ui`` or ``radcheck serve``.

It talks to the RadCheck API only (``app.ui.client``); RADCHECK_UI__API_URL says where that is.
Every page but the login page needs a login (``require_login``) and fetches nothing before it.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import app.ui.common  # noqa: F401 - importable when installed or with PYTHONPATH set
except ModuleNotFoundError:  # run straight from a checkout: the repository root is two levels up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st

st.set_page_config(page_title="RadCheck", layout="wide", initial_sidebar_state="expanded")

logged_in = bool(st.session_state.get("token")) and st.session_state.get("user") is not None
worklist = st.Page("views/worklist.py", title="Worklist", url_path="worklist", default=logged_in)
study = st.Page("views/study.py", title="Study", url_path="study")
draft = st.Page("views/draft.py", title="Check a draft", url_path="draft")
feedback = st.Page("views/feedback.py", title="Feedback", url_path="feedback")
login = st.Page("views/login.py", title="Log in / out", url_path="login", default=not logged_in)
page = st.navigation(
    [worklist, study, draft, feedback, login], position="sidebar" if logged_in else "hidden"
)
if logged_in:
    user = st.session_state["user"]
    st.sidebar.caption(f"Logged in as {user['name']} ({user['role']})")
    if st.session_state.pop("after_login", False):
        st.switch_page(study if st.session_state.get("study_uid") else worklist)
page.run()
