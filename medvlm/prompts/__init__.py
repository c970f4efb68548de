"""Versioned prompt templates (conversation, LLaVA-Rad findings) and the findings knowledge base."""

from __future__ import annotations

from medvlm.prompts.conversation import (
    FINDINGS_TEMPLATE_ID,
    FINDINGS_TEMPLATE_VERSION,
    IMAGE_PLACEHOLDER,
    VICUNA_V1,
    ConversationTemplate,
    SplicedPrompt,
    findings_instruction,
    findings_prompt,
    splice_image_tokens,
)

__all__ = [
    "FINDINGS_TEMPLATE_ID",
    "FINDINGS_TEMPLATE_VERSION",
    "IMAGE_PLACEHOLDER",
    "VICUNA_V1",
    "ConversationTemplate",
    "SplicedPrompt",
    "findings_instruction",
    "findings_prompt",
    "splice_image_tokens",
]
