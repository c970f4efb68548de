"""The remote backend: any OpenAI-compatible chat-completions endpoint that accepts images."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray

from medvlm.runtime.base import GenerationResult
from medvlm.runtime.config import RuntimeConfig
from medvlm.runtime.errors import RemoteModelError, RuntimeConfigError

__all__ = ["OpenAIRuntime", "image_to_data_url"]


def image_to_data_url(image: NDArray[np.uint8]) -> str:
    """A grey uint8 image (H x W) as a lossless ``data:image/png;base64,...`` URL."""
    from PIL import Image

    array = np.ascontiguousarray(image)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise RuntimeConfigError(
            f"expected a 2-D uint8 image, got dtype {array.dtype} with shape {array.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIRuntime:
    """Calls ``POST {base_url}/chat/completions`` with the instruction and a base64 PNG image.

    Greedy (``temperature`` 0). The server applies its own conversation template. Transport
    failures, timeouts, error statuses and malformed answers raise ``RemoteModelError`` with the
    endpoint and the reason; the API key is never part of a message.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise RuntimeConfigError(
                f"openai base_url {base_url!r} must start with http:// or https:// "
                "(e.g. http://gpu-node:8001/v1)"
            )
        self._base_url = base_url.rstrip("/")
        self._model = model
        self._timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self._base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )
        self._server_provenance: dict[str, str] = {}
        self._capabilities: frozenset[str] | None = None
        self._capabilities_note = "not asked yet"

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> OpenAIRuntime:
        """Build from a ``RuntimeConfig`` whose backend is ``openai``."""
        if not config.openai_base_url or not config.openai_model:
            raise RuntimeConfigError("backend 'openai' needs openai_base_url and openai_model")
        return cls(
            config.openai_base_url,
            config.openai_model,
            api_key=config.openai_api_key,
            timeout_s=config.openai_timeout_s,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def supports_boxes(self) -> bool:
        """True when the endpoint's ``GET /models`` lists this model with the ``boxes``
        capability (RadCheck's model server advertises it for box-native checkpoints). Asked once;
        an endpoint that cannot say is taken as not box-native, and the provenance records why."""
        return "boxes" in self.capabilities()

    def capabilities(self) -> frozenset[str]:
        """What the endpoint declares for this model (asked once, then cached)."""
        if self._capabilities is None:
            self._capabilities = self._ask_capabilities()
        return self._capabilities

    def _ask_capabilities(self) -> frozenset[str]:
        try:
            response = self._client.get("models")
        except httpx.HTTPError as exc:
            self._capabilities_note = f"GET /models failed: {type(exc).__name__}"
            return frozenset()
        if response.status_code >= 400:
            self._capabilities_note = f"GET /models answered HTTP {response.status_code}"
            return frozenset()
        try:
            cards = response.json().get("data")
        except (ValueError, AttributeError):
            cards = None
        if not isinstance(cards, list):
            self._capabilities_note = "GET /models answered without a data list"
            return frozenset()
        for card in cards:
            if isinstance(card, dict) and card.get("id") == self._model:
                declared = card.get("capabilities")
                values = (
                    frozenset(str(v) for v in declared)
                    if isinstance(declared, list)
                    else frozenset()
                )
                self._capabilities_note = "declared by the endpoint"
                return values
        self._capabilities_note = f"GET /models does not list {self._model!r}"
        return frozenset()

    def provenance(self) -> dict[str, str]:
        out = {
            "backend": "openai",
            "model_id": self._model,
            "endpoint": self._base_url,
            "generation": json.dumps({"temperature": 0.0}, sort_keys=True),
        }
        if self._capabilities is not None:
            out["capabilities"] = json.dumps(sorted(self._capabilities))
            out["capabilities_source"] = self._capabilities_note
        for key, value in self._server_provenance.items():
            out.setdefault(key, value)
        return out

    def generate(
        self,
        image: NDArray[np.uint8] | None,
        instruction: str,
        *,
        max_new_tokens: int = 256,
    ) -> GenerationResult:
        content: list[dict[str, Any]] = [{"type": "text", "text": instruction}]
        if image is not None:
            content.append({"type": "image_url", "image_url": {"url": image_to_data_url(image)}})
        payload = {
            "model": self._model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
        }
        start = time.perf_counter()
        body = self._post("/chat/completions", payload)
        elapsed = round((time.perf_counter() - start) * 1000.0, 3)
        try:
            text = body["choices"][0]["message"]["content"]
            usage = body.get("usage") or {}
            if not isinstance(text, str):
                raise TypeError("message content is not a string")
        except (KeyError, IndexError, TypeError) as exc:
            raise RemoteModelError(
                f"{self._base_url}/chat/completions answered without choices[0].message.content "
                f"({exc}): the endpoint is not OpenAI-compatible"
            ) from exc
        extra = body.get("radcheck") if isinstance(body.get("radcheck"), dict) else {}
        provenance = extra.get("provenance") if isinstance(extra, dict) else None
        if isinstance(provenance, dict):
            self._server_provenance = {str(k): str(v) for k, v in provenance.items()}
        details: dict[str, object] = {"endpoint": self._base_url, "response_id": body.get("id")}
        if extra:
            details["server"] = extra
        return GenerationResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
            visual_tokens=int(extra.get("visual_tokens", 0) or 0) if extra else 0,
            output_tokens=int(usage.get("completion_tokens", 0) or 0),
            timings_ms={"request_ms": elapsed},
            details=details,
        )

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._base_url}{path}"
        try:
            response = self._client.post(path.lstrip("/"), json=payload)
        except httpx.TimeoutException as exc:
            raise RemoteModelError(
                f"{url} did not answer within {self._timeout_s:g} s: raise openai_timeout_s or "
                "check the model server's load"
            ) from exc
        except httpx.HTTPError as exc:
            raise RemoteModelError(
                f"cannot reach {url}: {type(exc).__name__}: {exc}; check openai_base_url and that "
                "the model server is running"
            ) from exc
        if response.status_code >= 400:
            raise RemoteModelError(
                f"{url} answered HTTP {response.status_code}: {_error_message(response)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise RemoteModelError(f"{url} answered with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise RemoteModelError(f"{url} answered with JSON that is not an object")
        return body


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
        if isinstance(body.get("detail"), str):
            return str(body["detail"])[:500]
    return json.dumps(body)[:200]
