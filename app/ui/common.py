"""What every dashboard page shares: the API client for this browser session, error banners,
report highlighting and flag labels. No patient data is fetched before login."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app.ui.client import ApiClient, ApiError

__all__ = [
    "AI_LABEL",
    "REASONS",
    "SEVERITY_COLOURS",
    "Highlight",
    "api",
    "end_session",
    "highlight_html",
    "require_login",
    "show_error",
]

AI_LABEL = "Unverified AI output"
SEVERITY_COLOURS = {"critical": "#f8b4b4", "warning": "#fcd9a8", "info": "#bfdbfe"}
SEVERITY_BORDER = {"critical": "#b91c1c", "warning": "#b45309", "info": "#1d4ed8"}
REASONS = {
    "false_positive": "False positive",
    "not_clinically_relevant": "Not clinically relevant",
    "already_corrected": "Already corrected",
    "other": "Other (say why)",
}
LOGIN_PAGE = "views/login.py"


def api_url() -> str:
    return os.environ.get("RADCHECK_UI__API_URL", "http://127.0.0.1:8000/api/v1")


def api() -> ApiClient:
    """The API client of this browser session (with its login token, if any)."""
    token = st.session_state.get("token")
    client: ApiClient | None = st.session_state.get("_client")
    if client is None or client.token != token:
        timeout = float(os.environ.get("RADCHECK_UI__TIMEOUT_S", "10"))
        client = ApiClient(api_url(), token=token, timeout_s=timeout)
        st.session_state["_client"] = client
    return client


def end_session(message: str | None = None) -> None:
    for key in ("token", "user", "_client"):
        st.session_state.pop(key, None)
    if message:
        st.session_state["flash"] = message


def require_login() -> dict[str, Any]:
    """The logged-in user, or back to the login page (nothing else of the page runs)."""
    user: dict[str, Any] | None = st.session_state.get("user")
    if user is None or not st.session_state.get("token"):
        deep_link = st.query_params.get("study")
        if deep_link:  # back to this study after login
            st.session_state["study_uid"] = deep_link
        st.switch_page(LOGIN_PAGE)
        st.stop()
    assert user is not None
    return user


def show_error(err: ApiError, doing: str) -> None:
    """A clear banner for a failed call; an ended session goes back to the login page."""
    if err.kind == "unauthorized":
        end_session(f"Your session has ended ({err.detail}) Log in again to continue.")
        st.switch_page(LOGIN_PAGE)
        st.stop()
    elif err.kind == "forbidden":
        st.error(f"Not allowed: {doing}. {err.detail} Ask an administrator if you need access.")
    elif err.kind == "not_found":
        st.warning(f"Not found while {doing}: {err.detail}")
    elif err.kind == "unreachable":
        st.error(
            f"Cannot reach RadCheck while {doing}. {err.detail} Check that `radcheck serve` is "
            "running, then reload."
        )
    elif err.kind == "timeout":
        st.error(f"RadCheck took too long while {doing}. {err.detail} Try again in a moment.")
    elif err.kind in ("invalid", "locked"):
        st.error(f"Could not complete {doing}: {err.detail}")
    else:
        st.error(
            f"RadCheck failed while {doing} (HTTP {err.status}, request id {err.request_id}). "
            "It was logged; try again, or report the request id."
        )


@dataclass(frozen=True)
class Highlight:
    start: int
    end: int
    severity: str
    label: str
    counterpart: bool = False


def highlight_html(text: str, highlights: Iterable[Highlight]) -> str:
    """``text`` as HTML with each span marked (colour by severity; counterparts outlined)."""
    marks = sorted(
        (h for h in highlights if 0 <= h.start < h.end <= len(text)), key=lambda h: h.start
    )
    out: list[str] = []
    pos = 0
    for h in marks:
        if h.start < pos:  # overlapping spans: keep the first
            continue
        out.append(html.escape(text[pos : h.start]))
        colour = SEVERITY_COLOURS.get(h.severity, "#e5e7eb")
        border = SEVERITY_BORDER.get(h.severity, "#6b7280")
        style = (
            f"background:transparent;border:2px dashed {border};padding:0 2px;border-radius:3px"
            if h.counterpart
            else f"background:{colour};border-bottom:3px solid {border};padding:0 2px;border-radius:3px"
        )
        css = "rc-counterpart" if h.counterpart else f"rc-flag rc-{html.escape(h.severity)}"
        out.append(
            f'<mark class="{css}" style="{style}" title="{html.escape(h.label)}">'
            f"{html.escape(text[h.start : h.end])}</mark>"
        )
        pos = h.end
    out.append(html.escape(text[pos:]))
    return "".join(out).replace("\n", "<br>")
