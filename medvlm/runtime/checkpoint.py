"""Checkpoint folder checks: config validation on load and the weights hash for provenance."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.prompts.conversation import IMAGE_PLACEHOLDER
from medvlm.runtime.errors import CheckpointConfigError, CheckpointError

__all__ = [
    "CheckpointInfo",
    "declared_capabilities",
    "read_checkpoint_config",
    "validate_image_token",
    "weights_sha256",
]

_HASH_CHUNK = 1 << 20


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
    _require(
        raw.get("vision_feature_layer") == -2,
        "vision_feature_layer",
        f"expected -2 (LLaVA-Rad uses the second-to-last vision layer), got "
        f"{raw.get('vision_feature_layer')!r}",
    )
    _require(
        raw.get("vision_feature_select_strategy", "default") == "default",
        "vision_feature_select_strategy",
        f"expected 'default' (drop CLS, keep patches), got "
        f"{raw.get('vision_feature_select_strategy')!r}",
    )
    _require(
        raw.get("projector_hidden_act", "gelu") == "gelu",
        "projector_hidden_act",
        f"expected 'gelu' (mlp2x_gelu projector), got {raw.get('projector_hidden_act')!r}",
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
        inner = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                inner.update(chunk)
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
