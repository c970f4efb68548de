"""Published results to read our numbers against. Other datasets and setups: not comparable 1:1.

Numbers as summarised in specs/checking.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Anchor:
    """One published result."""

    source: str
    dataset: str
    task: str
    result: str


PUBLISHED_ANCHORS: tuple[Anchor, ...] = (
    Anchor(
        "arXiv 2312.13103 (multimodal LLMs for report error-checking)",
        "MIMIC-CXR and IU X-ray, 1,000 reports each, synthetic insert/remove/substitute errors",
        "SIMPLE (error Y/N) accuracy; COMPLEX error type",
        "instruction tuning +47.4% (MIMIC-CXR) and +25.4% (IU X-ray) SIMPLE accuracy "
        "(points or relative not stated); tuned model 1.67% above domain experts on MIMIC-CXR; "
        "all models poor at COMPLEX",
    ),
    Anchor(
        "Gertz et al., Radiology 2024",
        "200 reports, 150 errors inserted into 100 of them",
        "error detection",
        "GPT-4 82.7%; radiologists 80-89% (best 94.7%); 3.5 s vs 25 s per report",
    ),
    Anchor(
        "Sun et al., Radiology 2025",
        "50% erroneous reports: negation, left/right, interval change, transcription errors",
        "error detection",
        "fine-tuned Llama-3-70B F1 0.78 overall",
    ),
    Anchor(
        "CorBenchX 2025",
        "CorBenchX report-correction benchmark",
        "error detection",
        "best VLM detection accuracy 50.6%",
    ),
)
