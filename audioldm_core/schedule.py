"""Noise schedules and timestep spacings: pure functions of a :class:`ScheduleConfig`.

Everything is computed in the same dtypes and order as the diffusers schedulers (betas and
alpha-bar in float32 torch, spacings in numpy) so that samplers built on these functions match
them step by step to float rounding.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .config import ScheduleConfig
from .errors import InputError

SPACINGS = ("leading", "trailing", "linspace")


def betas(cfg: ScheduleConfig) -> torch.Tensor:
    """(N,) float32 betas for ``linear``, ``scaled_linear`` (linear in sqrt(beta), as Stable Diffusion
    and AudioLDM), ``squaredcos_cap_v2`` (Nichol & Dhariwal 2021, eq. 17, capped at 0.999), or the
    config's ``trained_betas``."""
    n = cfg.num_train_timesteps
    if cfg.trained_betas is not None:
        return torch.tensor(cfg.trained_betas, dtype=torch.float32)
    if cfg.beta_schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float32)
    if cfg.beta_schedule == "scaled_linear":
        return torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float32) ** 2
    if cfg.beta_schedule == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                            dtype=torch.float32)
    raise InputError(f"unknown beta_schedule {cfg.beta_schedule!r}; supported: linear, scaled_linear, "
                     f"squaredcos_cap_v2")


def alphas_cumprod(cfg: ScheduleConfig) -> torch.Tensor:
    """(N,) float32 alpha-bar_t = prod_{s<=t} (1 - beta_s)."""
    return torch.cumprod(1.0 - betas(cfg), dim=0)


