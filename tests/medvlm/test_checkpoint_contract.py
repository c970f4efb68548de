"""One configuration, one place (issue 9, item 3): what the tiny checkpoint writes is what the
runtime reads back, and the checkpoint's own files say how it is run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, get_args

import pytest

from medvlm.budget import DEFAULT_VISUAL_TOKEN_BUDGET, BudgetPolicy
from medvlm.processing import CHECKPOINT_KEYS, PREPROCESSOR_CONFIG, ProcessorConfig
from medvlm.runtime import (
    DEFAULT_TOKEN_BUDGET,
    Backend,
    CheckpointConfigError,
    DType,
    Quantization,
    RuntimeConfig,
    TransformersRuntime,
)
from medvlm.runtime.checkpoint import (
    GENERATION_CONFIG,
    LLAVA_RAD_ARCHITECTURE,
    greedy_generation_config,
    llava_rad_config,
    read_checkpoint_config,
)
from tests.medvlm.test_runtime_helpers import offline_guard, tiny_checkpoint, tiny_runtime

__all__ = ["offline_guard", "tiny_checkpoint", "tiny_runtime"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_architecture_table_is_what_is_written_and_what_is_checked(
    tiny_checkpoint: Path,
) -> None:
    raw = json.loads((tiny_checkpoint / "config.json").read_text())
    for fixed in LLAVA_RAD_ARCHITECTURE:
        assert raw[fixed.key] == fixed.value, fixed.key
    info = read_checkpoint_config(tiny_checkpoint)
    assert (info.vision_image_size, info.vision_patch_size) == (518, 14)
    assert raw["image_seq_length"] == (518 // 14) ** 2


@pytest.mark.parametrize("fixed", LLAVA_RAD_ARCHITECTURE, ids=lambda f: f.key)
def test_each_architecture_row_is_validated(
    tiny_checkpoint: Path, tmp_path: Path, fixed: Any
) -> None:
    broken = _copy(tiny_checkpoint, tmp_path / "broken")
    _edit_json(broken / "config.json", **{fixed.key: "something-else"})
    with pytest.raises(CheckpointConfigError, match=f"'{fixed.key}': expected {fixed.value!r}"):
        read_checkpoint_config(broken)


def test_llava_rad_config_fills_llava_rad_defaults() -> None:
    config = llava_rad_config(
        text={"vocab_size": 40, "hidden_size": 16, "num_attention_heads": 2},
        vision={"hidden_size": 16, "num_attention_heads": 2, "image_size": 56},
        image_token_id=39,
    )
    assert config.vision_config.patch_size == 14 and config.image_seq_length == 16
    assert config.text_config.bos_token_id == 1 and config.text_config.pad_token_id == 0
    assert config.image_token_index == 39 and config.tie_word_embeddings is False


def test_tiny_checkpoint_writes_the_greedy_generation_config(tiny_checkpoint: Path) -> None:
    written = json.loads((tiny_checkpoint / GENERATION_CONFIG).read_text())
    expected = greedy_generation_config(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, image_token_id=written["suppress_tokens"][0]
    ).to_diff_dict()
    expected.pop("transformers_version", None)
    written.pop("transformers_version", None)
    assert written == expected


def test_runtime_decodes_with_the_checkpoint_generation_config(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    image_id = read_checkpoint_config(ckpt).image_token_id
    _edit_json(ckpt / GENERATION_CONFIG, repetition_penalty=1.3, suppress_tokens=[5], num_beams=2)
    runtime = TransformersRuntime(ckpt, device="cpu")
    generation = runtime.generation_config
    assert generation.repetition_penalty == 1.3 and generation.num_beams == 2
    assert generation.suppress_tokens == [5, image_id]  # the image token is always suppressed
    assert json.loads(runtime.provenance()["generation"])["num_beams"] == 2
    result = runtime.generate(None, "Is there an effusion?", max_new_tokens=3)
    assert result.output_tokens <= 3


def test_runtime_refuses_a_sampling_generation_config(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _edit_json(ckpt / GENERATION_CONFIG, do_sample=True, temperature=0.9)
    with pytest.raises(CheckpointConfigError, match=r"'generation_config.do_sample'.*greedily"):
        TransformersRuntime(ckpt, device="cpu")


def test_runtime_without_generation_config_decodes_greedily(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / GENERATION_CONFIG).unlink()
    generation = TransformersRuntime(ckpt, device="cpu").generation_config
    assert generation.do_sample is False and generation.num_beams == 1
    assert generation.suppress_tokens == [read_checkpoint_config(ckpt).image_token_id]


def test_preprocessor_config_round_trips_and_travels_with_the_checkpoint(
    tiny_checkpoint: Path, tiny_runtime: Any
) -> None:
    stored = json.loads((tiny_checkpoint / PREPROCESSOR_CONFIG).read_text())
    assert tuple(stored) == CHECKPOINT_KEYS
    loaded = ProcessorConfig.from_pretrained(tiny_checkpoint, slicing=True, max_slices=3)
    assert loaded is not None and loaded.slicing and loaded.max_slices == 3
    assert {k: loaded.to_dict()[k] for k in CHECKPOINT_KEYS} == stored
    assert tiny_runtime.processor_config == ProcessorConfig.from_pretrained(
        tiny_checkpoint,
        slicing=False,
        max_slices=7,
        visual_token_budget=DEFAULT_TOKEN_BUDGET,
        budget_policy="pool",
    )


def test_runtime_uses_the_checkpoint_image_normalisation(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _edit_json(ckpt / PREPROCESSOR_CONFIG, image_mean=[0.5, 0.5, 0.5], resize_mode="fit")
    config = TransformersRuntime(ckpt, device="cpu", slicing=True).processor_config
    assert config.image_mean == (0.5, 0.5, 0.5) and config.resize_mode == "fit"
    assert config.slicing is True  # runtime settings stay the runtime's


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"native_size": 336}, r"'preprocessor_config.native_size'.*differ from the vision tower"),
        ({"slicing": True}, r"'preprocessor_config'.*runtime settings"),
    ],
)
def test_runtime_refuses_a_preprocessor_config_that_does_not_fit(
    tiny_checkpoint: Path, tmp_path: Path, changes: dict[str, Any], match: str
) -> None:
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    _edit_json(ckpt / PREPROCESSOR_CONFIG, **changes)
    with pytest.raises(CheckpointConfigError, match=match):
        TransformersRuntime(ckpt, device="cpu")


def test_settings_reuse_the_runtime_enums_and_default_budget() -> None:
    from app.settings import ModelBackend, ModelSettings

    fields = ModelSettings.model_fields
    assert ModelBackend is Backend
    assert fields["backend"].annotation is Backend
    assert fields["dtype"].annotation is DType
    assert fields["quantization"].annotation is Quantization
    assert set(get_args(fields["budget_policy"].annotation)) == set(get_args(BudgetPolicy))
    assert fields["token_budget"].default == DEFAULT_TOKEN_BUDGET == DEFAULT_VISUAL_TOKEN_BUDGET
    assert RuntimeConfig().token_budget == DEFAULT_TOKEN_BUDGET
    assert ProcessorConfig().visual_token_budget == DEFAULT_TOKEN_BUDGET
    settings = ModelSettings(dtype="float16", quantization="nf4")  # type: ignore[arg-type]
    assert settings.dtype is DType.FLOAT16 and settings.quantization is Quantization.NF4
