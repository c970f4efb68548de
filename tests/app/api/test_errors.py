"""app/api/errors.py: server-side model failures are 503, what the caller sent is 422 (issue 9)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.errors import status_for
from medvlm.checking import CheckerConfigError, CheckerInputError
from medvlm.errors import ProcessingError
from medvlm.reports import ReportInputError
from medvlm.runtime import (
    CheckpointConfigError,
    CheckpointError,
    DeviceError,
    NoModelConfiguredError,
    RemoteModelError,
)
from tests.app.conftest import auth

SERVER_SIDE = [
    RemoteModelError("http://127.0.0.1:9/v1 is unreachable"),
    CheckpointError("model.safetensors is missing"),
    CheckpointConfigError("vision_config.model_type", "expected clip_vision_model"),
    DeviceError("no CUDA device"),
    NoModelConfiguredError("the none backend cannot generate"),
    CheckerConfigError("max_grounding_calls must be >= 0"),
]


@pytest.mark.parametrize("exc", SERVER_SIDE, ids=lambda e: type(e).__name__)
def test_model_side_failures_are_503(exc: Exception) -> None:
    assert status_for(exc) == (503, "model_unavailable")


@pytest.mark.parametrize(
    "exc",
    [ReportInputError("'text' is empty"), CheckerInputError("bad"), ProcessingError("bad box")],
    ids=lambda e: type(e).__name__,
)
def test_what_the_caller_sent_stays_422(exc: Exception) -> None:
    assert status_for(exc) == (422, "invalid_input")


class _DownChecker:
    """Stands in for the checker whose model server went away (the error table is under test)."""

    def check(self, *args: Any, **kwargs: Any) -> Any:
        raise RemoteModelError("the model server at 127.0.0.1:9 refused the connection")


def test_check_report_answers_503_when_the_model_is_down(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = {"findings": "No pneumothorax.", "impression": "Normal chest."}
    integ = auth(keys["integration"])
    assert client.post("/api/v1/check-report", json=body, headers=integ).status_code == 200
    client.app.state.text_checker = _DownChecker()  # type: ignore[attr-defined]
    response = client.post("/api/v1/check-report", json=body, headers=integ)
    assert response.status_code == 503
    assert response.json()["type"] == "model_unavailable"
    assert "refused the connection" in response.json()["detail"]
    assert response.json()["request_id"]