def check_steps(num_steps: object, cfg: ScheduleConfig) -> int:
    """Validate a step count: an int in [1, num_train_timesteps]."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise InputError(f"num_inference_steps must be an integer, got {num_steps!r}")
    if not 1 <= num_steps <= cfg.num_train_timesteps:
        raise InputError(f"num_inference_steps must be between 1 and {cfg.num_train_timesteps} "
                         f"(the training timesteps), got {num_steps}")
    return int(num_steps)


def spacing(cfg: ScheduleConfig, default: str) -> str:
    """The config's timestep spacing, or the sampler's own default when the config names none."""
    s = cfg.timestep_spacing or default
    if s not in SPACINGS:
        raise InputError(f"unknown timestep_spacing {s!r}; supported: {', '.join(SPACINGS)}")
    return s


def spaced_timesteps(cfg: ScheduleConfig, n: int, default: str, *, extra: int = 0,
                     dtype=np.int64) -> np.ndarray:
    """Decreasing timesteps for ``n`` steps, as the diffusers schedulers space them.

    linspace: ``round(linspace(0, N-1, n))``; leading: ``arange(n) * (N // n) + steps_offset``;
    trailing: ``round(arange(N, 0, -N/n))[:n] - 1`` (Lin et al. 2023, "Common diffusion noise
    schedules and sample steps are flawed", table 2; the ``[:n]`` is ours, see the code).
    ``extra=1`` gives the multistep solvers' variant (DPM-Solver, UniPC): ``n + 1`` points, the last
    (0) dropped. ``dtype`` float32 keeps linspace unrounded, as the sigma-based schedulers do.
    Returns (n,) ``dtype``. Raises :class:`InputError` for a bad ``n`` (see :func:`check_steps`), or
    if a timestep falls outside [0, N) or repeats (possible only for n >= 999 of N = 1000: diffusers
    would index past its tables or take a zero-length step).
    """
    n = check_steps(n, cfg)
    big = cfg.num_train_timesteps
    mode = spacing(cfg, default)
    if mode == "linspace":
        if extra:
            t = np.linspace(0, big - 1, n + 1).round()[::-1][:-1].copy().astype(dtype)
        elif dtype == np.float32:
            t = np.linspace(0, big - 1, n, dtype=np.float32)[::-1].copy()
        else:
            t = np.linspace(0, big - 1, n).round()[::-1].copy().astype(dtype)
    elif mode == "leading":
        ratio = big // (n + extra)
        t = (np.arange(0, n + extra) * ratio).round()[::-1]
        t = (t[:-1] if extra else t).copy().astype(dtype)
        t += cfg.steps_offset
    else:
        # np.arange with a float step yields one element too many for some n (61, 103, 121, ...): its
        # last value rounds to 0 and becomes t = -1. diffusers keeps that step (DDIM then reads
        # alpha-bar[-1], the noisiest); we keep the n intended timesteps, equal to diffusers' first n.
        ratio = big / n
        t = np.round(np.arange(big, 0, -ratio))[:n].astype(dtype)
        t -= 1
    if len(t) and (t.max() >= big or t.min() < 0):
        raise InputError(f"{n} steps with {mode} spacing and steps_offset={cfg.steps_offset} put a timestep at "
                         f"{t.max() if t.max() >= big else t.min()}, outside [0, {big - 1}]; use fewer steps")
    if len(t) > 1 and not (t[:-1] > t[1:]).all():
        raise InputError(f"{n} steps with {mode} spacing give repeated timesteps (a zero-length step); "
                         f"use fewer steps")
    return t


def vp_sigmas(cfg: ScheduleConfig) -> np.ndarray:
    """(N,) float32 sigma_t = sqrt((1 - alpha-bar) / alpha-bar) for every training timestep."""
    ac = alphas_cumprod(cfg)
    return np.array(((1 - ac) / ac) ** 0.5)


def interp_sigmas(cfg: ScheduleConfig, timesteps: np.ndarray) -> torch.Tensor:
    """Sigmas at (possibly fractional) timesteps by linear interpolation, with a final 0 appended:
    (n + 1,) float32."""
    s = vp_sigmas(cfg)
    s = np.interp(timesteps, np.arange(0, len(s)), s)
    return torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))


def add_noise(cfg: ScheduleConfig, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) = sqrt(a_t) x0 + sqrt(1 - a_t) noise (Ho et al. 2020, eq. 4).

    x0, noise: (B, ...) any float dtype/device; t: an integer timestep, or a (B,) integer tensor of
    one timestep per batch item, in [0, num_train_timesteps) -> (B, ...) in x0's dtype. Alpha-bar is
    cast to x0's dtype before the square roots, as diffusers' ``DDIMScheduler.add_noise`` does.
    """
    if x0.shape != noise.shape:
        raise InputError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    tt = torch.as_tensor(t)
    if tt.is_floating_point() or tt.dtype == torch.bool or tt.ndim > 1 or \
            (tt.ndim == 1 and tt.shape[0] != x0.shape[0]):
        raise InputError(f"t must be an integer or a (B,) integer tensor with B={x0.shape[0]}, got {t!r}")
    if tt.numel() and not (0 <= int(tt.min()) and int(tt.max()) < cfg.num_train_timesteps):
        raise InputError(f"timestep {t} outside [0, {cfg.num_train_timesteps - 1}]")
    a = alphas_cumprod(cfg).to(dtype=x0.dtype)[tt.long()].to(x0.device)
    a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))
    return a ** 0.5 * x0 + (1 - a) ** 0.5 * noise


def strength_start(num_steps: int, strength: float, order: int = 1) -> int:
    """Index of the first timestep kept when starting from a clean latent with ``strength`` in [0, 1]
    (diffusers' img2img convention: ``n - min(int(n * strength), n)`` steps are skipped; multiplied
    by the sampler's timesteps per step)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise InputError(f"strength must be a number in [0, 1], got {strength!r}")
    keep = min(int(num_steps * strength), num_steps)
    return (num_steps - keep) * order


def prediction_to_eps_x0(cfg: ScheduleConfig, out: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the model output for a VP latent ``x`` at alpha-bar ``a`` (DDIM paper eq. 12)."""
    b = 1 - a
    if cfg.prediction_type == "epsilon":
        return (x - b ** 0.5 * out) / a ** 0.5, out
    if cfg.prediction_type == "sample":
        return out, (x - a ** 0.5 * out) / b ** 0.5
    if cfg.prediction_type == "v_prediction":
        return a ** 0.5 * x - b ** 0.5 * out, a ** 0.5 * out + b ** 0.5 * x
    raise InputError(f"unknown prediction_type {cfg.prediction_type!r}")


def final_alpha(cfg: ScheduleConfig, ac: Optional[torch.Tensor] = None) -> torch.Tensor:
    """alpha-bar used past the last step: 1 with ``set_alpha_to_one``, else alpha-bar_0."""
    ac = alphas_cumprod(cfg) if ac is None else ac
    return torch.tensor(1.0) if cfg.set_alpha_to_one else ac[0]
