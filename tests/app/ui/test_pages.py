"""Every dashboard page through Streamlit's AppTest (no browser), against a real `radcheck serve`
on loopback with a temporary SQLite database (see conftest.py): nothing is mocked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.ui.conftest import PASSWORD, Stack, free_port

DASHBOARD = str(Path(__file__).resolve().parents[3] / "app" / "ui" / "dashboard.py")


@pytest.fixture
def app_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("RADCHECK_UI__API_URL", stack.api_url)
    return stack


def new_app() -> AppTest:
    return AppTest.from_file(DASHBOARD, default_timeout=90)


def logged_in(stack: Stack, username: str = "jdoe") -> AppTest:
    body = httpx.post(
        f"{stack.api_url}/auth/login", json={"username": username, "password": PASSWORD}
    ).json()
    at = new_app()
    at.session_state["token"] = body["token"]
    at.session_state["user"] = body["user"]
    at.run()
    return at


def texts(at: AppTest) -> str:
    parts: list[str] = []
    for kind in (
        "markdown",
        "caption",
        "title",
        "subheader",
        "error",
        "warning",
        "success",
        "info",
    ):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def test_login_page_shows_no_patient_data_and_refuses_a_wrong_password(app_env: Stack) -> None:
    at = new_app()
    at.run()
    assert not at.exception
    assert at.title[0].value == "RadCheck"
    page = texts(at)
    assert app_env.study_uid not in page and "effusion" not in page
    at.text_input(key="login_username").input("jdoe")
    at.text_input(key="login_password").input("not the password")
    button(at, "Log in").click()
    at.run()
    assert any("Login refused" in e.value for e in at.error)
    assert "token" not in at.session_state
    at.text_input(key="login_password").input(PASSWORD)
    button(at, "Log in").click()
    at.run()
    assert not at.exception
    assert at.title[0].value == "Worklist"  # logged in: the worklist is the default page


def test_worklist_shows_the_demo_study_first_with_counts(app_env: Stack) -> None:
    at = logged_in(app_env)
    assert not at.exception
    assert at.title[0].value == "Worklist"
    table = at.dataframe[0].value
    assert table.iloc[0]["Study UID"] == app_env.study_uid
    assert table.iloc[0]["Top severity"] == "critical" and table.iloc[0]["Open flags"] == 2
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["With open flags"] == "1" and metrics["Open critical"] == "1"
    # Filters: accession that matches nothing; the filter survives a refresh.
    at.text_input(key="wl_accession").input("NO-SUCH-ACC")
    at.run()
    assert any("No studies match" in i.value for i in at.info)
    button(at, "Refresh (u)").click()
    at.run()
    assert at.text_input(key="wl_accession").value == "NO-SUCH-ACC"
    assert any("No studies match" in i.value for i in at.info)


def test_study_view_highlights_cards_and_saves_decisions(app_env: Stack) -> None:
    at = logged_in(app_env)
    button(at, "Open study (o)").click()
    at.run()
    assert not at.exception, at.exception
    page = texts(at)
    assert "Report, version 2" in page
    assert "RIS result status: preliminary (P)" in page
    assert (
        '<mark class="rc-flag rc-critical"' in page
        and "There is a moderate left pneumothorax.</mark>" in page
    )
    assert '<mark class="rc-counterpart"' in page and "No pneumothorax.</mark>" in page
    assert page.count("Unverified AI output") >= 3  # banner and each of the two cards
    assert "rule `text.presence.contradiction` v1.0" in page
    assert len(at.get("plotly_chart")) == 1
    assert "1841 x 1955 px" in page  # RG1 in original pixels, MONOCHROME1 rendered by the API
    # Dismiss with 'other' but no comment: refused by the API, said so, nothing shown as saved.
    at.selectbox(key="dismiss_reason").set_value("other")
    button(at, "Dismiss flag #1 (d)").click()
    at.run()
    assert any("Decision NOT saved" in e.value and "needs a comment" in e.value for e in at.error)
    assert "Saved:" not in texts(at)
    # Accept the selected (first open) flag, then dismiss the other as a false positive.
    button(at, "Accept flag #1 (a)").click()
    at.run()
    assert any("Saved: flag #" in s.value and "accepted" in s.value for s in at.success)
    at.selectbox(key="dismiss_reason").set_value("false_positive")
    button(at, "Dismiss flag #2 (d)").click()
    at.run()
    assert any("dismissed (False positive)" in s.value for s in at.success)
    page = texts(at)
    assert (
        "**Accepted** by user:jdoe" in page
        and "**Dismissed** · False positive by user:jdoe" in page
    )
    actions = app_env.audit("flag.")
    assert ("user:jdoe", "flag.accepted") in actions and ("user:jdoe", "flag.dismissed") in actions
    # Check history and earlier versions.
    assert any(e.label.startswith("Check history (2)") for e in at.expander)
    assert any("Earlier versions" in e.label for e in at.expander)


def test_draft_check_page(app_env: Stack) -> None:
    at = logged_in(app_env)
    at.switch_page("views/draft.py")
    at.run()
    at.text_area(key="draft_findings").input("There is a small right pleural effusion.")
    at.text_area(key="draft_impression").input("Small left pleural effusion.")
    button(at, "Check draft (g)").click()
    at.run()
    assert not at.exception, at.exception
    page = texts(at)
    assert '<mark class="rc-flag rc-warning"' in page and "laterality" in page
    assert "Unverified AI output" in page
    # With the demo study's header facts.
    at.text_input(key="draft_study").input(app_env.study_uid)
    button(at, "Check draft (g)").click()
    at.run()
    assert "Header facts used" in texts(at) and "'patient_sex': 'F'" in texts(at)


def test_feedback_page(app_env: Stack) -> None:
    at = logged_in(app_env)
    at.switch_page("views/feedback.py")
    at.run()
    assert not at.exception, at.exception
    rules = at.dataframe[0].value
    assert "text.laterality.findings_impression" in set(rules["Group"])
    assert len(at.get("download_button")) == 1


def test_an_ended_session_returns_to_login_with_a_banner(app_env: Stack) -> None:
    at = logged_in(app_env)
    token = at.session_state["token"]
    httpx.post(f"{app_env.api_url}/auth/logout", headers={"Authorization": f"Bearer {token}"})
    button(at, "Refresh (u)").click()
    at.run()
    assert not at.exception
    assert at.title[0].value == "RadCheck"
    assert any("Your session has ended" in w.value for w in at.warning)
    assert "token" not in at.session_state


def test_api_down_is_a_clear_banner_not_a_traceback(
    app_env: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADCHECK_UI__API_URL", f"http://127.0.0.1:{free_port()}/api/v1")
    at = new_app()
    at.run()
    at.text_input(key="login_username").input("jdoe")
    at.text_input(key="login_password").input(PASSWORD)
    button(at, "Log in").click()
    at.run()
    assert not at.exception
    assert any("Cannot reach RadCheck" in e.value and "radcheck serve" in e.value for e in at.error)


def test_an_api_that_does_not_answer_is_a_timeout_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listening socket that never answers (the kernel completes the handshake; nobody reads)."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        monkeypatch.setenv(
            "RADCHECK_UI__API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/api/v1"
        )
        monkeypatch.setenv("RADCHECK_UI__TIMEOUT_S", "0.5")
        at = new_app()
        at.run()
        at.text_input(key="login_username").input("jdoe")
        at.text_input(key="login_password").input(PASSWORD)
        button(at, "Log in").click()
        at.run()
        assert not at.exception
        assert any("took too long" in e.value and "Try again" in e.value for e in at.error)
        assert "token" not in at.session_state
    finally:
        silent.close()


def test_wrong_role_and_missing_study_banners(app_env: Stack) -> None:
    at = logged_in(app_env, "boss")
    at.session_state["study_uid"] = "1.2.3.4"
    at.switch_page("views/study.py")
    at.run()
    assert not at.exception
    assert any("Not found" in w.value and "1.2.3.4" in w.value for w in at.warning)
