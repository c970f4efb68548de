"""Grounding benchmark: cost of one relevance map per finding next to one plain generation.

Runs the local runtime (the tiny LLaVA-Rad checkpoint on CPU by default, or ``--model DIR``) on a
synthetic 1841 x 1955 film (the size of pydicom-data's RG1 chest film) with slicing off and on, and
measures, in the same process and run, the median of ``--repeats`` of:

* ``generate_verify_ms``: one plain generation of the verification question (8 new tokens, as the
  check asks it);
* ``generate_findings_ms``: one findings generation (``--findings-tokens`` new tokens);
* ``grounding_ms``: one relevance map for the finding with the chosen method (gradient x input:
  vision + one forward and one backward pass), laid back on the film, plus the boxes;
* optionally (``--occlusion``) one MONAI occlusion map (8 x 8 patches: 65 forward passes), once.

Ratios: grounding / verify generation and grounding / findings generation. JSON to ``--out``.
Usage: ``nice python bench/grounding.py [--out bench/results/grounding.json] [--occlusion]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpu_runtime import _film  # noqa: E402
from medvlm.grounding import map_to_boxes  # noqa: E402
from medvlm.prompts.checking import render_verify  # noqa: E402
from medvlm.prompts.conversation import findings_instruction  # noqa: E402
from medvlm.prompts.knowledge import load_knowledge_base  # noqa: E402
from medvlm.runtime import TransformersRuntime  # noqa: E402

FILM_SIZE = (1841, 1955)


def _median_ms(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 2), out


def measure(
    runtime: TransformersRuntime, slicing: bool, repeats: int, findings_tokens: int, occlusion: bool
) -> dict[str, Any]:
    image = _film(*FILM_SIZE)
    question = render_verify(load_knowledge_base()["pleural_effusion"])
    runtime.generate(image, question, max_new_tokens=2)  # warm-up
    verify_ms, verify = _median_ms(
        lambda: runtime.generate(image, question, max_new_tokens=8), repeats
    )
    findings_ms, _ = _median_ms(
        lambda: runtime.generate(image, findings_instruction(None), max_new_tokens=findings_tokens),
        repeats,
    )

    def ground() -> Any:
        relevance = runtime.relevance(image, question)
        return relevance, map_to_boxes(relevance.film_map, label="pleural effusion")

    grounding_ms, (relevance, (boxes, stats)) = _median_ms(ground, repeats)
    run_stats = {k: stats[k] for k in ("regions", "mass_in_boxes", "peak_to_mean") if k in stats}
    run: dict[str, Any] = {
        "slicing": slicing,
        "film_size": list(FILM_SIZE),
        "visual_tokens": verify.visual_tokens,
        "generate_verify_ms": verify_ms,
        "generate_verify_new_tokens": 8,
        "generate_findings_ms": findings_ms,
        "generate_findings_new_tokens": findings_tokens,
        "grounding_method": relevance.method.value,
        "grounding_ms": grounding_ms,
        "grounding_stage_ms_last": relevance.timings_ms,
        "grounding_over_verify_generation": round(grounding_ms / verify_ms, 3),
        "grounding_over_findings_generation": round(grounding_ms / findings_ms, 3),
        "boxes": len(boxes),
        "map_statistics": run_stats,
        "map_shape": list(relevance.film_map.values.shape),
    }
    if occlusion:
        start = time.perf_counter()
        occ = runtime.relevance(image, question, method="occlusion")
        occ_ms = round((time.perf_counter() - start) * 1000.0, 2)
        run["occlusion_ms"] = occ_ms
        run["occlusion_forward_passes"] = occ.details["forward_passes"]
        run["occlusion_over_verify_generation"] = round(occ_ms / verify_ms, 3)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/grounding.json")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder to load")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--findings-tokens", type=int, default=64)
    parser.add_argument("--occlusion", action="store_true", help="also time MONAI occlusion once")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    tmp: tempfile.TemporaryDirectory[str] | None = None
    model_dir = args.model
    if model_dir is None:
        from medvlm.tiny import init_tiny_checkpoint

        tmp = tempfile.TemporaryDirectory()
        model_dir = init_tiny_checkpoint(Path(tmp.name) / "tiny")
    runs = []
    for slicing in (False, True):
        runtime = TransformersRuntime(model_dir, device=args.device, slicing=slicing)
        runs.append(
            measure(
                runtime, slicing, args.repeats, args.findings_tokens, args.occlusion and not slicing
            )
        )
        label = runtime.model_id
    result = {
        "benchmark": "grounding",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": label,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "runs": runs,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "note": "tiny random checkpoint on a shared CPU: the ratios carry over, the times do not",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        print(
            f"slicing={'on ' if run['slicing'] else 'off'} visual={run['visual_tokens']} "
            f"verify={run['generate_verify_ms']:.0f} ms findings={run['generate_findings_ms']:.0f} "
            f"ms grounding={run['grounding_ms']:.0f} ms "
            f"(x{run['grounding_over_verify_generation']} verify, "
            f"x{run['grounding_over_findings_generation']} findings)"
            + (f" occlusion={run['occlusion_ms']:.0f} ms" if "occlusion_ms" in run else "")
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
