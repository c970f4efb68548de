"""GPU runtime benchmark: LLaVA-Rad-shaped model, time to first token, decode rate vs bandwidth.

On CUDA it builds a LLaVA-Rad-shaped 7B model (Vicuna-7B text, ViT-B/14 Dinov2 tower at 518 px,
mlp2x_gelu projector) with random fp16 weights in GPU memory (no download; output is noise); on
CPU it uses the tiny checkpoint (``medvlm.tiny``) loaded through ``TransformersRuntime``, or any
``--model DIR``. For slicing off (one 518 px image, 1,369 visual tokens) and on (a 2500 x 3000 film,
LLaVA-UHD slices under the visual-token budget) it measures:

* time to first token (vision encoding + prefill + one token), median of ``--repeats``;
* decode tokens/s (greedy, KV cache, batch 1) and its ratio to the memory-bandwidth limit
  ``bandwidth / bytes of language-model weights read per token``;
* peak memory (CUDA allocator peak; on CPU the process's max RSS);
* visual and prompt tokens;
* grounding cost per finding (``--grounding``, on by default): one relevance map of the
  verification question with gradient x input (vision + one forward and one backward pass of the
  language model with respect to the visual tokens), its ratio to time to first token and to one
  plain 8-token verification answer, and the CUDA peak memory of the grounding pass alone.

Usage: ``nice python bench/gpu_runtime.py [--out bench/results/gpu_runtime.json] [--model DIR]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvlm.budget import DEFAULT_VISUAL_TOKEN_BUDGET  # noqa: E402
from medvlm.processing import ProcessorConfig  # noqa: E402
from medvlm.prompts.conversation import (  # noqa: E402
    VICUNA_V1,
    findings_instruction,
    splice_image_tokens,
)
from medvlm.runtime.checkpoint import greedy_generation_config, llava_rad_config  # noqa: E402
from medvlm.runtime.visual import build_visual_input  # noqa: E402

# Peak memory bandwidth, GB/s (vendor data sheets). Matched on the CUDA device name.
GPU_BANDWIDTH_GBS: dict[str, float] = {
    "V100": 900.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100": 1555.0,
    "H100 80GB HBM3": 3350.0,
    "H100 SXM": 3350.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "H200": 4800.0,
    "L40S": 864.0,
    "L4": 300.0,
    "A10": 600.0,
    "T4": 320.0,
    "RTX 4090": 1008.0,
}
V100_SCALE_FROM_H100 = {"decode": 3.7, "prefill": 7.9}
GOALS = {"decode_fraction_of_bandwidth": 0.60, "peak_memory_gb": 15.0, "visual_tokens": 1500}


@dataclass
class Subject:
    label: str
    model: Any
    tokenizer: Any
    image_token_id: int
    device: torch.device
    dtype: torch.dtype
    native_size: int
    patch_size: int
    generation: Any
    """The greedy GenerationConfig it decodes with (the checkpoint's own for ``--model``)."""


def gpu_bandwidth_gbs(name: str) -> float | None:
    """The table entry whose key occurs in ``name`` (longest key first), else ``None``."""
    for key in sorted(GPU_BANDWIDTH_GBS, key=len, reverse=True):
        if key.lower() in name.lower():
            return GPU_BANDWIDTH_GBS[key]
    return None


def llava_rad_7b_config(image_token_id: int) -> Any:
    """Vicuna-7B widths and a ViT-B/14 tower in LLaVA-Rad's architecture."""
    return llava_rad_config(
        text={
            "vocab_size": 32001,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "rms_norm_eps": 1e-5,
        },
        vision={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
        image_token_id=image_token_id,
    )


def random_7b_subject(device: torch.device) -> Subject:
    """LLaVA-Rad-shaped 7B with random fp16 weights, built directly in GPU memory."""
    from transformers import LlavaForConditionalGeneration

    from medvlm.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    image_id = int(tokenizer.convert_tokens_to_ids("<image>"))
    config = llava_rad_7b_config(image_id)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration._from_config(
                config, attn_implementation="sdpa", dtype=torch.float16
            )
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    generation = greedy_generation_config(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, image_token_id=image_id
    )
    return Subject("llava-rad-shaped-7b-random-fp16", model, tokenizer, image_id, device,
                   torch.float16, 518, 14, generation)  # fmt: skip


def checkpoint_subject(model_dir: Path, device: str) -> Subject:
    from medvlm.runtime import TransformersRuntime

    runtime = TransformersRuntime(model_dir, device=device)
    model = runtime.model
    placement = runtime.placement
    return Subject(
        runtime.model_id,
        model,
        runtime.tokenizer,
        int(model.config.image_token_index),
        placement.device,
        placement.dtype,
        int(model.config.vision_config.image_size),
        int(model.config.vision_config.patch_size),
        runtime.generation_config,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _separator_id(tokenizer: Any, candidates: tuple[str, ...]) -> int:
    for token in candidates:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            return token_id
    raise SystemExit(f"tokenizer has none of {candidates}")


def _film(width: int, height: int) -> np.ndarray:
    # A smooth synthetic "film" (deterministic), not noise: gradient plus rings.
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot(x - width / 2, y - height / 2)
    img = 128 + 60 * np.sin(r / 37.0) + 40 * (y / height - 0.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def _prepare(subject: Subject, image: np.ndarray, slicing: bool, policy: str) -> dict[str, Any]:
    timings: dict[str, float] = {}
    config = ProcessorConfig(
        native_size=subject.native_size,
        patch_size=subject.patch_size,
        slicing=slicing,
        visual_token_budget=DEFAULT_VISUAL_TOKEN_BUDGET,
        budget_policy=policy,  # type: ignore[arg-type]
    )
    visual = build_visual_input(
        image,
        model=subject.model,
        processor_config=config,
        slicing=slicing,
        token_budget=DEFAULT_VISUAL_TOKEN_BUDGET,
        policy=policy,  # type: ignore[arg-type]
        newline_id=_separator_id(subject.tokenizer, ("\n", "<0x0A>")),
        comma_id=_separator_id(subject.tokenizer, (",",)),
        device=subject.device,
        dtype=subject.dtype,
        timings=timings,
    )
    tok = subject.tokenizer
    spliced = splice_image_tokens(
        VICUNA_V1.render(findings_instruction("cough and fever"), image=True),
        lambda s: tok(s).input_ids,
        bos_token_id=tok.bos_token_id,
        image_token_id=subject.image_token_id,
        n_image_tokens=visual.n_tokens,
    )
    input_ids = torch.tensor([spliced.input_ids], device=subject.device)
    kwargs: dict[str, Any]
    if visual.embeds is not None:
        text = subject.model.get_input_embeddings()(input_ids)
        s, n = spliced.image_start, visual.n_tokens
        embeds = torch.cat(
            [text[:, :s], visual.embeds.to(text.dtype).unsqueeze(0), text[:, s + n :]], dim=1
        )
        kwargs = {"inputs_embeds": embeds}
    else:
        kwargs = {"input_ids": input_ids, "pixel_values": visual.pixel_values}
    kwargs["attention_mask"] = torch.ones(
        (1, len(spliced.input_ids)), dtype=torch.long, device=subject.device
    )
    return {"kwargs": kwargs, "visual": visual, "prompt_tokens": len(spliced.input_ids),
            "timings": timings}  # fmt: skip


def _generate_ms(subject: Subject, kwargs: dict[str, Any], new_tokens: int) -> float:
    generation = copy.deepcopy(subject.generation)
    generation.max_new_tokens = generation.min_new_tokens = new_tokens
    _sync(subject.device)
    start = time.perf_counter()
    out = subject.model.generate(
        **kwargs,
        generation_config=generation,
    )
    _sync(subject.device)
    elapsed = (time.perf_counter() - start) * 1000.0
    produced = out.shape[1] - (kwargs["input_ids"].shape[1] if "input_ids" in kwargs else 0)
    if produced != new_tokens:
        raise SystemExit(f"generated {produced} tokens, expected {new_tokens}")
    return elapsed


def _lm_weight_bytes(model: Any) -> int:
    """Bytes of weights read per decoded token: language model (minus embeddings) + lm_head."""
    lm = model.model.language_model
    total = sum(p.numel() * p.element_size() for p in lm.parameters())
    embed = lm.embed_tokens.weight
    total -= embed.numel() * embed.element_size()
    head = model.lm_head.weight
    return total + head.numel() * head.element_size()


def measure(
    subject: Subject, slicing: bool, policy: str, new_tokens: int, repeats: int
) -> dict[str, Any]:
    """TTFT = preprocessing and vision (sliced path) + generate(1); decode = generate(N) - (1)."""
    image = _film(2500, 3000)
    ttft, decode = [], []
    with torch.inference_mode():
        prepared = _prepare(subject, image, slicing, policy)
        _generate_ms(subject, prepared["kwargs"], 2)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            prepared = _prepare(subject, image, slicing, policy)
            _sync(subject.device)
            prep_ms = (time.perf_counter() - start) * 1000.0
            one_ms = _generate_ms(subject, prepared["kwargs"], 1)
            full_ms = _generate_ms(subject, prepared["kwargs"], new_tokens)
            ttft.append(prep_ms + one_ms)
            decode.append(max(full_ms - one_ms, 1e-6))
    decode_ms = statistics.median(decode)
    return {
        "slicing": slicing,
        "policy": policy if slicing else None,
        "image_size": [2500, 3000],
        "visual_tokens": prepared["visual"].n_tokens,
        "prompt_tokens": prepared["prompt_tokens"],
        "budget": prepared["visual"].details.get("budget"),
        "ttft_ms": round(statistics.median(ttft), 2),
        "decode_tokens_per_s": round((new_tokens - 1) / (decode_ms / 1000.0), 2),
        "decode_ms_per_token": round(decode_ms / (new_tokens - 1), 3),
        "new_tokens": new_tokens,
        "repeats": repeats,
        "stage_ms_last": prepared["timings"],
    }


def measure_grounding(subject: Subject, slicing: bool, policy: str, repeats: int) -> dict[str, Any]:
    """One relevance map per finding (gradient x input) on the 2500 x 3000 film, and a plain
    8-token answer to the same question, in the same run."""
    from medvlm.grounding import map_to_boxes
    from medvlm.grounding.llava import LlavaGroundingInputs, llava_relevance
    from medvlm.prompts.checking import render_verify
    from medvlm.prompts.knowledge import load_knowledge_base

    image = _film(2500, 3000)
    question = render_verify(load_knowledge_base()["pleural_effusion"])
    config = ProcessorConfig(
        native_size=subject.native_size,
        patch_size=subject.patch_size,
        slicing=slicing,
        visual_token_budget=DEFAULT_VISUAL_TOKEN_BUDGET,
        budget_policy=policy,  # type: ignore[arg-type]
    )
    inputs = LlavaGroundingInputs(
        model=subject.model,
        tokenizer=subject.tokenizer,
        template=VICUNA_V1,
        processor_config=config,
        slicing=slicing,
        token_budget=DEFAULT_VISUAL_TOKEN_BUDGET,
        policy=policy,  # type: ignore[arg-type]
        newline_id=_separator_id(subject.tokenizer, ("\n", "<0x0A>")),
        comma_id=_separator_id(subject.tokenizer, (",",)),
        image_token_id=subject.image_token_id,
        device=subject.device,
        dtype=subject.dtype,
    )
    for p in subject.model.parameters():  # only the visual tokens need a gradient
        p.requires_grad_(False)
    out: dict[str, Any] = {"slicing": slicing, "policy": policy if slicing else None,
                           "method": "gradient_x_input"}  # fmt: skip
    with torch.inference_mode():
        prepared = _prepare(subject, image, slicing, policy)
        answer = []
        for _ in range(repeats):
            start = time.perf_counter()
            prepared = _prepare(subject, image, slicing, policy)
            _generate_ms(subject, prepared["kwargs"], 8)
            answer.append((time.perf_counter() - start) * 1000.0)
    if subject.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(subject.device)
    times, error = [], None
    for _ in range(repeats):
        _sync(subject.device)
        start = time.perf_counter()
        try:
            relevance = llava_relevance(inputs, image, question)
            boxes, _ = map_to_boxes(relevance.film_map, label="pleural effusion")
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory, fp16 overflow
            error = f"{type(exc).__name__}: {exc}"[:500]
            break
        _sync(subject.device)
        times.append((time.perf_counter() - start) * 1000.0)
    answer_ms = statistics.median(answer)
    out["verify_answer_ms"] = round(answer_ms, 2)
    if times:
        grounding_ms = statistics.median(times)
        out.update(
            grounding_ms=round(grounding_ms, 2),
            grounding_over_verify_answer=round(grounding_ms / answer_ms, 3),
            visual_tokens=relevance.details.get("visual_tokens"),
            boxes=len(boxes),
            stage_ms_last=relevance.timings_ms,
        )
    if error:
        out["error"] = error
    if subject.device.type == "cuda":
        out["grounding_peak_memory_gb"] = round(
            torch.cuda.max_memory_allocated(subject.device) / 1e9, 3
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_runtime.json")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder to load")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy", default="pool", choices=["pool", "attention"])
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="memory bandwidth to compare with (default: GPU table)")  # fmt: skip
    parser.add_argument("--grounding", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one relevance map per finding (gradient x input)")  # fmt: skip
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    build_start = time.perf_counter()
    if args.model is not None:
        subject = checkpoint_subject(args.model, str(device))
    elif device.type == "cuda":
        subject = random_7b_subject(device)
    else:
        from medvlm.tiny import init_tiny_checkpoint

        tmp = tempfile.TemporaryDirectory()
        subject = checkpoint_subject(init_tiny_checkpoint(Path(tmp.name) / "tiny"), "cpu")
    build_s = time.perf_counter() - build_start

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        name, capability = platform.processor() or platform.machine(), None
    bandwidth = args.bandwidth_gbs
    if bandwidth is None and device.type == "cuda":
        bandwidth = gpu_bandwidth_gbs(name)

    runs = [
        measure(subject, False, args.policy, args.new_tokens, args.repeats),
        measure(subject, True, args.policy, args.new_tokens, args.repeats),
    ]
    weight_bytes = _lm_weight_bytes(subject.model)
    limit_tps = bandwidth * 1e9 / weight_bytes if bandwidth else None
    for run in runs:
        run["bandwidth_limit_tokens_per_s"] = round(limit_tps, 2) if limit_tps else None
        run["fraction_of_bandwidth_limit"] = (
            round(run["decode_tokens_per_s"] / limit_tps, 4) if limit_tps else None
        )
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
        peak_kind = "cuda_max_memory_allocated"
    else:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        peak_kind = "process_max_rss"
    params = sum(p.numel() for p in subject.model.parameters())
    off, on = runs
    result: dict[str, Any] = {
        "benchmark": "gpu_runtime",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": subject.label,
        "parameters": params,
        "dtype": str(subject.dtype).removeprefix("torch."),
        "lm_weight_bytes_per_token": weight_bytes,
        "device": {
            "type": device.type,
            "name": name,
            "compute_capability": capability,
            "bandwidth_gbs": bandwidth,
        },
        "build_s": round(build_s, 2),
        "peak_memory_gb": round(peak_gb, 3),
        "peak_memory_kind": peak_kind,
        "runs": runs,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "goals": GOALS,
        "goals_met": {
            "visual_tokens_2500x3000_sliced": on["visual_tokens"] <= GOALS["visual_tokens"],
            "decode_fraction": (
                off["fraction_of_bandwidth_limit"] >= GOALS["decode_fraction_of_bandwidth"]
                if off["fraction_of_bandwidth_limit"] is not None
                else None
            ),
            "peak_memory": peak_gb <= GOALS["peak_memory_gb"] if device.type == "cuda" else None,
        },
    }
    if args.grounding:
        result["grounding"] = [
            measure_grounding(subject, slicing, args.policy, args.repeats)
            for slicing in (False, True)
        ]
        for entry, run in zip(result["grounding"], runs, strict=True):
            if "grounding_ms" in entry:
                entry["grounding_over_ttft"] = round(entry["grounding_ms"] / run["ttft_ms"], 3)
    if device.type == "cuda" and "H100" in name:
        result["v100_estimate"] = {
            "scale": V100_SCALE_FROM_H100,
            "decode_tokens_per_s": round(off["decode_tokens_per_s"] / 3.7, 2),
            "ttft_ms_slicing_off": round(off["ttft_ms"] * 7.9, 1),
            "ttft_ms_slicing_on": round(on["ttft_ms"] * 7.9, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "device", "peak_memory_gb", "goals_met")}))
    for run in runs:
        print(
            f"slicing={'on ' if run['slicing'] else 'off'} visual={run['visual_tokens']:5d} "
            f"ttft={run['ttft_ms']:.1f} ms decode={run['decode_tokens_per_s']:.1f} tok/s "
            f"bw-fraction={run['fraction_of_bandwidth_limit']}"
        )
    for entry in result.get("grounding", []):
        print(f"grounding slicing={'on ' if entry['slicing'] else 'off'} {json.dumps(entry)}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
