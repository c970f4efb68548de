"""The local backend: LLaVA-Rad (LlavaForConditionalGeneration + Dinov2 tower) from a local folder."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError

from medvlm.budget import BudgetPolicy
from medvlm.prompts.conversation import VICUNA_V1, ConversationTemplate, splice_image_tokens
from medvlm.runtime.base import GenerationResult
from medvlm.runtime.checkpoint import (
    CheckpointInfo,
    declared_capabilities,
    greedy_generation_config,
    read_checkpoint_config,
    read_generation_config,
    validate_image_token,
    weights_sha256,
)
from medvlm.runtime.config import DEFAULT_TOKEN_BUDGET, DType, Quantization, RuntimeConfig
from medvlm.runtime.devices import Placement, resolve_placement
from medvlm.runtime.errors import CheckpointConfigError, CheckpointError, RuntimeConfigError
from medvlm.runtime.visual import VisualInput, build_visual_input

__all__ = ["TransformersRuntime"]

_LOG = logging.getLogger(__name__)

_NEWLINE_TOKENS = ("\n", "<0x0A>", "\u010a")
_COMMA_TOKENS = (",",)


@dataclass(frozen=True)
class SlicingSettings:
    """Slicing switch and visual-token budget of one runtime."""

    enabled: bool
    max_slices: int
    token_budget: int
    policy: BudgetPolicy

    def to_dict(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "max_slices": self.max_slices,
            "token_budget": self.token_budget,
            "policy": self.policy,
        }


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round((time.perf_counter() - start) * 1000.0, 3)


class TransformersRuntime:
    """LLaVA-Rad through transformers: fp16 + SDPA on CUDA, fp32 on CPU, greedy decoding.

    Loads only from a local folder (``local_files_only=True``: no network, whatever the hub
    settings). The checkpoint config is validated on load. With slicing off, one 518-px image goes
    through the standard LLaVA path; with slicing on, slices and the overview are encoded by the
    vision tower and projector, reduced under the visual-token budget, laid out with separator
    tokens from the tokenizer and fed as ``inputs_embeds``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        device: str = "auto",
        dtype: DType | str = DType.AUTO,
        quantization: Quantization | str = Quantization.NONE,
        slicing: bool = False,
        max_slices: int = 7,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        budget_policy: BudgetPolicy = "pool",
        max_new_tokens: int = 256,
        template: ConversationTemplate = VICUNA_V1,
    ) -> None:
        import transformers

        tf: Any = transformers

        self._timings_load: dict[str, float] = {}
        self._dir = Path(model_dir)
        self._template = template
        self._max_new_tokens = max_new_tokens
        self._slicing = SlicingSettings(
            enabled=slicing, max_slices=max_slices, token_budget=token_budget, policy=budget_policy
        )
        info = read_checkpoint_config(self._dir)
        self._info: CheckpointInfo = info
        self._capabilities = declared_capabilities(self._dir)
        self._placement: Placement = resolve_placement(
            device, DType(dtype), Quantization(quantization)
        )
        with _timed(self._timings_load, "tokenizer_ms"):
            try:
                self._tokenizer: Any = tf.AutoTokenizer.from_pretrained(
                    self._dir, local_files_only=True
                )
            except (OSError, ValueError) as exc:
                raise CheckpointError(
                    f"cannot load the tokenizer from {str(self._dir)!r}: {exc}"
                ) from exc
        token_of_id = self._tokenizer.convert_ids_to_tokens(info.image_token_id)
        validate_image_token(info.image_token_id, str(token_of_id) if token_of_id else None)
        self._newline_id = self._separator_id(_NEWLINE_TOKENS, "newline")
        self._comma_id = self._separator_id(_COMMA_TOKENS, "comma")
        with _timed(self._timings_load, "weights_ms"):
            try:
                self._model: Any = tf.LlavaForConditionalGeneration.from_pretrained(
                    self._dir, local_files_only=True, **self._load_kwargs()
                )
            except (OSError, ValueError, SafetensorError) as exc:
                raise CheckpointError(
                    f"cannot load the weights from {str(self._dir)!r}: {exc}"
                ) from exc
            if self._placement.quantization is Quantization.NONE:
                self._model.to(self._placement.device)
            self._model.eval()
        with _timed(self._timings_load, "hash_ms"):
            self._weights_sha256 = weights_sha256(self._dir)
        pad_id = self._tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self._tokenizer.unk_token_id
        self._generation: Any = read_generation_config(
            self._dir,
            fallback=greedy_generation_config(
                bos_token_id=self._tokenizer.bos_token_id,
                eos_token_id=self._tokenizer.eos_token_id,
                pad_token_id=pad_id,
                image_token_id=info.image_token_id,
            ),
        )
        self._processor_config = self._make_processor_config()
        _LOG.info(
            "loaded model %s on %s (%s) in %.0f ms",
            info.model_id,
            self._placement.device,
            self._placement.dtype_name,
            sum(self._timings_load.values()),
        )

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> TransformersRuntime:
        """Build from a ``RuntimeConfig`` whose backend is ``transformers``."""
        if config.model_dir is None:
            raise CheckpointError(
                "RuntimeConfig.model_dir is required for the transformers backend"
            )
        return cls(
            config.model_dir,
            device=config.device,
            dtype=config.dtype,
            quantization=config.quantization,
            slicing=config.slicing,
            max_slices=config.max_slices,
            token_budget=config.token_budget,
            budget_policy=config.budget_policy,
            max_new_tokens=config.max_new_tokens,
        )

    # -- protocol -------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._info.model_id

    @property
    def supports_boxes(self) -> bool:
        """True only for a checkpoint that declares it answers boxes (``radcheck_model.json``
        ``"capabilities": ["boxes"]``, a grounding model); LLaVA-Rad does not."""
        return "boxes" in self._capabilities

    def relevance(
        self,
        image: NDArray[np.uint8],
        instruction: str,
        *,
        method: str = "gradient_x_input",
    ) -> Any:
        """Where in ``image`` the model's "yes" to ``instruction`` comes from: a
        :class:`medvlm.grounding.Relevance` on the original film (training-free)."""
        from medvlm.grounding.llava import LlavaGroundingInputs, llava_relevance

        inputs = LlavaGroundingInputs(
            model=self._model,
            tokenizer=self._tokenizer,
            template=self._template,
            processor_config=self._processor_config,
            slicing=self._slicing.enabled,
            token_budget=self._slicing.token_budget,
            policy=self._slicing.policy,
            newline_id=self._newline_id,
            comma_id=self._comma_id,
            image_token_id=self._info.image_token_id,
            device=self._placement.device,
            dtype=self._placement.dtype,
        )
        return llava_relevance(inputs, image, instruction, method=method)

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (for tools and tests)."""
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The loaded ``LlavaForConditionalGeneration`` (for tools, tests and benchmarks)."""
        return self._model

    @property
    def generation_config(self) -> Any:
        """A copy of the ``GenerationConfig`` it decodes with (the checkpoint's, checked)."""
        return copy.deepcopy(self._generation)

    @property
    def processor_config(self) -> Any:
        """The :class:`medvlm.processing.ProcessorConfig` images go through."""
        return self._processor_config

    @property
    def placement(self) -> Placement:
        """Device, dtype and quantization the model runs with."""
        return self._placement

    def provenance(self) -> dict[str, str]:
        import transformers

        return {
            "backend": "transformers",
            "model_id": self.model_id,
            "weights_sha256": self._weights_sha256,
            "prompt_template_id": self._template.template_id,
            "prompt_template_version": self._template.version,
            "slicing": json.dumps(self._slicing.to_dict(), sort_keys=True),
            "generation": json.dumps(self._generation_dict(self._max_new_tokens), sort_keys=True),
            "device": str(self._placement.device),
            "dtype": self._placement.dtype_name,
            "quantization": self._placement.quantization.value,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }

    def generate(
        self,
        image: NDArray[np.uint8] | None,
        instruction: str,
        *,
        max_new_tokens: int = 256,
    ) -> GenerationResult:
        """Greedy answer to ``instruction`` about ``image`` (H x W uint8), unverified AI output."""
        if max_new_tokens < 1:
            raise RuntimeConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        timings: dict[str, float] = {}
        new_tokens = min(max_new_tokens, self._max_new_tokens)
        prompt = self._template.render(instruction, image=image is not None)
        details: dict[str, object] = {"prompt_template": self._template.ref}
        with torch.inference_mode():
            visual: VisualInput | None = None
            if image is not None:
                visual = build_visual_input(
                    image,
                    model=self._model,
                    processor_config=self._processor_config,
                    slicing=self._slicing.enabled,
                    token_budget=self._slicing.token_budget,
                    policy=self._slicing.policy,
                    newline_id=self._newline_id,
                    comma_id=self._comma_id,
                    device=self._placement.device,
                    dtype=self._placement.dtype,
                    timings=timings,
                )
                details.update(visual.details)
            with _timed(timings, "tokenize_ms"):
                spliced = splice_image_tokens(
                    prompt,
                    self._encode,
                    bos_token_id=self._tokenizer.bos_token_id,
                    image_token_id=self._info.image_token_id,
                    n_image_tokens=visual.n_tokens if visual is not None else 0,
                )
            input_ids = torch.tensor([spliced.input_ids], device=self._placement.device)
            with _timed(timings, "generate_ms"):
                output_ids = self._run_generate(input_ids, visual, spliced.image_start, new_tokens)
        with _timed(timings, "decode_text_ms"):
            text = self._tokenizer.decode(output_ids, skip_special_tokens=True).strip()
        return GenerationResult(
            text=text,
            prompt_tokens=len(spliced.input_ids),
            visual_tokens=spliced.n_image_tokens,
            output_tokens=len(output_ids),
            timings_ms=timings,
            details=details,
        )

    # -- internals ------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text).input_ids)

    def _separator_id(self, candidates: Sequence[str], name: str) -> int:
        unk = self._tokenizer.unk_token_id
        for token in candidates:
            token_id = self._tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != unk:
                return token_id
        raise CheckpointConfigError(
            "tokenizer",
            f"no {name} separator token among {list(candidates)!r}: the slicing layout needs it",
        )

    def _load_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"dtype": self._placement.dtype, "attn_implementation": "sdpa"}
        if self._placement.quantization is Quantization.NF4:
            import transformers

            tf: Any = transformers
            kwargs["quantization_config"] = tf.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.float16,
                llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"],
            )
            kwargs["device_map"] = {"": self._placement.device}
        return kwargs

    def _make_processor_config(self) -> Any:
        """The checkpoint's ``preprocessor_config.json`` with this runtime's slicing settings; a
        checkpoint without one gets the defaults at its vision tower's size."""
        from medvlm.errors import ProcessingError
        from medvlm.processing import PREPROCESSOR_CONFIG, ProcessorConfig

        runtime: dict[str, object] = {
            "slicing": self._slicing.enabled,
            "max_slices": self._slicing.max_slices,
            "visual_token_budget": self._slicing.token_budget,
            "budget_policy": self._slicing.policy,
        }
        try:
            config = ProcessorConfig.from_pretrained(self._dir, **runtime)
        except ProcessingError as exc:
            raise CheckpointConfigError("preprocessor_config", str(exc)) from exc
        if config is None:
            return ProcessorConfig(
                native_size=self._info.vision_image_size,
                patch_size=self._info.vision_patch_size,
                **runtime,  # type: ignore[arg-type]
            )
        tower = (self._info.vision_image_size, self._info.vision_patch_size)
        if (config.native_size, config.patch_size) != tower:
            raise CheckpointConfigError(
                "preprocessor_config.native_size",
                f"{PREPROCESSOR_CONFIG} native_size / patch_size {config.native_size} / {config.patch_size} differ from "
                f"the vision tower's {tower[0]} / {tower[1]} in config.json",
            )
        return config

    def _generation_dict(self, max_new_tokens: int) -> dict[str, object]:
        generation = self._generation
        return {
            "do_sample": bool(generation.do_sample),
            "num_beams": int(generation.num_beams),
            "max_new_tokens": max_new_tokens,
            "suppress_tokens": list(generation.suppress_tokens or []),
            "eos_token_id": generation.eos_token_id,
        }

    def _run_generate(
        self,
        input_ids: torch.Tensor,
        visual: VisualInput | None,
        image_start: int,
        max_new_tokens: int,
    ) -> list[int]:
        generation = copy.deepcopy(self._generation)
        generation.max_new_tokens = max_new_tokens
        common: dict[str, Any] = {"generation_config": generation}
        if visual is not None and visual.embeds is not None:
            text_embeds = self._model.get_input_embeddings()(input_ids)
            n = visual.n_tokens
            embeds = torch.cat(
                [
                    text_embeds[:, :image_start],
                    visual.embeds.to(text_embeds.dtype).unsqueeze(0),
                    text_embeds[:, image_start + n :],
                ],
                dim=1,
            )
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            out = self._model.generate(inputs_embeds=embeds, attention_mask=mask, **common)
            generated = out[0]  # only new tokens when generation starts from inputs_embeds
        else:
            mask = torch.ones_like(input_ids)
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
            if visual is not None:
                kwargs["pixel_values"] = visual.pixel_values
            out = self._model.generate(**kwargs, **common)
            generated = out[0, input_ids.shape[1] :]
        return [int(t) for t in generated.tolist()]
