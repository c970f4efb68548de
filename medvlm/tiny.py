"""A tiny randomly initialised LLaVA-Rad-shaped checkpoint for tests and demos.

Same architecture as LLaVA-Rad (Llama text model, Dinov2 vision tower at 518 px with patch 14, a
GELU two-layer projector, features from the second-to-last vision layer, an ``<image>`` token), tiny
widths, a tokenizer trained here with the ``tokenizers`` library on a built-in radiology vocabulary.
It is saved with ``save_pretrained`` (safetensors) and loads through the same code path as a real
checkpoint. Its output is meaningless: use it for plumbing, shapes and determinism only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.prompts.conversation import (
    FINDINGS_INSTRUCTION_WITH_REASON,
    IMAGE_PLACEHOLDER,
    VICUNA_V1_SYSTEM,
)
from medvlm.runtime.checkpoint import greedy_generation_config, llava_rad_config

TINY_MODEL_ID = "radcheck/tiny-llava-rad"
_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<unk>",
}
TINY_VOCAB_SIZE = 512
"""Vocabulary of the trained tokenizer before ``<image>`` is appended."""

_RADIOLOGY_TEXT = """
Frontal and lateral views of the chest were obtained. PA and AP upright portable supine.
The lungs are clear. There is no focal consolidation, pleural effusion, or pneumothorax.
The cardiomediastinal silhouette is within normal limits. Heart size is normal.
Mild cardiomegaly. Moderate pulmonary edema. Severe bilateral pleural effusions.
Small left pleural effusion with adjacent atelectasis. Large right pneumothorax.
Right lower lobe opacity concerning for pneumonia. Left upper lobe nodule measuring 12 mm.
Bibasilar atelectasis. Retrocardiac opacity. Increased interstitial markings.
Endotracheal tube terminates 4 cm above the carina. Nasogastric tube courses below the diaphragm.
Right internal jugular central venous catheter tip in the superior vena cava.
Median sternotomy wires and mediastinal clips. Pacemaker leads in the right atrium and ventricle.
No acute osseous abnormality. Degenerative changes of the thoracic spine. Healed rib fracture.
Interval increase in the left effusion. Unchanged from prior. New opacity. Decreased edema.
Apex base hilum hemidiaphragm costophrenic angle blunting. Vascular congestion. Hyperinflation.
Emphysema fibrosis mass granuloma calcification aorta tortuous. Compared with the prior study.
Indication: cough, fever, shortness of breath, chest pain, trauma, line placement, evaluate.
1 2 3 4 5 6 7 8 9 0 cm mm % ( ) / - : ; , . ? ! ' "
"""


def _training_corpus() -> list[str]:
    lines = [line.strip() for line in _RADIOLOGY_TEXT.strip().splitlines()]
    lines.append(VICUNA_V1_SYSTEM)
    lines.append("USER: ASSISTANT:")
    lines.append(FINDINGS_INSTRUCTION_WITH_REASON.format(reason="cough"))
    return lines


def build_tiny_tokenizer(*, with_image_token: bool = True) -> Any:
    """A Llama-style fast tokenizer (BOS added, SentencePiece-like word marker) with ``<image>``.

    BPE trained here on the built-in text; ``<unk>``, ``<s>``, ``</s>`` are ids 0, 1, 2 as in Llama;
    ``<image>`` is appended last (``with_image_token=False`` leaves it out, as in a Vicuna base
    tokenizer). The word marker is prepended to the first piece of the input only,
    so tokenising the text after the image on its own adds one token, as Vicuna's tokenizer does.
    Returns a ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    corpus = _training_corpus()
    alphabet = sorted({ch for line in corpus for ch in line} | {"\n"})
    tok = Tokenizer(models.BPE(unk_token=_SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    if with_image_token:
        tok.add_special_tokens([AddedToken(IMAGE_PLACEHOLDER, special=True, normalized=False)])
    fast: Any = PreTrainedTokenizerFast
    return fast(
        tokenizer_object=tok,
        **_SPECIAL_TOKENS,
        model_max_length=2048,
        padding_side="left",
    )


def init_tiny_checkpoint(out_dir: Path | str, seed: int = 0) -> Path:
    """Write a tiny randomly initialised LLaVA-Rad-shaped checkpoint to ``out_dir`` and return it.

    Deterministic for a given ``seed`` (same weights, same tokenizer). The folder holds
    ``config.json``, ``model.safetensors``, ``generation_config.json`` (greedy),
    ``preprocessor_config.json`` and the tokenizer.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    from medvlm.processing import ProcessorConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER))
    config = llava_rad_config(
        text={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        },
        vision={
            "hidden_size": 32,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "mlp_ratio": 2,
        },
        image_token_id=image_id,
    )
    torch.manual_seed(seed)
    model: Any = LlavaForConditionalGeneration(config)
    model.eval()
    model.generation_config = greedy_generation_config(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, image_token_id=image_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ProcessorConfig(
        native_size=config.vision_config.image_size, patch_size=config.vision_config.patch_size
    ).save_pretrained(out)
    (out / "radcheck_model.json").write_text(
        json.dumps({"model_id": TINY_MODEL_ID, "seed": seed, "tiny": True}, indent=2) + "\n"
    )
    return out


__all__ = [
    "TINY_MODEL_ID",
    "build_tiny_tokenizer",
    "greedy_generation_config",
    "init_tiny_checkpoint",
]
