"""Converter test on a synthetic checkpoint in the published LLaVA-Rad layout, built here."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional

from medvlm.convert import convert_llava_rad, timm_to_dinov2
from medvlm.runtime import ConversionError, TransformersRuntime
from tests.medvlm.test_runtime_helpers import network_guard, offline_guard

__all__ = ["offline_guard"]

R, ALPHA = 4, 8.0
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _fp16_exact(module: torch.nn.Module) -> None:
    """Round parameters to fp16-representable values so the fp16 checkpoint is lossless."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


def _dinov2_to_timm(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The inverse key map, written independently of the converter."""
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    for i in range(layers):
        h = f"encoder.layer.{i}."
        b = f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat(
                [sd[h + f"attention.{n}_proj.{kind}"] for n in ("q", "k", "v")]
            )
            out[b + f"attn.proj.{kind}"] = sd[h + f"attention.o_proj.{kind}"]
            for n in ("norm1", "norm2"):
                out[b + f"{n}.{kind}"] = sd[h + f"{n}.{kind}"]
            for n in ("fc1", "fc2"):
                out[b + f"mlp.{n}.{kind}"] = sd[h + f"mlp.{n}.{kind}"]
        out[b + "ls1.gamma"] = sd[h + "layer_scale1.lambda1"]
        out[b + "ls2.gamma"] = sd[h + "layer_scale2.lambda1"]
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with network_guard():
        yield _build_and_convert(tmp_path_factory)


def _build_and_convert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from medvlm.tiny import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("published")
    torch.manual_seed(1)
    vicuna_dir, llava_dir = root / "vicuna", root / "llava-rad"
    llava_dir.mkdir()
    tokenizer = build_tiny_tokenizer(with_image_token=False)
    llama: Any = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
    )
    _fp16_exact(llama)
    llama.generation_config = GenerationConfig(do_sample=True, temperature=0.9, top_p=0.6)
    llama.half().save_pretrained(vicuna_dir)
    tokenizer.save_pretrained(vicuna_dir)

    vision: Any = Dinov2Model(
        Dinov2Config(
            hidden_size=128,
            num_hidden_layers=3,
            num_attention_heads=2,
            mlp_ratio=2,
            image_size=518,
            patch_size=14,
            layer_norm_eps=1e-6,
            layerscale_value=0.5,
        )
    )
    with torch.no_grad():  # LayerScale and CLS must matter in the comparison
        for layer in vision.encoder.layer:
            layer.layer_scale1.lambda1.uniform_(0.2, 1.0)
            layer.layer_scale2.lambda1.uniform_(0.2, 1.0)
    _fp16_exact(vision)
    vision.eval()
    trunk = _dinov2_to_timm(vision.state_dict(), 3)
    state = {f"module.visual.trunk.{k}": v.clone() for k, v in trunk.items()}
    state["module.text.proj"] = torch.zeros(4, 4)  # the text tower is ignored
    state["module.visual.trunk.fc_norm.weight"] = torch.ones(128)  # unused pooling head
    torch.save(
        {"epoch": 3, "name": "biomedclip", "state_dict": state},
        llava_dir / "biomedclipcxr_518_checkpoint.pt",
    )

    projector = {
        "0.weight": (torch.randn(32, 128) * 0.5).half().float(),
        "0.bias": torch.randn(32).half().float(),
        "2.weight": (torch.randn(32, 32) * 0.2).half().float(),
        "2.bias": torch.randn(32).half().float(),
    }
    torch.save(
        {f"base_model.model.model.mm_projector.{k}": v for k, v in projector.items()},
        llava_dir / "non_lora_trainables.bin",
    )

    base = {k: v.float() for k, v in llama.state_dict().items()}
    adapter: dict[str, torch.Tensor] = {}
    for i in range(2):
        for name in TARGETS:
            group = (
                "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            )
            weight = base[f"model.layers.{i}.{group}.{name}.weight"]
            prefix = f"base_model.model.model.layers.{i}.{group}.{name}"
            adapter[f"{prefix}.lora_A.weight"] = torch.randn(R, weight.shape[1]) * 0.1
            adapter[f"{prefix}.lora_B.weight"] = torch.randn(weight.shape[0], R) * 0.1
    torch.save(adapter, llava_dir / "adapter_model.bin")
    (llava_dir / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "target_modules": list(TARGETS)}
        )
    )
    (llava_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llava",
                "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch",
                "mm_projector_type": "mlp2x_gelu",
                "image_aspect_ratio": "square",
            }
        )
    )
    out = root / "converted"
    receipt = convert_llava_rad(vicuna_dir, llava_dir, out)
    return {
        "vicuna": vicuna_dir,
        "llava": llava_dir,
        "out": out,
        "receipt": receipt,
        "vision": vision,
        "projector": projector,
        "base": base,
        "adapter": adapter,
        "vocab": len(tokenizer),
    }


def test_image_features_match_direct_computation_from_source(published: dict[str, Any]) -> None:
    runtime = TransformersRuntime(published["out"], device="cpu")
    torch.manual_seed(5)
    pixels = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        hidden = published["vision"](pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        p = published["projector"]
        expected = functional.linear(
            functional.gelu(functional.linear(hidden, p["0.weight"], p["0.bias"])),
            p["2.weight"],
            p["2.bias"],
        )
        got = runtime.model.model.get_image_features(pixel_values=pixels).pooler_output
    assert got[0].shape == (37 * 37, 32)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-4)


def _timm_vit_features(
    trunk: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int
) -> torch.Tensor:
    """timm ViT (DINOv2 style, LayerScale) forward written from timm's semantics, on timm keys.

    Returns the output of the second-to-last block without CLS (what LLaVA-Rad feeds the
    projector); the final norm is never applied.
    """
    w = trunk
    x = functional.conv2d(
        pixels, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=14
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + w["pos_embed"]
    blocks = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    batch, n, dim = x.shape
    for i in range(blocks - 1):
        b = f"blocks.{i}."
        h = functional.layer_norm(x, (dim,), w[b + "norm1.weight"], w[b + "norm1.bias"], 1e-6)
        qkv = functional.linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = functional.scaled_dot_product_attention(q, k, v)
        attn = attn.transpose(1, 2).reshape(batch, n, dim)
        attn = functional.linear(attn, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        x = x + w[b + "ls1.gamma"] * attn
        h = functional.layer_norm(x, (dim,), w[b + "norm2.weight"], w[b + "norm2.bias"], 1e-6)
        h = functional.linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"])
        h = functional.linear(functional.gelu(h), w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"])
        x = x + w[b + "ls2.gamma"] * h
    return x[:, 1:]


def test_image_features_match_a_timm_forward_of_the_published_trunk(
    published: dict[str, Any],
) -> None:
    """Independent of the key map: the reference computation reads the timm-named weights."""
    state = torch.load(published["llava"] / "biomedclipcxr_518_checkpoint.pt", weights_only=True)[
        "state_dict"
    ]
    trunk = {
        k.removeprefix("module.visual.trunk."): v
        for k, v in state.items()
        if k.startswith("module.visual.trunk.")
    }
    non_lora = torch.load(published["llava"] / "non_lora_trainables.bin", weights_only=True)
    p = {k.removeprefix("base_model.model.model.mm_projector."): v for k, v in non_lora.items()}
    torch.manual_seed(6)
    pixels = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        hidden = _timm_vit_features(trunk, pixels, heads=2)
        expected = functional.linear(
            functional.gelu(functional.linear(hidden, p["0.weight"], p["0.bias"])),
            p["2.weight"],
            p["2.bias"],
        )
        runtime = TransformersRuntime(published["out"], device="cpu")
        got = runtime.model.model.get_image_features(pixel_values=pixels).pooler_output[0]
    torch.testing.assert_close(got, expected[0], rtol=1e-4, atol=1e-4)


def test_lora_is_merged_in_fp32_with_alpha_over_r(published: dict[str, Any]) -> None:
    from safetensors import safe_open

    runtime = TransformersRuntime(published["out"], device="cpu")
    lm = runtime.model.model.language_model
    base, adapter = published["base"], published["adapter"]
    for i in range(2):
        for group, name in (("self_attn", "q_proj"), ("mlp", "down_proj")):
            key = f"model.layers.{i}.{group}.{name}"
            a = adapter[f"base_model.model.{key}.lora_A.weight"]
            b = adapter[f"base_model.model.{key}.lora_B.weight"]
            expected = (base[f"{key}.weight"] + (ALPHA / R) * (b @ a)).half().float()
            got = lm.get_submodule(key.removeprefix("model.")).weight
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
            assert not torch.equal(got, base[f"{key}.weight"])
    files = list(published["out"].glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118 == {torch.float16}


def test_image_token_tokenizer_and_generation_config(published: dict[str, Any]) -> None:
    out: Path = published["out"]
    vocab = published["vocab"]
    config = json.loads((out / "config.json").read_text())
    assert config["image_token_index"] == vocab
    assert config["text_config"]["vocab_size"] == vocab + 1
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["do_sample"] is False
    assert "temperature" not in generation and "top_p" not in generation
    assert generation["suppress_tokens"] == [vocab]
    runtime = TransformersRuntime(out, device="cpu")
    assert runtime.tokenizer.convert_ids_to_tokens(vocab) == "<image>"
    emb = runtime.model.get_input_embeddings().weight
    assert emb.shape[0] == vocab + 1
    torch.testing.assert_close(
        emb[:vocab], published["base"]["model.embed_tokens.weight"], rtol=0, atol=0
    )
    assert runtime.model.lm_head.weight.shape[0] == vocab + 1


def test_receipt_records_source_hashes_and_versions(published: dict[str, Any]) -> None:
    import transformers

    receipt = json.loads(published["receipt"].read_text())
    sources = receipt["sources"]
    for name in ("adapter_model.bin", "non_lora_trainables.bin", "biomedclipcxr_518_checkpoint.pt"):
        path = published["llava"] / name
        assert sources[str(path)]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert receipt["libraries"]["transformers"] == transformers.__version__
    assert receipt["vision"]["dropped_trunk_keys"] == ["fc_norm.weight"]
    assert receipt["lora"] == {"r": R, "alpha": ALPHA, "scale": ALPHA / R, "merged_weights": 14}
    runtime = TransformersRuntime(published["out"], device="cpu")
    assert runtime.provenance()["weights_sha256"] == receipt["weights_sha256"]


def test_converted_checkpoint_generates(published: dict[str, Any]) -> None:
    import numpy as np

    runtime = TransformersRuntime(published["out"], device="cpu")
    image = np.tile(np.arange(256, dtype=np.uint8), (300, 2))
    first = runtime.generate(image, "Describe.", max_new_tokens=4)
    assert first.visual_tokens == 1369 and first.output_tokens == 4
    assert runtime.generate(image, "Describe.", max_new_tokens=4).text == first.text


def test_missing_file_and_unknown_trunk_key_are_named(
    published: dict[str, Any], tmp_path: Path
) -> None:
    partial = tmp_path / "llava-rad"
    shutil.copytree(
        published["llava"], partial, ignore=shutil.ignore_patterns("non_lora_trainables.bin")
    )
    with pytest.raises(
        ConversionError, match=r"projector weights '.*non_lora_trainables\.bin' is missing"
    ):
        convert_llava_rad(published["vicuna"], partial, tmp_path / "out")
    with pytest.raises(ConversionError, match=r"blocks\.0\.reg_token"):
        timm_to_dinov2({"cls_token": torch.zeros(1, 1, 4), "blocks.0.reg_token": torch.zeros(1)})
