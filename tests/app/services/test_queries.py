"""Study list and study detail cost a small number of SQL statements, whatever the data's size.

Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the app's engine,
on the request's threads only (the batched read-audit writer and the in-process worker run apart).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.api import create_app
from app.settings import Settings
from tests.app.api_support import API, REPORT, synthetic_study, upload, wait_for_check
from tests.app.conftest import auth

LIST_MAX = 3  # authentication + the page (+ the total when the page is past the end)
DETAIL_MAX = 6  # auth + study/series/instances + reports + checks + flags/reviews + groundings


BACKGROUND = ("audit-reads", "radcheck-worker", "lease-")
"""Threads that are not the request: the read-audit writer, the in-process worker, its lease."""


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not threading.current_thread().name.startswith(BACKGROUND):
            self.statements.append(statement)

    def count(self, client: TestClient, url: str, key: str) -> int:
        self.statements.clear()
        response = client.get(url, headers=auth(key))
        assert response.status_code == 200, response.text
        return sum(
            1 for s in self.statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))
        )


@pytest.fixture
def counted(
    settings: Settings, keys: dict[str, str]
) -> Iterator[tuple[TestClient, StatementCounter]]:
    app = create_app(settings)
    counter = StatementCounter()
    event.listen(app.state.db.engine, "before_cursor_execute", counter)
    with TestClient(app) as client:
        yield client, counter


def test_list_and_detail_statements_are_bounded(
    counted: tuple[TestClient, StatementCounter],
    keys: dict[str, str],
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    client, counter = counted
    integ, rad = keys["integration"], keys["radiologist"]
    paths = synthetic_study(tmp_path, rg1_path, 4)
    assert upload(client, integ, paths[0]).status_code == 201
    small = "1.2.826.0.1.3680043.10.543.1"
    small_counts = (
        counter.count(client, f"{API}/studies", integ),
        counter.count(client, f"{API}/studies/{small}", integ),
    )
    # A bigger world: more studies, a study with two report versions, two checks, flags, a review.
    assert upload(client, integ, *paths[1:]).status_code == 201
    big = "1.2.826.0.1.3680043.10.543.2"
    for _ in range(2):
        client.post(f"{API}/studies/{big}/reports", json=REPORT, headers=auth(integ))
        job = client.post(f"{API}/studies/{big}/checks", headers=auth(integ)).json()
        done = wait_for_check(client, integ, job["id"])
        assert done["flags"]
    flag = done["flags"][0]["id"]
    review = {"decision": "accepted"}
    assert (
        client.post(f"{API}/flags/{flag}/reviews", json=review, headers=auth(rad)).status_code
        == 201
    )
    big_counts = (
        counter.count(client, f"{API}/studies", integ),
        counter.count(client, f"{API}/studies/{big}", integ),
    )
    assert small_counts[0] <= LIST_MAX and small_counts[1] <= DETAIL_MAX, small_counts
    assert big_counts[0] <= LIST_MAX and big_counts[1] <= DETAIL_MAX, big_counts
    # no statement per study, image, report, check or flag (the small study has no check yet, so
    # its detail skips the flags' and groundings' queries)
    assert big_counts[0] == small_counts[0] and big_counts[1] <= small_counts[1] + 2
    page_past_end = counter.count(client, f"{API}/studies?offset=100", integ)
    assert page_past_end <= LIST_MAX
    detail = client.get(f"{API}/studies/{big}", headers=auth(integ)).json()
    assert [r["version"] for r in detail["reports"]] == [1, 2]
    assert len(detail["checks"]) == 2
    assert any(f["reviews"] for c in detail["checks"] for f in c["flags"])
    listing = client.get(f"{API}/studies", headers=auth(integ)).json()
    row = next(i for i in listing["items"] if i["study_instance_uid"] == big)
    assert listing["total"] == 4
    assert row["report_versions"] == 2 and row["images"] == 1
    assert row["latest_check_status"] == "succeeded"
    assert row["open_flags"] == len(done["flags"]) - 1
