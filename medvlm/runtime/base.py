"""The one protocol every model backend implements (transformers, openai, none, scripted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class GenerationResult:
    """What a backend produced for one image and one instruction.

    ``text`` is unverified AI output: every consumer must label it as such.
    """

    text: str
    prompt_tokens: int = 0
    visual_tokens: int = 0
    output_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class VisionLanguageRuntime(Protocol):
    """A vision-language model that answers one instruction about one 2-D grey image.

    ``image`` is the 8-bit display image (H x W, uint8) produced by the DICOM pixel pipeline, or
    ``None`` for a text-only question. ``instruction`` is the user turn after the image token; the
    backend wraps it in its own conversation template.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def supports_boxes(self) -> bool: ...

    def provenance(self) -> dict[str, str]:
        """Model id, weights hash, prompt template id/version, slicing and generation config."""
        ...

    def generate(
        self,
        image: NDArray[np.uint8] | None,
        instruction: str,
        *,
        max_new_tokens: int = 256,
    ) -> GenerationResult: ...
