"""The OpenAI-compatible model server on loopback, driven by the ``openai`` backend."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from app.model_server import create_model_server
from medvlm.runtime import NullRuntime, OpenAIRuntime, RemoteModelError
from tests.app.model_server_support import ModelServerThread
from tests.medvlm.test_runtime_helpers import (
    network_guard,
    offline_guard,
    tiny_checkpoint,
    tiny_runtime,
)

__all__ = ["offline_guard", "tiny_checkpoint", "tiny_runtime"]

INSTRUCTION = "Provide a description of the findings in the radiology image."


@pytest.fixture(scope="module")
def server_url(tiny_runtime: Any) -> Iterator[str]:
    with network_guard(), ModelServerThread(tiny_runtime) as url:
        yield url


def test_openai_backend_against_server_matches_in_process(
    server_url: str, tiny_runtime: Any
) -> None:
    image = np.random.default_rng(7).integers(0, 256, size=(640, 520), dtype=np.uint8)
    local = tiny_runtime.generate(image, INSTRUCTION, max_new_tokens=12)
    remote_runtime = OpenAIRuntime(f"{server_url}/v1", tiny_runtime.model_id, timeout_s=60)
    remote = remote_runtime.generate(image, INSTRUCTION, max_new_tokens=12)
    assert remote.text == local.text and remote.text
    assert (remote.prompt_tokens, remote.output_tokens) == (local.prompt_tokens, 12)
    assert remote.visual_tokens == local.visual_tokens == 1369
    prov = remote_runtime.provenance()
    assert prov["backend"] == "openai"
    assert prov["weights_sha256"] == tiny_runtime.provenance()["weights_sha256"]
    assert prov["prompt_template_id"] == "vicuna_v1"
    remote_runtime.close()


def test_models_health_and_ai_label(server_url: str, tiny_runtime: Any) -> None:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok", "model": tiny_runtime.model_id}
        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == [tiny_runtime.model_id]
        body = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 2},
        ).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["radcheck"]["unverified_ai_output"] is True
    assert body["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([{"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}], "data URL"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}], "base64"),
        (
            [
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64," + base64.b64encode(b"no").decode()
                    },
                }
            ],
            "not a readable image",
        ),
    ],
)
def test_bad_images_are_400_with_openai_error_shape(
    server_url: str, content: list[dict[str, Any]], match: str
) -> None:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]}
        )
    assert response.status_code == 400
    assert match in response.json()["error"]["message"]


def test_wrong_model_name_is_rejected(server_url: str) -> None:
    remote = OpenAIRuntime(f"{server_url}/v1", "another-model", timeout_s=30)
    with pytest.raises(RemoteModelError, match="HTTP 400: model 'another-model' is not served"):
        remote.generate(None, "x")


def test_model_errors_are_503_not_500() -> None:
    with ModelServerThread(NullRuntime()) as url:
        remote = OpenAIRuntime(f"{url}/v1", "none", timeout_s=30)
        with pytest.raises(RemoteModelError, match="HTTP 503: no model backend is configured"):
            remote.generate(None, "x")


def test_a_system_message_is_refused_not_ignored(server_url: str) -> None:
    with httpx.Client(base_url=server_url, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "messages": [
                    {"role": "system", "content": "You are a pirate."},
                    {"role": "user", "content": "Hello?"},
                ],
                "max_tokens": 2,
            },
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "system messages are not supported" in error["message"]


API_KEY = "k" * 8 + "-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_url(tiny_runtime: Any) -> Iterator[str]:
    with network_guard(), ModelServerThread(tiny_runtime, api_key=API_KEY) as url:
        yield url


def _assert_401(response: httpx.Response, match: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert match in error["message"]
    assert API_KEY not in response.text


@pytest.mark.parametrize("path", ["/v1/models", "/docs", "/openapi.json"])
def test_with_a_key_every_route_but_health_needs_it(keyed_url: str, path: str) -> None:
    with httpx.Client(base_url=keyed_url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        _assert_401(client.get(path), "missing API key")
        _assert_401(client.get(path, headers={"Authorization": "Basic " + API_KEY}), "missing")
        wrong = {"Authorization": "Bearer " + API_KEY[:-1] + "X"}
        _assert_401(client.get(path, headers=wrong), "incorrect API key")
        right = client.get(path, headers={"Authorization": f"Bearer {API_KEY}"})
        assert right.status_code == 200


def test_openai_backend_with_the_key_gets_an_answer_without_it_a_401(
    keyed_url: str, tiny_runtime: Any
) -> None:
    image = np.zeros((64, 48), dtype=np.uint8)
    local = tiny_runtime.generate(image, INSTRUCTION, max_new_tokens=3)
    good = OpenAIRuntime(f"{keyed_url}/v1", tiny_runtime.model_id, api_key=API_KEY, timeout_s=60)
    assert good.generate(image, INSTRUCTION, max_new_tokens=3).text == local.text
    good.close()
    for key, match in ((None, "HTTP 401: missing API key"), ("wrong" * 5, "HTTP 401: incorrect")):
        bad = OpenAIRuntime(f"{keyed_url}/v1", tiny_runtime.model_id, api_key=key, timeout_s=60)
        with pytest.raises(RemoteModelError, match=match):
            bad.generate(image, INSTRUCTION, max_new_tokens=3)
        bad.close()


def test_a_short_key_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="fewer than 16"):
        create_model_server(NullRuntime(), api_key="short")


def test_served_model_name_is_listed_and_accepted(tiny_runtime: Any) -> None:
    """Workers ask for RADCHECK_MODEL__OPENAI_MODEL (default 'llava-rad'): the server answers to it."""
    from fastapi.testclient import TestClient

    with TestClient(create_model_server(tiny_runtime, served_model_name="llava-rad")) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["llava-rad"]
        body = {"model": "llava-rad", "messages": [{"role": "user", "content": "Findings?"}]}
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        body["model"] = "another-model"
        assert client.post("/v1/chat/completions", json=body).status_code == 400
