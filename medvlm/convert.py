"""Convert the published LLaVA-Rad checkpoint into our transformers checkpoint.

Published layout (microsoft/llava-rad over lmsys/vicuna-7b-v1.5; ../shared/specs/llava_rad.md):
``adapter_config.json`` + ``adapter_model.bin`` (PEFT LoRA over Vicuna), ``non_lora_trainables.bin``
(the projector), ``biomedclipcxr_518_checkpoint.pt`` (open_clip checkpoint, vision trunk under
``module.visual.trunk.*``) and ``config.json``. Output: a ``LlavaForConditionalGeneration`` with a
``Dinov2Model`` tower, LoRA merged in fp32 (``W += alpha / r * B @ A``), an ``<image>`` token
appended to the vocabulary (embeddings and lm_head grown by one row), fp16 safetensors, the
tokenizer, our greedy generation config (Vicuna's samples: not inherited), the image processor
config (``preprocessor_config.json``) and ``receipt.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from medvlm.processing import ProcessorConfig
from medvlm.prompts.conversation import IMAGE_PLACEHOLDER
from medvlm.runtime.checkpoint import greedy_generation_config, llava_rad_config, weights_sha256
from medvlm.runtime.errors import ConversionError

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "LLAVA_CONFIG",
    "PROJECTOR_WEIGHTS",
    "VISION_CHECKPOINT",
    "convert_llava_rad",
    "merge_lora",
    "projector_to_llava",
    "timm_to_dinov2",
]

_LOG = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.bin"
PROJECTOR_WEIGHTS = "non_lora_trainables.bin"
VISION_CHECKPOINT = "biomedclipcxr_518_checkpoint.pt"
LLAVA_CONFIG = "config.json"
CONVERTED_MODEL_ID = "microsoft/llava-rad"

_TRUNK_PREFIX = "module.visual.trunk."
_LORA_PREFIX = "base_model.model."
_PROJECTOR_PREFIX = "base_model.model.model.mm_projector."

# timm vit_*_dinov2 trunk -> transformers Dinov2Model (module names of transformers 5.x).
_BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP_MAP = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
UNUSED_TRUNK_PREFIXES = ("head.", "fc_norm.", "attn_pool.")
"""Trunk modules after the blocks (pooling head): LLaVA-Rad never uses them; dropped."""


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConversionError(
            f"{what} {str(path)!r} is missing: pass the folder of the published checkpoint "
            "(microsoft/llava-rad) and the Vicuna base folder (lmsys/vicuna-7b-v1.5)"
        )
    return path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle
        raise ConversionError(f"cannot read {str(path)!r} as a torch checkpoint: {exc}") from exc


def file_sha256(path: Path) -> str:
    """SHA-256 of one file, streamed."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def timm_to_dinov2(trunk: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a timm ``vit_*_dinov2`` trunk state dict to ``Dinov2Model`` names.

    ``blocks.i.attn.qkv`` is split in three (q, k, v), LayerScale ``gamma`` becomes ``lambda1``.
    ``mask_token`` (absent in timm) is zero. The pooling head (``head``, ``fc_norm``,
    ``attn_pool``) is dropped; any other unknown key (e.g. ``reg_token``: registers change the
    token sequence) raises ``ConversionError``.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in trunk.items():
        if key.startswith(UNUSED_TRUNK_PREFIXES):
            continue
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = value
            continue
        match = _BLOCK_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        index, rest = match.groups()
        prefix = f"encoder.layer.{index}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            if value.shape[0] % 3:
                raise ConversionError(f"{key} has {value.shape[0]} rows, not a multiple of 3")
            q, k, v = value.chunk(3, dim=0)
            out[f"{prefix}attention.q_proj.{kind}"] = q.clone()
            out[f"{prefix}attention.k_proj.{kind}"] = k.clone()
            out[f"{prefix}attention.v_proj.{kind}"] = v.clone()
        elif rest in _BLOCK_MAP:
            out[prefix + _BLOCK_MAP[rest]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"{len(unknown)} vision trunk keys have no Dinov2 equivalent (first: "
            f"{sorted(unknown)[:5]}): the trunk is not a timm vit_*_dinov2 without registers"
        )
    if "embeddings.cls_token" not in out:
        raise ConversionError("the vision trunk has no cls_token: not a timm ViT trunk")
    out["embeddings.mask_token"] = torch.zeros(1, out["embeddings.cls_token"].shape[-1])
    return out


