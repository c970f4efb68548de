"""Checkpoint folder checks: config validation on load and the weights hash for provenance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.prompts.conversation import IMAGE_PLACEHOLDER
from medvlm.runtime.errors import CheckpointConfigError, CheckpointError

__all__ = [
    "GENERATION_CONFIG",
    "LLAVA_RAD_ARCHITECTURE",
    "CheckpointInfo",
    "declared_capabilities",
    "greedy_generation_config",
    "llava_rad_config",
    "read_checkpoint_config",
    "read_generation_config",
    "validate_image_token",
    "weights_sha256",
]

GENERATION_CONFIG = "generation_config.json"
"""The checkpoint's generation settings (transformers' file); the runtime decodes with them."""


@dataclass(frozen=True)
class _Fixed:
    """One value every LLaVA-Rad-shaped checkpoint has: written by :func:`llava_rad_config`,
    checked by :func:`read_checkpoint_config`."""

    key: str
    value: object
    why: str
    absent: object = None
    """What a config without the key means (transformers' default); ``None``: the key is required."""


LLAVA_RAD_ARCHITECTURE: tuple[_Fixed, ...] = (
    _Fixed("vision_feature_layer", -2, "LLaVA-Rad uses the second-to-last vision layer"),
    _Fixed("vision_feature_select_strategy", "default", "drop CLS, keep patches", "default"),
    _Fixed("projector_hidden_act", "gelu", "mlp2x_gelu projector", "gelu"),
)
"""The LLaVA-Rad architecture choices of ``config.json`` (besides the model types)."""

_VISION_DEFAULTS: dict[str, object] = {"image_size": 518, "patch_size": 14, "layer_norm_eps": 1e-6}
_TEXT_DEFAULTS: dict[str, object] = {
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}


def llava_rad_config(
    *, text: Mapping[str, Any], vision: Mapping[str, Any], image_token_id: int
) -> Any:
    """The ``LlavaConfig`` of a LLaVA-Rad-shaped model: Llama text, Dinov2 tower, GELU projector,
    second-to-last vision layer, one token per patch.

    ``text`` and ``vision`` are ``LlamaConfig`` / ``Dinov2Config`` keyword arguments (widths,
    vocabulary); unset ones take LLaVA-Rad's values (518 px, patch 14, Llama's special token ids).
    The one place the architecture is written: the tiny checkpoint, the converter and the GPU
    benchmark build with it, and :func:`read_checkpoint_config` checks against the same table.
    """
    from transformers import Dinov2Config, LlamaConfig, LlavaConfig

    make_llama: Any = LlamaConfig
    make_dinov2: Any = Dinov2Config
    make_llava: Any = LlavaConfig
    text_config = make_llama(**{**_TEXT_DEFAULTS, **text})
    vision_config = make_dinov2(**{**_VISION_DEFAULTS, **vision})
    return make_llava(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=image_token_id,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        tie_word_embeddings=False,
        **{fixed.key: fixed.value for fixed in LLAVA_RAD_ARCHITECTURE},
    )


def greedy_generation_config(
    *,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    image_token_id: int,
    max_new_tokens: int = 256,
) -> Any:
    """Our generation config: greedy, 256 new tokens, KV cache, the image token never generated.

    Saved as the checkpoint's ``generation_config.json`` (tiny and converted checkpoints) and used
    by the runtime when a checkpoint has none.
    """
    from transformers import GenerationConfig

    make: Any = GenerationConfig
    return make(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        use_cache=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        suppress_tokens=[image_token_id],
    )


def read_generation_config(model_dir: Path, *, fallback: Any) -> Any:
    """The checkpoint's ``generation_config.json`` (``fallback`` when it has none), checked.

    Sampling is refused (``CheckpointConfigError`` on ``generation_config.do_sample``): checks must
    be reproducible. The image token is always suppressed (added when the file omits it).
    """
    from transformers import GenerationConfig

    path = model_dir / GENERATION_CONFIG
    if not path.is_file():
        config = fallback
    else:
        try:
            config = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from exc
    _require(
        not config.do_sample,
        "generation_config.do_sample",
        f"{str(path)!r} asks for sampling (do_sample=true): RadCheck decodes greedily so a "
        "check can be reproduced; set do_sample to false",
    )
    suppress = list(config.suppress_tokens or [])
    for token_id in fallback.suppress_tokens or []:
        if token_id not in suppress:
            suppress.append(token_id)
    config.suppress_tokens = suppress
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, key) is None:
            setattr(config, key, getattr(fallback, key))
    return config


@dataclass(frozen=True)
class CheckpointInfo:
    """What a validated checkpoint config says about the model."""

    model_id: str
    image_token_id: int
    text_vocab_size: int
    vision_image_size: int
    vision_patch_size: int
    vision_hidden_size: int
    text_hidden_size: int


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise CheckpointConfigError(key, message)


