"""The original AudioLDM code's sampling rules (``audioldm==0.1.1``), applied by ``compat="original"``.

The default, ``compat="diffusers"``, is diffusers' ``AudioLDMPipeline``. The original differs in three
ways at generation: DDIM ``eta`` 1.0; its CLAP conditioner keeps training-time dropout, replacing
each waveform's prompt embedding by the empty prompt's with probability 0.1; and latents above 100 in
magnitude are clipped to [-10, 10] before decoding.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .errors import InputError
from .noise import Generator

COMPAT_MODES = ("diffusers", "original")
ORIGINAL_DDIM_ETA = 1.0  # audioldm/ldm.py LatentDiffusion.generate_sample: ddim_eta=1.0
ORIGINAL_UNCONDITIONAL_PROB = 0.1  # audioldm/utils.py default_audioldm_config: cond_stage_config unconditional_prob
ORIGINAL_CLIP_TRIGGER = 100.0  # audioldm/ldm.py generate_sample: if torch.max(torch.abs(samples)) > 1e2
ORIGINAL_CLIP_BOUND = 10.0  # ... samples = torch.clip(samples, min=-10, max=10)


def compat_mode(value: Any) -> str:
    if not isinstance(value, str) or value not in COMPAT_MODES:
        raise InputError(f"compat must be one of {', '.join(repr(m) for m in COMPAT_MODES)}, got {value!r}")
    return value


def default_eta(mode: str) -> float:
    """DDIM's eta when the caller gives none: 0.0 (diffusers) or 1.0 (the original)."""
    return ORIGINAL_DDIM_ETA if mode == "original" else 0.0


def original_swap_mask(batch: int, generator: Generator = None,
                       probability: float = ORIGINAL_UNCONDITIONAL_PROB) -> torch.Tensor:
    """Which conditioning rows the original AudioLDM replaces by the empty prompt's embedding.

    The original's conditioner swaps each row independently when ``u < probability``, u ~ U[0, 1)
    (audioldm/clap/encoders.py CLAPAudioEmbeddingClassifierFreev2.forward / make_decision, with
    torch's global RNG). Here u comes from ``generator``: ``batch`` draws from a single generator,
    one from ``generator[i]`` for row i of a list, torch's global RNG for None.
    Returns (batch,) bool on the generator's device.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise InputError(f"got {len(generator)} generators for a batch of {batch}; "
                             f"give one per row or a single one")
        u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generator])
    else:
        u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return u < probability


def original_conditioning(cond: torch.Tensor, generator: Generator,
                          empty: Callable[[], torch.Tensor]) -> torch.Tensor:
    """cond (B, P) with the rows :func:`original_swap_mask` picks replaced by ``empty()`` (1, P), the
    empty prompt's embedding (computed only when some row is swapped)."""
    swap = original_swap_mask(cond.shape[0], generator).to(cond.device)
    if not swap.any():
        return cond
    return torch.where(swap[:, None], empty().to(device=cond.device, dtype=cond.dtype), cond)


def original_clip(latents: torch.Tensor) -> torch.Tensor:
    """The original's guard before decoding: latents (B, C, T, F) -> same shape; if any value of the
    whole batch exceeds ``ORIGINAL_CLIP_TRIGGER`` (100) in magnitude, every value is clipped to
    [-10, 10], else the latents are returned unchanged (audioldm/ldm.py LatentDiffusion.generate_sample)."""
    if latents.abs().max() > ORIGINAL_CLIP_TRIGGER:
        return latents.clamp(-ORIGINAL_CLIP_BOUND, ORIGINAL_CLIP_BOUND)
    return latents
