"""Versioned prompt templates of LLaVA-Rad and the reference's token splicing around the image.

Everything here is an immutable constant or a pure function of strings and token ids, so golden
tests pin it exactly. Facts: ../shared/specs/llava_rad.md ("Prompt and generation").

The reference (microsoft/LLaVA-Rad, ``tokenizer_image_token``) tokenises the text before and
after ``<image>`` separately, keeps one BOS, and splices the image tokens in between. A
SentencePiece-style tokenizer adds its word-start marker to the start of the second chunk, so the
reference ids differ by one token from tokenising the prompt with ``<image>`` expanded in place.
We reproduce the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<image>"
"""The placeholder string for the image in a rendered prompt (and the tokenizer's image token)."""

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

FINDINGS_TEMPLATE_ID = "llava-rad-findings"
FINDINGS_TEMPLATE_VERSION = "1"
FINDINGS_INSTRUCTION = "Provide a description of the findings in the radiology image."
FINDINGS_INSTRUCTION_WITH_REASON = (
    "Provide a description of the findings in the radiology image given the following indication: "
    "{reason}"
)


@dataclass(frozen=True)
class ConversationTemplate:
    """A single-turn chat template (Vicuna v1 style: ``sep`` between turns, open assistant turn)."""

    template_id: str
    version: str
    system: str
    user_role: str = "USER"
    assistant_role: str = "ASSISTANT"
    sep: str = " "

    @property
    def ref(self) -> str:
        """``id@version``, the value stored in provenance."""
        return f"{self.template_id}@{self.version}"

    def render(self, instruction: str, *, image: bool) -> str:
        """The full prompt for one user turn, ending with the open assistant turn.

        With ``image`` the user turn starts with ``<image>`` and a newline, as in the reference.
        """
        user = f"{IMAGE_PLACEHOLDER}\n{instruction}" if image else instruction
        return f"{self.system}{self.sep}{self.user_role}: {user}{self.sep}{self.assistant_role}:"


VICUNA_V1 = ConversationTemplate(template_id="vicuna_v1", version="1", system=VICUNA_V1_SYSTEM)
"""LLaVA's ``conv_vicuna_v1`` (separator style TWO, ``sep=" "``), the template LLaVA-Rad uses."""


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace (spaces, tabs, newlines) become one space; ends are stripped."""
    return " ".join(text.split())


def findings_instruction(reason: str | None = None) -> str:
    """LLaVA-Rad's findings instruction, with the reason for exam when one is given.

    The reason's whitespace is collapsed; an empty or blank reason gives the plain instruction.
    """
    collapsed = collapse_whitespace(reason) if reason is not None else ""
    if not collapsed:
        return FINDINGS_INSTRUCTION
    return FINDINGS_INSTRUCTION_WITH_REASON.format(reason=collapsed)


def findings_prompt(reason: str | None = None) -> str:
    """The complete LLaVA-Rad findings prompt (Vicuna v1, image first)."""
    return VICUNA_V1.render(findings_instruction(reason), image=True)


Encode = Callable[[str], Sequence[int]]
"""Tokenise one string the way the tokenizer does by default (with its BOS when it adds one)."""


@dataclass(frozen=True)
class SplicedPrompt:
    """Token ids of a prompt with the image tokens spliced in, and where they are."""

    input_ids: tuple[int, ...]
    image_start: int
    """Index of the first image token, or -1 when the prompt has no image."""
    n_image_tokens: int

    @property
    def text_tokens(self) -> int:
        """Tokens that are not image tokens."""
        return len(self.input_ids) - self.n_image_tokens


def splice_image_tokens(
    prompt: str,
    encode: Encode,
    *,
    bos_token_id: int | None,
    image_token_id: int,
    n_image_tokens: int,
) -> SplicedPrompt:
    """Token ids the way the reference builds them: chunks tokenised apart, BOS once, image spliced.

    ``prompt`` holds at most one ``<image>``. Each chunk is tokenised by ``encode`` on its own; a
    leading BOS is kept on the first chunk only; ``n_image_tokens`` copies of ``image_token_id`` go
    where ``<image>`` was. Raises ``ValueError`` for more than one placeholder or a negative count.
    """
    if n_image_tokens < 0:
        raise ValueError(f"n_image_tokens must be >= 0, got {n_image_tokens}")
    chunks = prompt.split(IMAGE_PLACEHOLDER)
    if len(chunks) > 2:
        raise ValueError(
            f"the prompt holds {len(chunks) - 1} {IMAGE_PLACEHOLDER!r} placeholders; "
            "one image per prompt is supported"
        )
    encoded = [list(encode(chunk)) for chunk in chunks]
    has_bos = bool(encoded[0]) and bos_token_id is not None and encoded[0][0] == bos_token_id
    ids: list[int] = [encoded[0][0]] if has_bos else []
    offset = 1 if has_bos else 0
    ids.extend(encoded[0][offset:])
    if len(encoded) == 1:
        return SplicedPrompt(input_ids=tuple(ids), image_start=-1, n_image_tokens=0)
    image_start = len(ids)
    ids.extend([image_token_id] * n_image_tokens)
    second = encoded[1]
    if has_bos and second and second[0] == bos_token_id:
        second = second[1:]
    ids.extend(second)
    return SplicedPrompt(
        input_ids=tuple(ids), image_start=image_start, n_image_tokens=n_image_tokens
    )


__all__ = [
    "FINDINGS_INSTRUCTION",
    "FINDINGS_INSTRUCTION_WITH_REASON",
    "FINDINGS_TEMPLATE_ID",
    "FINDINGS_TEMPLATE_VERSION",
    "IMAGE_PLACEHOLDER",
    "VICUNA_V1",
    "VICUNA_V1_SYSTEM",
    "ConversationTemplate",
    "Encode",
    "SplicedPrompt",
    "collapse_whitespace",
    "findings_instruction",
    "findings_prompt",
    "splice_image_tokens",
]