def read_checkpoint_config(model_dir: Path) -> CheckpointInfo:
    """Read ``config.json`` of a local checkpoint and check it is LLaVA-Rad-shaped.

    Raises ``CheckpointError`` when the folder or file is missing or unreadable and
    ``CheckpointConfigError`` (naming the key) when a value is not the expected one.
    """
    if not model_dir.is_dir():
        raise CheckpointError(
            f"model folder {str(model_dir)!r} does not exist: point model_dir at a local checkpoint "
            "(weights are never downloaded; create one with `radcheck model convert-llava-rad` or "
            "`radcheck model init-tiny`)"
        )
    config_path = model_dir / "config.json"
    try:
        raw: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{str(config_path)!r} is missing: the folder is not a transformers checkpoint"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {str(config_path)!r}: {exc}") from exc
    if not any(model_dir.glob("*.safetensors")):
        raise CheckpointError(
            f"no *.safetensors weights in {str(model_dir)!r}: convert the checkpoint to safetensors "
            "(`radcheck model convert-llava-rad`)"
        )

    _require(
        raw.get("model_type") == "llava",
        "model_type",
        f"expected 'llava' (LlavaForConditionalGeneration), got {raw.get('model_type')!r}",
    )
    vision = raw.get("vision_config") or {}
    text = raw.get("text_config") or {}
    _require(
        vision.get("model_type") == "dinov2",
        "vision_config.model_type",
        f"expected 'dinov2' (the BiomedCLIP-CXR trunk mapped to Dinov2Model), got "
        f"{vision.get('model_type')!r}",
    )
    _require(
        text.get("model_type") == "llama",
        "text_config.model_type",
        f"expected 'llama' (Vicuna), got {text.get('model_type')!r}",
    )
    for fixed in LLAVA_RAD_ARCHITECTURE:
        value = raw.get(fixed.key, fixed.absent)
        _require(
            value == fixed.value,
            fixed.key,
            f"expected {fixed.value!r} ({fixed.why}), got {raw.get(fixed.key)!r}",
        )
    image_token_id = raw.get("image_token_index", raw.get("image_token_id"))
    _require(
        isinstance(image_token_id, int) and image_token_id >= 0,
        "image_token_index",
        f"expected a non-negative token id, got {image_token_id!r}",
    )
    vocab = text.get("vocab_size")
    _require(
        isinstance(vocab, int) and isinstance(image_token_id, int) and image_token_id < vocab,
        "text_config.vocab_size",
        f"vocabulary {vocab!r} does not hold the image token id {image_token_id!r}: grow the "
        "embeddings when adding <image>",
    )
    image_size = vision.get("image_size")
    patch_size = vision.get("patch_size")
    _require(
        isinstance(image_size, int) and isinstance(patch_size, int) and patch_size > 0,
        "vision_config.patch_size",
        f"expected integer image_size and patch_size, got {image_size!r} and {patch_size!r}",
    )
    assert isinstance(image_size, int) and isinstance(patch_size, int)
    _require(
        image_size % patch_size == 0,
        "vision_config.image_size",
        f"image_size {image_size} is not a multiple of patch_size {patch_size}",
    )
    assert isinstance(image_token_id, int) and isinstance(vocab, int)
    return CheckpointInfo(
        model_id=_model_id(model_dir),
        image_token_id=image_token_id,
        text_vocab_size=vocab,
        vision_image_size=image_size,
        vision_patch_size=patch_size,
        vision_hidden_size=int(vision.get("hidden_size", 0)),
        text_hidden_size=int(text.get("hidden_size", 0)),
    )


def validate_image_token(image_token_id: int, token_of_id: str | None) -> None:
    """Check the tokenizer maps the config's image token id to ``<image>``."""
    _require(
        token_of_id == IMAGE_PLACEHOLDER,
        "image_token_index",
        f"id {image_token_id} is {token_of_id!r} in the tokenizer, expected "
        f"{IMAGE_PLACEHOLDER!r}: save the tokenizer with the image token next to the weights",
    )


def _model_id(model_dir: Path) -> str:
    meta = model_dir / "radcheck_model.json"
    if meta.is_file():
        try:
            value = json.loads(meta.read_text(encoding="utf-8")).get("model_id")
        except (OSError, json.JSONDecodeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return model_dir.resolve().name


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 over the checkpoint's safetensors files (name and content, sorted by name).

    Reads every weight file once (about 15 s for 14 GB on a fast disk); call it once at load.
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in {str(model_dir)!r}")
    outer = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            inner = hashlib.file_digest(fh, "sha256")
        outer.update(f"{path.name}\t{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def declared_capabilities(model_dir: Path) -> frozenset[str]:
    """Capabilities a checkpoint declares in ``radcheck_model.json`` (``"capabilities"``: a list
    of names, e.g. ``["boxes"]`` for a model trained to answer bounding boxes); none by default."""
    meta = Path(model_dir) / "radcheck_model.json"
    if not meta.is_file():
        return frozenset()
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get("capabilities")
    except (OSError, json.JSONDecodeError, AttributeError):
        return frozenset()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(str(v) for v in value)
