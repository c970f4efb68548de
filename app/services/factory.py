"""Composition root for the heavy objects: the checker, the model runtime, the check pipeline."""

from __future__ import annotations

import logging

import dicom_io
from app.services.pipeline import CheckPipeline
from app.settings import ModelBackend, Settings
from medvlm.checking import Checker, CheckerConfig
from medvlm.runtime import RuntimeConfig, build_runtime
from medvlm.runtime.base import VisionLanguageRuntime

__all__ = ["build_pipeline", "build_runtime_from_settings", "build_text_checker"]

logger = logging.getLogger(__name__)


def build_runtime_from_settings(settings: Settings) -> VisionLanguageRuntime | None:
    model = settings.model
    if model.backend == ModelBackend.NONE:
        return None
    config = RuntimeConfig(
        backend=model.backend,
        model_dir=model.model_dir,
        device=model.device,
        dtype=model.dtype,
        quantization=model.quantization,
        slicing=model.slicing,
        max_slices=model.max_slices,
        token_budget=model.token_budget,
        budget_policy=model.budget_policy,
        openai_base_url=model.openai_base_url,
        openai_api_key=(model.openai_api_key.get_secret_value() if model.openai_api_key else None),
        openai_model=model.openai_model,
        openai_timeout_s=model.timeout_s,
    )
    return build_runtime(config)


def build_text_checker() -> Checker:
    """The text and header checks only (no model): for report checks without an image."""
    return Checker(runtime=None)


def build_pipeline(settings: Settings) -> CheckPipeline:
    runtime = build_runtime_from_settings(settings)
    rules = (
        dicom_io.SelectionRules.load(settings.ingest.selection_rules)
        if settings.ingest.selection_rules
        else None
    )
    config = CheckerConfig(
        max_grounding_calls=settings.model.max_grounding_calls,
        grounding_method=settings.model.grounding_method,
    )
    return CheckPipeline(
        checker=Checker(runtime=runtime, config=config),
        runtime=runtime,
        selection_rules=rules,
        time_budget_s=settings.checks.time_budget_s,
    )
