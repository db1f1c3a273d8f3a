"""The original AudioLDM code's sampling rules (``audioldm==0.1.1``), applied by ``compat="original"``.

The default, ``compat="diffusers"``, is diffusers' ``AudioLDMPipeline``. The original differs in three
ways at generation: DDIM ``eta`` 1.0; its CLAP conditioner keeps training-time dropout, replacing
each waveform's prompt embedding by the empty prompt's with probability 0.1; and latents above 100 in
magnitude are clipped to [-10, 10] before decoding.

For the zero-shot edits (:mod:`audioldm_core.edit`), ``compat="original"`` runs the original's edit
algorithms: its DDIM loop with eta 1.0 (:func:`sample_original_ddim`), style transfer's clipping of
the encoded input and ``stochastic_encode``, and the masked edits' blend before every step with fresh
noise; the 10% unconditional swap applies there too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from .audio import normalize_wav
from .config import ScheduleConfig
from .errors import InputError
from .noise import Generator
from .schedule import betas, check_steps, prediction_to_eps_x0

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


def original_audio_prompt(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """An audio prompt prepared as the original's audio-conditioned generation prepares it
    (audioldm/audio/tools.py ``read_wav_file`` after loading, called by pipeline.py ``text_to_audio``
    with int(duration * 102.4) * 160 samples, the generated length): waveform (n,) 16 kHz ->
    (max(n, num_samples),) float32: mean removed and scaled to peak 0.5 (``normalize_wav``, float32),
    zero-padded at the end to ``num_samples`` (``pad_wav``; a longer input stays whole, as its slice
    there cuts the channel axis), scaled to peak 0.5 again (float64 once padded). A silent input is
    returned unchanged (the front-end refuses it)."""
    w = np.asarray(waveform, dtype=np.float32)
    if not np.abs(w - np.mean(w)).max() > 0:
        return w
    w = normalize_wav(w)
    if w.shape[0] < num_samples:
        w = np.concatenate([w.astype(np.float64), np.zeros(num_samples - w.shape[0])])
    return (w / np.max(np.abs(w)) * 0.5).astype(np.float32)


# --- The original's zero-shot edits (audioldm/pipeline.py style_transfer, super_resolution_and_inpainting) ---
#
# Both run the original's DDIMSampler (audioldm/latent_diffusion/ddim.py) with eta 1.0 on its own
# "uniform" DDIM schedule. Style transfer noises the encoded input with ``stochastic_encode`` at DDIM
# index t_enc = int(strength * steps) and decodes over the DDIM timesteps below that index
# (``DDIMSampler.decode``). Inpainting and super-resolution (ldm.py generate_sample_masked) sample from
# noise and, before every step, replace the known region by ``q_sample(x0, t)`` with fresh noise; the
# result after the last step is not forced back to the known latents.

ORIGINAL_EDIT_SAMPLER = "ddim"  # the only sampler the original's edits use


def original_edit_sampler(name: Any) -> None:
    """Refuse any sampler but DDIM for ``compat="original"`` edits (the original has no other)."""
    if name != ORIGINAL_EDIT_SAMPLER:
        raise InputError(f"compat='original' edits run the original's DDIM sampler only, got sampler={name!r}; "
                         f"use sampler='{ORIGINAL_EDIT_SAMPLER}', or compat='diffusers' for the other samplers")


def original_alphas_cumprod(schedule: ScheduleConfig) -> torch.Tensor:
    """(N,) float32 alpha-bar as the original builds it: the cumulative product in float64, then
    rounded to float32 (latent_diffusion/ddpm.py DDPM.register_schedule); ours multiplies in float32
    as diffusers does, which differs by up to ~1e-6 relative at the last timesteps."""
    return torch.cumprod(1.0 - betas(schedule).double(), dim=0).float()


def original_ddim_plan(schedule: ScheduleConfig, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The original DDIM schedule for ``num_steps``: (timesteps, alphas, alphas_prev), each (K,), ascending.

    timesteps = range(0, N, N // num_steps) + 1 (latent_diffusion/util.py make_ddim_timesteps,
    "uniform"), so K = ceil(N / (N // num_steps)) may exceed num_steps (7 steps: 8 timesteps);
    alphas = alpha-bar[timesteps], alphas_prev = [alpha-bar[0]] + alphas[:-1]
    (make_ddim_sampling_parameters). Step counts whose last timestep would be N (3, 9, 27, ... of
    N = 1000: the original indexes past its alpha-bar table) are refused."""
    n = check_steps(num_steps, schedule)
    big = schedule.num_train_timesteps
    ts = np.arange(0, big, big // n) + 1
    if ts[-1] >= big:
        raise InputError(f"the original DDIM schedule for {n} steps puts a timestep at {ts[-1]}, past the "
                         f"{big} training timesteps (the original fails there); choose another step count "
                         f"or compat='diffusers'")
    ac = original_alphas_cumprod(schedule)
    t = torch.from_numpy(ts)
    return t, ac[t], torch.cat([ac[:1], ac[t[:-1]]])


def original_transfer_start(schedule: ScheduleConfig, num_steps: int, strength: Any) -> int:
    """The original style transfer's t_enc = int(strength * num_steps): the DDIM index the input is
    noised to and the number of steps then run. Refused where the original indexes past its schedule
    (strength 1 unless the schedule has more than ``num_steps`` timesteps)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise InputError(f"strength must be a number in [0, 1], got {strength!r}")
    k = len(original_ddim_plan(schedule, num_steps)[0])
    t_enc = int(strength * num_steps)
    if t_enc >= k:
        raise InputError(f"compat='original' transfer cannot take strength {strength} with {num_steps} steps: the "
                         f"original noises to DDIM index int(strength * steps) = {t_enc}, past its last index "
                         f"({k - 1}); use a strength below {k / num_steps:g}, or compat='diffusers'")
    return t_enc


def original_stochastic_encode(schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor, eps: torch.Tensor,
                               t_enc: int) -> torch.Tensor:
    """x0, eps: (B, C, T, F) -> sqrt(alphas[t_enc]) x0 + sqrt(1 - alphas[t_enc]) eps, with the original
    DDIM schedule's alphas (ddim.py DDIMSampler.stochastic_encode)."""
    a = original_ddim_plan(schedule, num_steps)[1][t_enc].to(device=x0.device, dtype=x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps.to(x0)


def sample_original_ddim(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                         schedule: ScheduleConfig, num_steps: int, *, noise: Callable[[tuple], torch.Tensor],
                         steps: Optional[int] = None, x0: Optional[torch.Tensor] = None,
                         keep: Optional[torch.Tensor] = None,
                         eta: float = ORIGINAL_DDIM_ETA) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The original DDIM loop (ddim.py ``ddim_sampling`` with a mask, and ``decode``): yields (t, x)
    after each step.

    x: (B, C, T, F) latents at DDIM index ``steps`` (unit noise when sampling from scratch);
    steps: how many DDIM indices to run, from ``steps - 1`` down to 0 (None: all K);
    keep (broadcastable to x, 1 = known) with x0 (B, C, T, F): before every step
    x = keep * q_sample(x0, t, noise(shape)) + (1 - keep) * x (ddpm.py q_sample; fresh noise each step);
    noise(shape) -> unit normal tensor: every Gaussian draw, in the original's order (per step: the
    q_sample noise, then the step's noise, drawn even when its weight sigma is 0); eta: DDIM's eta
    (Song et al. 2021, eq. 16), 1.0 in the original's edits. The update is DDIM eq. 12:
    x = sqrt(a_prev) x0_pred + sqrt(1 - a_prev - sigma^2) eps + sigma * noise.
    """
    ts, alphas, alphas_prev = original_ddim_plan(schedule, num_steps)
    stop = len(ts) if steps is None else steps
    if isinstance(stop, bool) or not isinstance(stop, int) or not 0 <= stop <= len(ts):
        raise InputError(f"steps must be an integer in [0, {len(ts)}], got {steps!r}")
    if (keep is None) != (x0 is None):
        raise InputError("give keep and x0 together (masked sampling) or neither")
    for index in reversed(range(stop)):
        t = ts[index]
        if keep is not None:  # q_sample(x0, t): alpha-bar at the DDPM timestep t, which is alphas[index]
            a = alphas[index].to(device=x0.device, dtype=x0.dtype)
            x = keep * (a.sqrt() * x0 + (1 - a).sqrt() * noise(tuple(x0.shape)).to(x0)) + (1 - keep) * x
        out = eps_fn(x, t)
        a, a_prev = alphas[index].to(x.dtype), alphas_prev[index].to(x.dtype)
        pred_x0, eps = prediction_to_eps_x0(schedule, out, x, a)
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev - sigma ** 2).sqrt() * eps + sigma * noise(tuple(x.shape)).to(x)
        yield t, x
