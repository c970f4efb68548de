"""Golden tests of the LLaVA-Rad prompt templates and the reference token splicing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medvlm.prompts.conversation import (
    FINDINGS_TEMPLATE_ID,
    FINDINGS_TEMPLATE_VERSION,
    VICUNA_V1,
    findings_instruction,
    findings_prompt,
    splice_image_tokens,
)
from tests.medvlm.test_runtime_helpers import offline_guard, tiny_checkpoint

__all__ = ["offline_guard", "tiny_checkpoint"]

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)


def test_template_ids_and_versions() -> None:
    assert (VICUNA_V1.template_id, VICUNA_V1.version, VICUNA_V1.ref) == (
        "vicuna_v1",
        "1",
        "vicuna_v1@1",
    )
    assert (FINDINGS_TEMPLATE_ID, FINDINGS_TEMPLATE_VERSION) == ("llava-rad-findings", "1")


def test_findings_prompt_without_reason_golden() -> None:
    assert findings_prompt() == (
        SYSTEM + " USER: <image>\nProvide a description of the findings in the radiology image."
        " ASSISTANT:"
    )


def test_findings_prompt_with_reason_collapses_whitespace_golden() -> None:
    assert findings_prompt("  Cough,\n\tfever   x3 days ") == (
        SYSTEM + " USER: <image>\nProvide a description of the findings in the radiology image "
        "given the following indication: Cough, fever x3 days ASSISTANT:"
    )


@pytest.mark.parametrize("reason", [None, "", "   \n\t "])
def test_blank_reason_gives_plain_instruction(reason: str | None) -> None:
    assert findings_instruction(reason) == (
        "Provide a description of the findings in the radiology image."
    )


def test_text_only_prompt_has_no_image() -> None:
    assert VICUNA_V1.render("Is there an effusion?", image=False) == (
        SYSTEM + " USER: Is there an effusion? ASSISTANT:"
    )


def _fake_encode(text: str) -> list[int]:
    # BOS (1) then one id per character: enough to pin the splicing arithmetic.
    return [1, *(100 + ord(c) for c in text)]


def test_splice_keeps_one_bos_and_places_image_tokens() -> None:
    spliced = splice_image_tokens(
        "ab<image>c", _fake_encode, bos_token_id=1, image_token_id=7, n_image_tokens=3
    )
    assert spliced.input_ids == (1, 197, 198, 7, 7, 7, 199)
    assert (spliced.image_start, spliced.n_image_tokens, spliced.text_tokens) == (3, 3, 4)


def test_splice_without_image_and_errors() -> None:
    assert splice_image_tokens(
        "ab", _fake_encode, bos_token_id=1, image_token_id=7, n_image_tokens=5
    ).input_ids == (1, 197, 198)
    with pytest.raises(ValueError, match="2 '<image>' placeholders"):
        splice_image_tokens(
            "<image>a<image>", _fake_encode, bos_token_id=1, image_token_id=7, n_image_tokens=1
        )


def test_reference_splicing_differs_from_naive_expansion_by_one_token(
    tiny_checkpoint: Path,
) -> None:
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    image_id = tok.convert_tokens_to_ids("<image>")
    prompt = findings_prompt()
    spliced = splice_image_tokens(
        prompt,
        lambda s: tok(s).input_ids,
        bos_token_id=tok.bos_token_id,
        image_token_id=image_id,
        n_image_tokens=4,
    )
    naive = tok(prompt.replace("<image>", "<image>" * 4)).input_ids
    assert len(spliced.input_ids) == len(naive) + 1
    start, end = spliced.image_start, spliced.image_start + 4
    assert list(spliced.input_ids[:end]) == naive[:end]
    # The one extra token: the word-start marker the tokenizer puts at the start of the chunk.
    assert tok.convert_ids_to_tokens(spliced.input_ids[end]) == "\u2581"
    assert list(spliced.input_ids[end + 1 :]) == naive[end:]
    assert spliced.input_ids.count(tok.bos_token_id) == 1
    # Golden ids around the image (pinned to the tiny tokenizer built in code).
    assert tok.convert_ids_to_tokens(list(spliced.input_ids[start - 2 : end + 3])) == [
        ":",
        "\u2581",
        "<image>",
        "<image>",
        "<image>",
        "<image>",
        "\u2581",
        "\n",
        "P",
    ]
