"""The transformers backend on the tiny checkpoint: loading, validation, generation, slicing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medvlm.runtime import (
    CheckpointConfigError,
    CheckpointError,
    TransformersRuntime,
    VisionLanguageRuntime,
)
from medvlm.runtime.transformers_backend import _timed
from medvlm.runtime.visual import VisualInput, layout_embeddings
from tests.medvlm.test_runtime_helpers import offline_guard, tiny_checkpoint, tiny_runtime

__all__ = ["offline_guard", "tiny_checkpoint", "tiny_runtime"]

INSTRUCTION = "Provide a description of the findings in the radiology image."


def _film(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width), dtype=np.uint8)


def test_generates_deterministically_through_the_standard_path(tiny_runtime: Any) -> None:
    image = _film(500, 600)
    first = tiny_runtime.generate(image, INSTRUCTION, max_new_tokens=6)
    second = tiny_runtime.generate(image.copy(), INSTRUCTION, max_new_tokens=6)
    assert isinstance(tiny_runtime, VisionLanguageRuntime)
    assert first.text == second.text and first.text
    assert first.visual_tokens == 37 * 37
    assert first.output_tokens == 6
    assert first.prompt_tokens > first.visual_tokens
    assert first.details["budget"] is None
    assert {"preprocess_ms", "generate_ms"} <= set(first.timings_ms)


def test_text_only_generation(tiny_runtime: Any) -> None:
    result = tiny_runtime.generate(None, "Is there an effusion?", max_new_tokens=3)
    assert result.visual_tokens == 0 and result.output_tokens == 3


def test_inputs_embeds_path_equals_standard_path(tiny_runtime: Any) -> None:
    """Splicing projected features as inputs_embeds gives the same tokens as pixel_values."""
    from medvlm.processing import ImageProcessor, ProcessorConfig
    from medvlm.prompts.conversation import VICUNA_V1, splice_image_tokens

    image = _film(520, 640, seed=3)
    standard = tiny_runtime.generate(image, INSTRUCTION, max_new_tokens=8)
    pixels = ImageProcessor(ProcessorConfig())(image).overview
    with torch.inference_mode():
        features = tiny_runtime.model.model.get_image_features(pixel_values=pixels).pooler_output[0]
    tok = tiny_runtime.tokenizer
    spliced = splice_image_tokens(
        VICUNA_V1.render(INSTRUCTION, image=True),
        lambda s: tok(s).input_ids,
        bos_token_id=tok.bos_token_id,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        n_image_tokens=features.shape[0],
    )
    visual = VisualInput(n_tokens=features.shape[0], pixel_values=None, embeds=features, details={})
    with torch.inference_mode():
        ids = tiny_runtime._run_generate(
            torch.tensor([spliced.input_ids]), visual, spliced.image_start, 8
        )
    assert tok.decode(ids, skip_special_tokens=True).strip() == standard.text


def test_image_token_is_never_generated(tiny_checkpoint: Path) -> None:
    runtime = TransformersRuntime(tiny_checkpoint, device="cpu")
    tok = runtime.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    ids = torch.tensor([tok("USER: hello ASSISTANT:").input_ids])
    with torch.no_grad():  # make <image> by far the most likely first token
        hidden = runtime.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        normed = runtime.model.model.language_model.norm(hidden)
        runtime.model.lm_head.weight[image_id] = normed / normed.norm() ** 2 * 1e4
    with torch.inference_mode():
        out = runtime._run_generate(ids, None, -1, 5)
        logits = runtime.model(input_ids=ids).logits[0, -1]
    assert int(logits.argmax()) == image_id  # unsuppressed, the model would emit <image>
    assert len(out) == 5 and image_id not in out


@pytest.mark.parametrize("policy", ["pool", "attention"])
def test_slicing_keeps_a_2500x3000_film_within_the_budget(
    tiny_checkpoint: Path, policy: str
) -> None:
    runtime = TransformersRuntime(
        tiny_checkpoint, device="cpu", slicing=True, token_budget=1500, budget_policy=policy
    )
    image = _film(2500, 3000, seed=1)
    first = runtime.generate(image, INSTRUCTION, max_new_tokens=4)
    budget = first.details["budget"]
    assert isinstance(budget, dict)
    assert budget["policy"] == policy
    assert budget["roles"] == ["slice"] * 6 + ["overview"]
    assert budget["separator_tokens"] == 6
    assert first.visual_tokens == budget["visual_tokens"] <= 1500
    assert budget["tokens_before"] > 1500
    plan = first.details["image"]["plan"]  # type: ignore[index]
    assert plan["grid"] == [2, 3]
    again = runtime.generate(image, INSTRUCTION, max_new_tokens=4)
    assert again.text == first.text and again.details["budget"] == budget
    assert json.loads(runtime.provenance()["slicing"])["policy"] == policy


def test_layout_puts_commas_and_newlines_row_major_then_overview() -> None:
    embed = torch.nn.Embedding(10, 1)
    with torch.no_grad():
        embed.weight.copy_(torch.arange(10, dtype=torch.float32).view(10, 1) * -1)
    parts = [torch.full((2, 1), float(100 + i)) for i in range(6)] + [torch.full((3, 1), 999.0)]
    out = layout_embeddings(parts, grid=(3, 2), embed=embed, newline_id=4, comma_id=7).view(-1)
    seq = out.tolist()
    # rows: s0 , s1 , s2 \n s3 , s4 , s5 \n overview
    assert seq == [
        100, 100, -7, 101, 101, -7, 102, 102, -4,
        103, 103, -7, 104, 104, -7, 105, 105, -4,
        999, 999, 999,
    ]  # fmt: skip


def test_provenance_names_model_weights_template_and_configs(
    tiny_runtime: Any, tiny_checkpoint: Path
) -> None:
    prov = tiny_runtime.provenance()
    file_hash = hashlib.sha256((tiny_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert (
        prov["weights_sha256"]
        == hashlib.sha256(f"model.safetensors\t{file_hash}\n".encode()).hexdigest()
    )
    assert prov["model_id"] == "radcheck/tiny-llava-rad"
    assert (prov["prompt_template_id"], prov["prompt_template_version"]) == ("vicuna_v1", "1")
    assert json.loads(prov["slicing"])["enabled"] is False
    generation = json.loads(prov["generation"])
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 256
    assert (prov["device"], prov["dtype"]) == ("cpu", "float32")


def _broken_copy(src: Path, dst: Path, edit: Any) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        ("model_type", lambda c: c.update(model_type="llava_next")),
        ("vision_config.model_type", lambda c: c["vision_config"].update(model_type="clip")),
        ("vision_feature_layer", lambda c: c.update(vision_feature_layer=-1)),
        ("text_config.model_type", lambda c: c["text_config"].update(model_type="mistral")),
        ("image_token_index", lambda c: c.update(image_token_index=5)),
        ("text_config.vocab_size", lambda c: c.update(image_token_index=100000)),
    ],
)
def test_bad_checkpoint_config_names_the_key(
    tiny_checkpoint: Path, tmp_path: Path, key: str, edit: Any
) -> None:
    broken = _broken_copy(tiny_checkpoint, tmp_path / "broken", edit)
    with pytest.raises(CheckpointConfigError, match=f"checkpoint config key '{key}'") as info:
        TransformersRuntime(broken, device="cpu")
    assert info.value.key == key


def test_missing_folder_and_weights_are_clear(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not exist.*never downloaded"):
        TransformersRuntime(tmp_path / "nope", device="cpu")
    copy = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors weights"):
        TransformersRuntime(copy, device="cpu")


def test_timed_records_milliseconds() -> None:
    timings: dict[str, float] = {}
    with _timed(timings, "stage_ms"):
        pass
    assert set(timings) == {"stage_ms"} and timings["stage_ms"] >= 0.0


def test_slicing_on_budgets_a_film_too_small_to_slice(tiny_checkpoint: Path) -> None:
    runtime = TransformersRuntime(tiny_checkpoint, device="cpu", slicing=True, token_budget=300)
    result = runtime.generate(_film(400, 500), INSTRUCTION, max_new_tokens=3)
    budget = result.details["budget"]
    assert isinstance(budget, dict)
    assert budget["roles"] == ["overview"] and budget["separator_tokens"] == 0
    assert budget["tokens_before"] > 300 >= result.visual_tokens == budget["visual_tokens"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_sdpa(tiny_checkpoint: Path) -> None:
    runtime = TransformersRuntime(tiny_checkpoint, device="cuda")
    assert runtime.model.dtype == torch.float16
    assert runtime.model.config._attn_implementation == "sdpa"
    cpu = TransformersRuntime(tiny_checkpoint, device="cpu")
    image = _film(500, 600)
    first = runtime.generate(image, INSTRUCTION, max_new_tokens=4)
    assert first.text == runtime.generate(image, INSTRUCTION, max_new_tokens=4).text
    assert first.visual_tokens == cpu.generate(image, INSTRUCTION, max_new_tokens=4).visual_tokens


def test_corrupt_weights_and_bad_token_count_are_clear(
    tiny_checkpoint: Path, tmp_path: Path, tiny_runtime: Any
) -> None:
    from medvlm.runtime import RuntimeConfigError

    copy = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load the weights"):
        TransformersRuntime(copy, device="cpu")
    with pytest.raises(RuntimeConfigError, match="max_new_tokens must be >= 1"):
        tiny_runtime.generate(None, "x", max_new_tokens=0)


def test_explicit_float16_runs_on_cpu(tiny_checkpoint: Path) -> None:
    runtime = TransformersRuntime(tiny_checkpoint, device="cpu", dtype="float16")
    assert runtime.model.dtype == torch.float16
    result = runtime.generate(_film(500, 600), INSTRUCTION, max_new_tokens=3)
    assert result.output_tokens == 3 and runtime.provenance()["dtype"] == "float16"
