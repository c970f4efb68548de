"""Runtime config, factory, device rules, the none backend and the OpenAI client's errors."""

from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from medvlm.runtime import (
    Backend,
    DeviceError,
    DType,
    NoModelConfiguredError,
    NullRuntime,
    OpenAIRuntime,
    Quantization,
    QuantizationError,
    RemoteModelError,
    RuntimeConfig,
    RuntimeConfigError,
    TransformersRuntime,
    VisionLanguageRuntime,
    build_runtime,
)
from medvlm.runtime.devices import resolve_placement
from tests.medvlm.test_runtime_helpers import offline_guard, tiny_checkpoint

__all__ = ["offline_guard", "tiny_checkpoint"]


def test_config_validation_messages() -> None:
    with pytest.raises(RuntimeConfigError, match="needs model_dir"):
        RuntimeConfig(backend=Backend.TRANSFORMERS)
    with pytest.raises(RuntimeConfigError, match="needs openai_base_url"):
        RuntimeConfig(backend="openai")  # type: ignore[arg-type]
    with pytest.raises(RuntimeConfigError, match="'float8'"):
        RuntimeConfig(dtype="float8")  # type: ignore[arg-type]
    with pytest.raises(RuntimeConfigError, match="device 'gpu0'"):
        RuntimeConfig(device="gpu0")
    with pytest.raises(RuntimeConfigError, match="budget_policy 'random'"):
        RuntimeConfig(budget_policy="random")
    config = RuntimeConfig(backend="openai", openai_base_url="http://x/v1", openai_model="m", openai_api_key="secret")  # type: ignore[arg-type]  # fmt: skip
    assert "secret" not in repr(config)


def test_factory(tiny_checkpoint: Path) -> None:
    assert build_runtime(RuntimeConfig()) is None
    local = build_runtime(
        RuntimeConfig(backend=Backend.TRANSFORMERS, model_dir=tiny_checkpoint, device="cpu")
    )
    assert isinstance(local, TransformersRuntime)
    remote = build_runtime(
        RuntimeConfig(
            backend=Backend.OPENAI, openai_base_url="http://127.0.0.1:9/v1", openai_model="m"
        )
    )
    assert isinstance(remote, OpenAIRuntime) and isinstance(remote, VisionLanguageRuntime)
    remote.close()


def test_cpu_defaults_to_float32_and_refuses_nf4() -> None:
    placement = resolve_placement("cpu", DType.AUTO, Quantization.NONE)
    assert placement.dtype == torch.float32 and placement.device.type == "cpu"
    with pytest.raises(QuantizationError, match="CUDA only"):
        resolve_placement("cpu", DType.AUTO, Quantization.NF4)


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_bf16_refused_below_compute_capability_8(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, (7, 0))
    with pytest.raises(DeviceError, match=r"compute capability >= 8\.0.*7\.0"):
        resolve_placement("cuda", DType.BFLOAT16, Quantization.NONE)
    assert resolve_placement("auto", DType.AUTO, Quantization.NONE).dtype == torch.float16
    _fake_gpu(monkeypatch, (9, 0))
    assert resolve_placement("cuda:0", DType.BFLOAT16, Quantization.NONE).dtype == torch.bfloat16


def test_nf4_needs_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    _fake_gpu(monkeypatch, (7, 0))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    with pytest.raises(QuantizationError, match="needs the bitsandbytes package"):
        resolve_placement("cuda", DType.FLOAT16, Quantization.NF4)


def test_cuda_requested_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_placement("cuda", DType.AUTO, Quantization.NONE)


def test_null_runtime_refuses_generation() -> None:
    runtime = NullRuntime()
    assert isinstance(runtime, VisionLanguageRuntime)
    with pytest.raises(NoModelConfiguredError, match="no model backend is configured"):
        runtime.generate(None, "x")


def _client(handler: Any) -> OpenAIRuntime:
    return OpenAIRuntime(
        "http://model.test/v1",
        "m",
        api_key="k",
        timeout_s=2.0,
        transport=httpx.MockTransport(handler),
    )


def test_openai_request_shape_and_parsing() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "id": "c1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "clear"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2},
            },
        )

    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    result = _client(handler).generate(image, "Describe.", max_new_tokens=7)
    assert (result.text, result.prompt_tokens, result.output_tokens) == ("clear", 10, 2)
    assert seen["url"] == "http://model.test/v1/chat/completions"
    assert seen["auth"] == "Bearer k"
    body = seen["body"]
    assert (body["max_tokens"], body["temperature"]) == (7, 0.0)
    text, picture = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "Describe."}
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    from PIL import Image

    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(decoded, image)


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=r)), "within 2 s"),
        (
            lambda r: httpx.Response(500, json={"error": {"message": "CUDA out of memory"}}),
            "HTTP 500: CUDA out of memory",
        ),
        (lambda r: httpx.Response(200, text="<html>"), "not JSON"),
        (lambda r: httpx.Response(200, json={"choices": []}), "not OpenAI-compatible"),
    ],
)
def test_openai_errors_are_clear(handler: Any, match: str) -> None:
    with pytest.raises(RemoteModelError, match=match) as info:
        _client(handler).generate(None, "x")
    assert "Bearer" not in str(info.value)


def test_openai_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runtime = OpenAIRuntime(f"http://127.0.0.1:{port}/v1", "m", timeout_s=2.0)
    with pytest.raises(RemoteModelError, match="cannot reach"):
        runtime.generate(None, "x")
    with pytest.raises(RuntimeConfigError, match="must start with http"):
        OpenAIRuntime("model:8000", "m")
