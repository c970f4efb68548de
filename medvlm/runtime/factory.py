"""``build_runtime``: the one place that turns a ``RuntimeConfig`` into a backend."""

from __future__ import annotations

from medvlm.runtime.base import VisionLanguageRuntime
from medvlm.runtime.config import Backend, RuntimeConfig

__all__ = ["build_runtime"]


def build_runtime(config: RuntimeConfig) -> VisionLanguageRuntime | None:
    """The configured backend, or ``None`` for ``none`` (no VLM checks).

    Loading the ``transformers`` backend reads the weights (seconds to minutes): call this once, in
    an application factory or worker start-up, never per request.
    """
    if config.backend is Backend.NONE:
        return None
    if config.backend is Backend.OPENAI:
        from medvlm.runtime.openai_backend import OpenAIRuntime

        return OpenAIRuntime.from_config(config)
    from medvlm.runtime.transformers_backend import TransformersRuntime

    return TransformersRuntime.from_config(config)
