"""Training-free relevance of an answer to the image: gradient x input on the visual tokens
(default), or occlusion sensitivity on the film pixels (MONAI ``monai.visualize``).

Both explain one scalar: the answer logit margin ``logit("yes") - logit("no")`` at the first answer
position of the knowledge-decomposed verification prompt.

* ``gradient_x_input``: one forward and one backward pass of the language model (weights frozen,
  the gradient taken only with respect to the visual-token embeddings); relevance of a token is
  ``<d score / d e, e>`` summed over the embedding width (the first-order share of the score that
  token carries). About 3 forward passes of the prompt in cost; the backward pass keeps the
  activations of every layer, which is its memory price on a GPU.
* ``occlusion``: MONAI's ``OcclusionSensitivity`` over the film (a grid of patches replaced by the
  film's mean, one forward pass each; relevance = score drop). Model-agnostic and needs no
  gradients, but costs one forward pass per occluded patch (64 for the default 8 x 8 grid).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medvlm.grounding.maps import FilmMap, GroundingError, map_shape, resample_film_array

__all__ = [
    "Relevance",
    "RelevanceMethod",
    "gradient_x_input",
    "occlusion_film_map",
]


class RelevanceMethod(StrEnum):
    """How the relevance of the answer to the image is computed."""

    GRADIENT_X_INPUT = "gradient_x_input"
    OCCLUSION = "occlusion"


@dataclass(frozen=True)
class Relevance:
    """A relevance map on the original film for one question, with how it was made."""

    film_map: FilmMap
    method: RelevanceMethod
    score: float
    """The explained scalar (answer logit margin) on the unaltered image."""
    details: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


def gradient_x_input(
    score: Callable[[torch.Tensor], torch.Tensor], embeds: torch.Tensor
) -> tuple[NDArray[np.float32], float]:
    """Gradient x input of ``score(embeds)`` per row of ``embeds`` (``[n, D]``): ``[n]``.

    ``embeds`` is detached and becomes the only tensor that requires a gradient; the score must be
    a scalar. Computed in float32 at the end (the model may run in fp16).
    """
    if embeds.ndim != 2:
        raise GroundingError(f"embeds must be [n, D], got shape {tuple(embeds.shape)}")
    x = embeds.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = score(x)
        if value.numel() != 1:
            raise GroundingError(f"score must be a scalar, got shape {tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value.sum(), x)
    relevance = (grad.float() * x.detach().float()).sum(dim=-1)
    if not bool(torch.isfinite(relevance).all()):
        raise GroundingError(
            "the relevance is not finite (fp16 overflow in the backward pass?): run the model in "
            "float32 or use the occlusion method"
        )
    return relevance.cpu().numpy().astype(np.float32), float(value.detach().float().item())


class _FilmScorer(torch.nn.Module):
    """``[B, 1, H, W]`` film pixels (0..255, float) -> ``[B, 1]`` scores, for MONAI."""

    def __init__(self, score_film: Callable[[NDArray[np.uint8]], float]) -> None:
        super().__init__()
        self._score_film = score_film
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for b in range(x.shape[0]):
            film = x[b, 0].detach().clamp(0, 255).round().to(torch.uint8).cpu().numpy()
            out.append(self._score_film(film))
            self.calls += 1
        return torch.tensor(out, dtype=torch.float32)[:, None]


def occlusion_film_map(
    score_film: Callable[[NDArray[np.uint8]], float],
    image: NDArray[np.uint8],
    *,
    grid: int = 8,
    max_side: int = 256,
    n_batch: int = 8,
) -> tuple[FilmMap, float, dict[str, Any]]:
    """MONAI occlusion sensitivity of ``score_film`` over ``image``: a film map of score drops.

    The film is occluded in ``grid x grid`` non-overlapping patches (MONAI ``mode="mean_img"``);
    ``score_film`` sees each occluded film at full resolution, so the model input is exactly what
    the runtime would build from such a film.
    """
    from monai.visualize.occlusion_sensitivity import OcclusionSensitivity

    if grid < 2:
        raise GroundingError(f"occlusion grid {grid} must be >= 2")
    height, width = image.shape
    scorer = _FilmScorer(score_film)
    baseline = float(score_film(image))
    mask = (max(1, -(-height // grid)), max(1, -(-width // grid)))
    occlusion = OcclusionSensitivity(
        scorer,
        mask_size=mask,
        n_batch=n_batch,
        verbose=False,
        mode="mean_img",
        overlap=0.0,
        activate=False,
    )
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with a list inside OcclusionSensitivity (torch warns about the form;
        # the result is pinned by the tests, whose boxes must land on the region).
        warnings.filterwarnings(
            "ignore", message="Using a non-tuple sequence", category=UserWarning
        )
        occ_map, _ = occlusion(x)
    elapsed = (time.perf_counter() - start) * 1000.0
    drop = baseline - np.asarray(occ_map[0, 0].detach().cpu().numpy(), dtype=np.float32)
    values = resample_film_array(drop.astype(np.float32), map_shape((width, height), max_side))
    details = {"grid": grid, "mask_size": list(mask), "forward_passes": scorer.calls + 1}
    return (
        FilmMap(values=values, film_size=(width, height)),
        baseline,
        {
            **details,
            "occlusion_ms": round(elapsed, 3),
        },
    )
