"""Errors of the model runtime and the checkpoint converter (all derive from ``MedVLMError``)."""

from __future__ import annotations

from medvlm.errors import MedVLMError

__all__ = [
    "CheckpointConfigError",
    "CheckpointError",
    "ConversionError",
    "DeviceError",
    "NoModelConfiguredError",
    "QuantizationError",
    "RemoteModelError",
    "RuntimeConfigError",
]


class RuntimeConfigError(MedVLMError, ValueError):
    """A ``RuntimeConfig`` value is invalid (unknown backend, dtype, device; missing model folder)."""


class CheckpointError(MedVLMError):
    """A checkpoint folder could not be loaded (missing, unreadable or incomplete files)."""


class CheckpointConfigError(CheckpointError, ValueError):
    """A checkpoint's configuration does not describe a LLaVA-Rad-shaped model.

    ``key`` is the offending configuration key (dotted, e.g. ``vision_config.model_type``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"checkpoint config key {key!r}: {message}")
        self.key = key


class DeviceError(MedVLMError):
    """The requested device or dtype cannot run here (no CUDA, bf16 below compute capability 8.0)."""


class QuantizationError(MedVLMError):
    """The requested weight quantization is unavailable (bitsandbytes missing, no CUDA)."""


class RemoteModelError(MedVLMError):
    """An OpenAI-compatible endpoint failed: unreachable, timed out, an error status or bad JSON."""


class NoModelConfiguredError(MedVLMError):
    """Generation was asked of the ``none`` backend: configure a model backend to use VLM checks."""


class ConversionError(MedVLMError):
    """A published LLaVA-Rad checkpoint could not be converted (missing file, unexpected keys)."""