def projector_to_llava(non_lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``mm_projector.{0,2}`` (mlp2x_gelu) to ``multi_modal_projector.linear_{1,2}``."""
    names = {"0": "linear_1", "2": "linear_2"}
    out: dict[str, torch.Tensor] = {}
    for key, value in non_lora.items():
        if not key.startswith(_PROJECTOR_PREFIX):
            raise ConversionError(
                f"{PROJECTOR_WEIGHTS} holds {key!r}, expected only "
                f"{_PROJECTOR_PREFIX}{{0,2}}.{{weight,bias}}"
            )
        index, _, kind = key[len(_PROJECTOR_PREFIX) :].partition(".")
        if index not in names or kind not in ("weight", "bias"):
            raise ConversionError(f"unexpected projector key {key!r} (mlp2x_gelu has layers 0, 2)")
        out[f"{names[index]}.{kind}"] = value
    if len(out) != 4:
        raise ConversionError(
            f"{PROJECTOR_WEIGHTS} has {len(out)} of the 4 projector tensors: {sorted(out)}"
        )
    return out


def merge_lora(
    base: dict[str, torch.Tensor], adapter: Mapping[str, torch.Tensor], scale: float
) -> list[str]:
    """Merge LoRA pairs into ``base`` in place, in fp32: ``W += scale * B @ A``; the merged keys.

    ``base`` uses LlamaForCausalLM names (``model.layers.N...``); adapter keys are PEFT's
    ``base_model.model.<name>.lora_{A,B}.weight``. The result keeps each weight's dtype.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapter.items():
        if not key.startswith(_LORA_PREFIX):
            raise ConversionError(
                f"{ADAPTER_WEIGHTS} key {key!r} does not start with {_LORA_PREFIX}"
            )
        name = key[len(_LORA_PREFIX) :]
        match = re.match(r"^(.+)\.lora_([AB])(?:\.default)?\.weight$", name)
        if match is None:
            raise ConversionError(
                f"{ADAPTER_WEIGHTS} key {key!r} is not a LoRA A/B weight: only plain LoRA is "
                "supported (no modules_to_save, no DoRA)"
            )
        pairs.setdefault(match.group(1) + ".weight", {})[match.group(2)] = value
    merged: list[str] = []
    for target, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ConversionError(f"LoRA for {target!r} lacks lora_{'B' if 'A' in ab else 'A'}")
        if target not in base:
            raise ConversionError(f"LoRA targets {target!r}, which the Vicuna weights do not hold")
        weight = base[target]
        delta = ab["B"].float() @ ab["A"].float()
        if delta.shape != weight.shape:
            raise ConversionError(
                f"LoRA delta for {target!r} has shape {tuple(delta.shape)}, the weight "
                f"{tuple(weight.shape)}"
            )
        base[target] = (weight.float() + scale * delta).to(weight.dtype)
        merged.append(target)
    return merged


def _load_vicuna(vicuna_dir: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    from safetensors.torch import load_file

    files = sorted(vicuna_dir.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for path in files:
            state.update(load_file(str(path)))
        return state, files
    files = sorted(vicuna_dir.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(
            f"no *.safetensors or pytorch_model*.bin weights in {str(vicuna_dir)!r}: pass the "
            "local lmsys/vicuna-7b-v1.5 folder"
        )
    state = {}
    for path in files:
        state.update(_torch_load(path))
    return state, files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_require_file(path, "file").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConversionError(f"{str(path)!r} is not a JSON object")
    return value


def _check_llava_config(config: Mapping[str, Any]) -> None:
    expected = {
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu",
    }
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise ConversionError(
                f"{LLAVA_CONFIG} has {key}={config[key]!r}, expected {value!r}: this converter "
                "handles LLaVA-Rad's configuration only"
            )


def _vision_config(dinov2: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``Dinov2Config`` keyword arguments read off the converted trunk's shapes."""
    hidden = int(dinov2["embeddings.cls_token"].shape[-1])
    patch = int(dinov2["embeddings.patch_embeddings.projection.weight"].shape[-1])
    positions = int(dinov2["embeddings.position_embeddings"].shape[1]) - 1
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"pos_embed holds {positions} patch positions, not a square grid")
    layers = 1 + max(int(k.split(".")[2]) for k in dinov2 if k.startswith("encoder.layer."))
    fc1 = dinov2["encoder.layer.0.mlp.fc1.weight"]
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "mlp_ratio": int(fc1.shape[0]) // hidden,
        "image_size": side * patch,
        "patch_size": patch,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "layerscale_value": 1.0,
    }


def _source_hashes(paths: Iterable[Path]) -> dict[str, dict[str, object]]:
    return {
        str(path): {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        for path in sorted(set(paths))
    }


def _library_versions() -> dict[str, str]:
    import numpy
    import safetensors
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def convert_llava_rad(
    vicuna_dir: Path | str,
    llava_rad_dir: Path | str,
    out_dir: Path | str,
    *,
    num_attention_heads: int | None = None,
) -> Path:
    """Convert the published LLaVA-Rad checkpoint to ours in ``out_dir``; return ``receipt.json``.

    ``num_attention_heads`` overrides the vision heads (default hidden / 64, as ViT-B/14: 12).
    Raises ``ConversionError`` naming the missing file or the unexpected key.
    """
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    vicuna = Path(vicuna_dir)
    llava = Path(llava_rad_dir)
    out = Path(out_dir)
    adapter_config_path = _require_file(llava / ADAPTER_CONFIG, "LoRA adapter config")
    adapter_path = _require_file(llava / ADAPTER_WEIGHTS, "LoRA adapter weights")
    projector_path = _require_file(llava / PROJECTOR_WEIGHTS, "projector weights")
    vision_path = _require_file(llava / VISION_CHECKPOINT, "BiomedCLIP-CXR checkpoint")
    llava_config_path = _require_file(llava / LLAVA_CONFIG, "LLaVA config")
    vicuna_config_path = _require_file(vicuna / "config.json", "Vicuna config")

    llava_config = _read_json(llava_config_path)
    _check_llava_config(llava_config)
    adapter_config = _read_json(adapter_config_path)
    try:
        rank = int(adapter_config["r"])
        alpha = float(adapter_config["lora_alpha"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{ADAPTER_CONFIG} lacks a valid r / lora_alpha: {exc}") from exc
    if adapter_config.get("use_rslora") or adapter_config.get("use_dora"):
        raise ConversionError(f"{ADAPTER_CONFIG} uses rsLoRA or DoRA: only plain LoRA is supported")
    if adapter_config.get("fan_in_fan_out"):
        raise ConversionError(f"{ADAPTER_CONFIG} has fan_in_fan_out=true: not supported")
    scale = alpha / rank

    base, vicuna_files = _load_vicuna(vicuna)
    merged = merge_lora(base, _torch_load(adapter_path), scale)

    checkpoint = _torch_load(vision_path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConversionError(f"{VISION_CHECKPOINT} holds no state_dict")
    trunk = {k[len(_TRUNK_PREFIX) :]: v for k, v in state.items() if k.startswith(_TRUNK_PREFIX)}
    if not trunk:
        raise ConversionError(
            f"{VISION_CHECKPOINT} has no '{_TRUNK_PREFIX}*' keys: not the open_clip BiomedCLIP-CXR "
            "training checkpoint"
        )
    dinov2 = timm_to_dinov2(trunk)
    projector = projector_to_llava(_torch_load(projector_path))

    tokenizer: Any = AutoTokenizer.from_pretrained(vicuna, local_files_only=True)
    base_vocab = int(base["model.embed_tokens.weight"].shape[0])
    if len(tokenizer) != base_vocab:
        raise ConversionError(
            f"the Vicuna tokenizer has {len(tokenizer)} tokens but the embeddings "
            f"{base_vocab} rows: tokenizer and weights do not belong together"
        )
    tokenizer.add_tokens([IMAGE_PLACEHOLDER], special_tokens=True)
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    if image_id != base_vocab:
        raise ConversionError(f"<image> got id {image_id}, expected {base_vocab}")

    # Grow embeddings and lm_head by one row (the mean row: never generated, replaced by features).
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        weight = base[key]
        base[key] = torch.cat([weight, weight.float().mean(0, keepdim=True).to(weight.dtype)])

    text_kwargs = _read_json(vicuna_config_path)
    text_kwargs["vocab_size"] = base_vocab + 1
    for drop in ("architectures", "transformers_version", "torch_dtype", "dtype"):
        text_kwargs.pop(drop, None)
    vision_kwargs = _vision_config(dinov2)
    if num_attention_heads is not None:
        vision_kwargs["num_attention_heads"] = num_attention_heads
    config = llava_rad_config(text=text_kwargs, vision=vision_kwargs, image_token_id=image_id)
    vision_config = config.vision_config

    full: dict[str, torch.Tensor] = {}
    for key, value in base.items():
        if key.startswith("model."):
            full["model.language_model." + key[len("model.") :]] = value
        elif key == "lm_head.weight":
            full[key] = value
        elif not key.endswith("rotary_emb.inv_freq"):
            raise ConversionError(f"unexpected Vicuna weight {key!r}")
    full.update({f"model.vision_tower.{k}": v for k, v in dinov2.items()})
    full.update({f"model.multi_modal_projector.{k}": v for k, v in projector.items()})
    full = {k: v.to(torch.float16).contiguous() for k, v in full.items()}

    with torch.device("meta"):
        model: Any = LlavaForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(full, strict=False, assign=True)
    if missing or unexpected:
        raise ConversionError(
            f"converted weights do not fit LlavaForConditionalGeneration: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.generation_config = greedy_generation_config(
        bos_token_id=int(tokenizer.bos_token_id),
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
        ),
        image_token_id=image_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    ProcessorConfig(
        native_size=vision_config.image_size, patch_size=vision_config.patch_size
    ).save_pretrained(out)
    (out / "radcheck_model.json").write_text(
        json.dumps({"model_id": CONVERTED_MODEL_ID, "converted": True}, indent=2) + "\n"
    )
    sources = [
        adapter_config_path,
        adapter_path,
        projector_path,
        vision_path,
        llava_config_path,
        vicuna_config_path,
        *vicuna_files,
        *(p for p in vicuna.glob("tokenizer*") if p.is_file()),
    ]
    receipt = {
        "converter": "medvlm.convert.convert_llava_rad",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_id": CONVERTED_MODEL_ID,
        "sources": _source_hashes(sources),
        "libraries": _library_versions(),
        "lora": {"r": rank, "alpha": alpha, "scale": scale, "merged_weights": len(merged)},
        "image_token": {"token": IMAGE_PLACEHOLDER, "id": image_id},
        "vision": {
            "trunk_keys": len(trunk),
            "dropped_trunk_keys": sorted(k for k in trunk if k.startswith(UNUSED_TRUNK_PREFIXES)),
            "image_size": vision_config.image_size,
            "patch_size": vision_config.patch_size,
            "layers": vision_config.num_hidden_layers,
            "feature_layer": -2,
        },
        "dtype": "float16",
        "weights_sha256": weights_sha256(out),
    }
    receipt_path = out / "receipt.json"
    receipt_path.write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    _LOG.info("converted LLaVA-Rad: %d LoRA weights merged", len(merged))
    return receipt_path
