"""The ``none`` backend: no model configured; generation is refused with a clear error."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from medvlm.runtime.base import GenerationResult
from medvlm.runtime.errors import NoModelConfiguredError

__all__ = ["NullRuntime"]


class NullRuntime:
    """Stands for "no model": callers can hold a runtime object, but ``generate`` raises.

    ``build_runtime`` returns ``None`` for the ``none`` backend; use this class where a runtime
    object is required (a server or a test) and any generation would be a configuration mistake.
    """

    @property
    def model_id(self) -> str:
        return "none"

    @property
    def supports_boxes(self) -> bool:
        return False

    def provenance(self) -> dict[str, str]:
        return {"backend": "none", "model_id": "none"}

    def generate(
        self,
        image: NDArray[np.uint8] | None,
        instruction: str,
        *,
        max_new_tokens: int = 256,
    ) -> GenerationResult:
        raise NoModelConfiguredError(
            "no model backend is configured (backend 'none'): set the runtime backend to "
            "'transformers' with a local model folder, or 'openai' with an endpoint, to run VLM checks"
        )
