"""The dashboard in a real headless Chromium (Debian's, driven by Playwright through
``executable_path``), against `radcheck serve` with the dashboard it starts by default.

Set RADCHECK_TEST_SCREENSHOTS=docs to refresh the screenshots the README shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.app.ui.conftest import PASSWORD, Stack, start_stack

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("RADCHECK_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("RADCHECK_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium is required at {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    yield from start_stack(tmp_path_factory.mktemp("e2e"), ui=True)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("RADCHECK_TEST_SCREENSHOTS")
    return Path(target) if target else tmp_path


def test_radiologist_session_in_chromium(live: Stack, shots: Path) -> None:
    radiologist_session(live, shots)


def radiologist_session(live: Stack, shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1700})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)

        def note(request: object) -> None:
            host = urlparse(getattr(request, "url", "")).hostname or ""
            if host and host not in ("127.0.0.1", "localhost"):
                outside.append(host)

        page.on("request", note)

        def settle() -> None:
            """Wait until Streamlit has finished the run (no running indicator, no stale elements)."""
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                " && document.querySelectorAll('[data-stale=\"true\"]').length === 0"
            )

        def log_in() -> None:
            page.get_by_label("Username", exact=True).fill("jdoe")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()

        # Log in; nothing about patients before that.
        page.goto(live.ui_url)
        expect(page.get_by_label("Username", exact=True)).to_be_visible()
        assert live.study_uid not in page.content()
        page.screenshot(path=str(shots / "dashboard-login.png"))
        log_in()

        # The worklist: the demo study first, with its critical flag.
        expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
        expect(page.get_by_text("Top of the list:")).to_contain_text("2 open · critical")
        settle()
        page.screenshot(path=str(shots / "dashboard-worklist.png"))
        page.get_by_role("button", name=re.compile(r"Open study")).click()

        # The study: the flagged sentence highlighted, its counterpart outlined, the image shown.
        expect(page.get_by_role("heading", name="Report, version 2")).to_be_visible()
        flagged = page.locator("mark.rc-flag.rc-critical")
        expect(flagged).to_have_text("There is a moderate left pneumothorax.")
        expect(page.locator("mark.rc-counterpart").first).to_be_visible()
        expect(page.locator(".js-plotly-plot image").first).to_be_attached()
        expect(page.get_by_text("Unverified AI output").first).to_be_visible()
        expect(page.locator(".js-plotly-plot image").first).to_be_visible()
        expect(page.get_by_role("button", name=re.compile(r"Accept flag #1"))).to_be_visible()
        settle()
        expect(page.locator(".js-plotly-plot image").first).to_be_visible()
        page.screenshot(path=str(shots / "dashboard-study.png"))

        # Accept the selected flag with one key.
        settle()
        page.get_by_role("heading", name="Image").click()  # focus the page, not an input
        page.keyboard.press("a")
        expect(page.get_by_text(re.compile(r"Saved: flag #1 accepted"))).to_be_visible()

        # Dismiss the other one with a reason (and the d key).
        settle()
        page.get_by_role("combobox", name="Dismiss reason").click()
        page.get_by_role("option", name="Not clinically relevant").click()
        expect(
            page.get_by_role("button", name=re.compile(r"Dismiss flag #2")).first
        ).to_be_visible()
        settle()
        page.get_by_role("heading", name="Image").click()
        page.keyboard.press("d")
        expect(
            page.get_by_text(re.compile(r"dismissed \(Not clinically relevant\)"))
        ).to_be_visible()

        # Reload: the session is gone from the page, so log in again; back on the same study
        # (deep link), with both decisions persisted by the backend.
        page.reload()
        expect(page.get_by_label("Username", exact=True)).to_be_visible()
        log_in()
        expect(page.get_by_role("heading", name="Report, version 2")).to_be_visible()
        expect(page.get_by_text(re.compile(r"Accepted by user:jdoe"))).to_be_visible()
        expect(
            page.get_by_text(re.compile(r"Dismissed · Not clinically relevant by user:jdoe"))
        ).to_be_visible()
        settle()
        expect(page.locator(".js-plotly-plot image").first).to_be_visible()
        page.screenshot(path=str(shots / "dashboard-decisions.png"))
        actions = live.audit("flag.")
        assert ("user:jdoe", "flag.accepted") in actions and (
            "user:jdoe",
            "flag.dismissed",
        ) in actions

        # Check a draft before signing.
        page.get_by_role("link", name="Check a draft").click()
        page.get_by_label("Findings").fill("There is a small right pleural effusion.")
        page.get_by_label("Impression").fill("Small left pleural effusion.")
        page.get_by_role("button", name=re.compile(r"Check draft")).click()
        expect(page.locator("mark.rc-flag.rc-warning")).to_have_text(
            "There is a small right pleural effusion."
        )
        settle()
        page.screenshot(path=str(shots / "dashboard-draft.png"))

        # Log out; a wrong password is refused.
        page.get_by_role("link", name="Log in / out").click()
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_text("You have logged out.")).to_be_visible()
        page.get_by_label("Username", exact=True).fill("jdoe")
        page.get_by_label("Password", exact=True).fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text(re.compile("Login refused"))).to_be_visible()
        browser.close()
    assert ("user:jdoe", "user.logout") in live.audit("user.")
    assert not outside, (
        f"the dashboard tried to reach other hosts (offline sites break): {sorted(set(outside))}"
    )
