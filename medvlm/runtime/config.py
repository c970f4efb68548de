"""The typed runtime configuration that application settings map onto."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import get_args

from medvlm.budget import DEFAULT_VISUAL_TOKEN_BUDGET, BudgetPolicy
from medvlm.runtime.errors import RuntimeConfigError

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "Backend",
    "DType",
    "Quantization",
    "RuntimeConfig",
]

DEFAULT_TOKEN_BUDGET = DEFAULT_VISUAL_TOKEN_BUDGET
"""Visual tokens per study when slicing (DESIGN.md: <= 1,500 for a 2500x3000 film on a 16 GB V100);
derived in :mod:`medvlm.budget` and docs/model.md (2,048 context - 256 new tokens - 292 text = 1,500). The settings,
the CLI and the runtime all default to this one value."""


class Backend(StrEnum):
    """Which model backend serves VLM checks."""

    NONE = "none"
    TRANSFORMERS = "transformers"
    OPENAI = "openai"


class DType(StrEnum):
    """Weights and activations dtype; ``auto`` = float16 on CUDA, float32 on CPU."""

    AUTO = "auto"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class Quantization(StrEnum):
    """Optional weight quantization of the language model (``nf4`` needs bitsandbytes and CUDA)."""

    NONE = "none"
    NF4 = "nf4"


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything needed to build a runtime; validated at construction.

    ``device`` is ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``. ``slicing`` turns
    LLaVA-UHD slicing on (off for LLaVA-Rad, which was not trained with slices); ``token_budget``
    and ``budget_policy`` (``none``, ``pool``, ``attention``) bound the visual tokens when it is on.
    """

    backend: Backend = Backend.NONE
    model_dir: Path | None = None
    device: str = "auto"
    dtype: DType = DType.AUTO
    quantization: Quantization = Quantization.NONE
    slicing: bool = False
    max_slices: int = 7
    token_budget: int = DEFAULT_TOKEN_BUDGET
    budget_policy: BudgetPolicy = "pool"
    max_new_tokens: int = 256
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_model: str | None = None
    openai_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "backend", Backend(self.backend))
            object.__setattr__(self, "dtype", DType(self.dtype))
            object.__setattr__(self, "quantization", Quantization(self.quantization))
        except ValueError as exc:
            raise RuntimeConfigError(
                f"invalid runtime config: {exc}; backends {[b.value for b in Backend]}, "
                f"dtypes {[d.value for d in DType]}, quantizations {[q.value for q in Quantization]}"
            ) from exc
        if self.model_dir is not None:
            object.__setattr__(self, "model_dir", Path(self.model_dir))
        if self.backend is Backend.TRANSFORMERS and self.model_dir is None:
            raise RuntimeConfigError(
                "backend 'transformers' needs model_dir: the local checkpoint folder "
                "(e.g. one written by `radcheck model convert-llava-rad` or `init-tiny`)"
            )
        if self.backend is Backend.OPENAI and not (self.openai_base_url and self.openai_model):
            raise RuntimeConfigError(
                "backend 'openai' needs openai_base_url (e.g. http://gpu-node:8001/v1) and "
                "openai_model (the served model name)"
            )
        device = self.device
        if not (device in ("auto", "cpu", "cuda") or _is_cuda_index(device)):
            raise RuntimeConfigError(
                f"device {device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"
            )
        if self.max_new_tokens < 1 or self.max_new_tokens > 4096:
            raise RuntimeConfigError(
                f"max_new_tokens must be in 1..4096, got {self.max_new_tokens}"
            )
        if self.token_budget < 1:
            raise RuntimeConfigError(f"token_budget must be >= 1, got {self.token_budget}")
        if self.max_slices < 1:
            raise RuntimeConfigError(f"max_slices must be >= 1, got {self.max_slices}")
        if self.budget_policy not in get_args(BudgetPolicy):
            raise RuntimeConfigError(
                f"budget_policy {self.budget_policy!r} is not one of "
                + ", ".join(repr(p) for p in get_args(BudgetPolicy))
            )
        if self.openai_timeout_s <= 0:
            raise RuntimeConfigError(f"openai_timeout_s must be > 0, got {self.openai_timeout_s}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()
