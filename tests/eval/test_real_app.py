"""Both runners through the real RadCheck API (``app.api``, SQLite, a real API key): the HTTP
runner's predictions equal the in-process runner's. Only this test imports ``app``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from eval.metrics import BootstrapConfig
from eval.pipeline import PREDICTIONS_FILE, score_dataset
from eval.runners import HttpRunner, InProcessRunner
from tests.app.conftest import make_settings
from tests.eval.test_score import dataset  # noqa: F401  (module-scoped fixture)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = make_settings(tmp_path / "data", in_process=False)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="eval", role="integration")
    db.dispose()
    with TestClient(create_app(settings, run_worker=False)) as client:
        yield client, key


def test_http_runner_through_the_real_api_equals_in_process(
    dataset: Path,  # noqa: F811
    tmp_path: Path,
    api: tuple[TestClient, str],
) -> None:
    client, key = api
    boot = BootstrapConfig(50)
    local = score_dataset(dataset, tmp_path / "local", InProcessRunner(), bootstrap=boot,
                          progress=False, report=False)  # fmt: skip
    remote = score_dataset(
        dataset,
        tmp_path / "http",
        HttpRunner("http://testserver", key, client=client),
        bootstrap=boot,
        progress=False,
        report=False,
    )
    assert remote.stats.computed > 0
    assert (tmp_path / "http" / PREDICTIONS_FILE).read_bytes() == (
        tmp_path / "local" / PREDICTIONS_FILE
    ).read_bytes()
    assert remote.metrics["simple"] == local.metrics["simple"]
    assert remote.metrics["complex"] == local.metrics["complex"]
