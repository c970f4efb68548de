"""Model backends behind one protocol: local transformers LLaVA-Rad, OpenAI-compatible, none."""

from __future__ import annotations

from medvlm.runtime.base import GenerationResult, VisionLanguageRuntime
from medvlm.runtime.config import (
    DEFAULT_TOKEN_BUDGET,
    Backend,
    DType,
    Quantization,
    RuntimeConfig,
)
from medvlm.runtime.errors import (
    CheckpointConfigError,
    CheckpointError,
    ConversionError,
    DeviceError,
    NoModelConfiguredError,
    QuantizationError,
    RemoteModelError,
    RuntimeConfigError,
)
from medvlm.runtime.factory import build_runtime
from medvlm.runtime.null_backend import NullRuntime
from medvlm.runtime.openai_backend import OpenAIRuntime
from medvlm.runtime.transformers_backend import TransformersRuntime

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "Backend",
    "CheckpointConfigError",
    "CheckpointError",
    "ConversionError",
    "DType",
    "DeviceError",
    "GenerationResult",
    "NoModelConfiguredError",
    "NullRuntime",
    "OpenAIRuntime",
    "Quantization",
    "QuantizationError",
    "RemoteModelError",
    "RuntimeConfig",
    "RuntimeConfigError",
    "TransformersRuntime",
    "VisionLanguageRuntime",
    "build_runtime",
]
