"""Samplers: each a plain generator function with an explicit loop and its history in local lists.

    for t, x in sample_ddim(eps_fn, noise, schedule, 10, generator=g):
        ...                          # x: latents after the step at timestep t; stop whenever you like

Common arguments:
  eps_fn(model_input, t) -> model output: the model closure (classifier-free guidance is built by
      the pipeline into this closure, never here). ``model_input`` and ``t`` are exactly what the
      diffusers scheduler loop passes to the UNet: the latents after ``scale_model_input`` and the
      scheduler's timestep as a 0-d tensor (int64 for DDIM/PNDM/DPM-Solver++/UniPC, float32 for
      LMS/Euler/Euler-a/Heun, whose timesteps may be fractional).
  x: unit-variance noise (B, C, T, F); the sampler multiplies it by its ``init_noise_sigma``, as
      diffusers' AudioLDMPipeline does for drawn and for given latents. With ``start > 0`` x is
      instead an already-noised latent at timestep index ``start`` (see :func:`noise_to_start`) and
      is used as it is.
  schedule: the checkpoint's :class:`ScheduleConfig`; ``num_steps``: inference steps.
  generator: torch.Generator (or one per batch item) for the stochastic samplers (DDIM with
      eta > 0, Euler ancestral).
  start: index into :func:`timesteps_for` to begin at (editing: see :func:`start_for_strength`).
  noised: whether x is already noised to the level of ``timesteps[start]`` (then used as it is) or
      unit-variance noise (then multiplied by ``init_noise_sigma``); default ``start > 0``. Pass
      ``noised=True`` with ``start=0`` to start from ``noise_to_start(..., 0)`` as diffusers'
      img2img does at strength 1.
  blend(i, t, x) -> x: optional hook run after every step, before the yield (inpainting keeps a
      known region); ``i`` is the index into :func:`timesteps_for` of the step just taken (counted
      from 0 even when ``start > 0``), ``t`` its timestep. Its result is what the next step sees.

Each yields ``(t, x)`` once per entry of ``timesteps_for(name, ...)`` (PNDM and Heun evaluate the
model more often than ``num_steps``), ``t`` being the timestep just evaluated and ``x`` the latents
after that step; :func:`run` drains one and returns the final latents. Arguments are checked when
iteration starts (these are generator functions). Each matches the diffusers scheduler of the same
name built with ``from_config(<checkpoint scheduler_config.json>)`` step by step (DPM-Solver++ with
``algorithm_type="dpmsolver++", solver_order=2``, UniPC with ``solver_order=2``, PNDM with
``skip_prk_steps=True``), including each scheduler's own default ``timestep_spacing`` when the
config names none and its defaults for final steps (``lower_order_final``, final sigma 0).

Editing (diffusers' img2img convention) starts mid-schedule from a clean latent ``x0``:

    start = start_for_strength(name, num_steps, strength)    # n - min(int(n * strength), n), x order
    x = noise_to_start(name, schedule, num_steps, x0, noise, start)   # add_noise at timesteps[start]
    final = run(get_sampler(name)(eps_fn, x, schedule, num_steps, start=start, noised=True, blend=blend))

``start == len(timesteps_for(...))`` (strength 0) means there is nothing to run: keep ``x0``.
Known deviations from diffusers, both deliberate: trailing spacing keeps exactly ``num_steps``
timesteps (see :func:`audioldm_core.schedule.spaced_timesteps`), and LMS started mid-schedule
builds its order up from 1 (diffusers uses the absolute step index, so its first steps after
``set_begin_index`` apply one coefficient of a higher-order formula).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from .config import ScheduleConfig
from .errors import InputError
from .noise import randn_tensor
from .schedule import (add_noise, alphas_cumprod, check_steps, final_alpha, interp_sigmas, prediction_to_eps_x0,
                       spaced_timesteps, strength_start)

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Blend = Optional[Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]]
Steps = Iterator[tuple[torch.Tensor, torch.Tensor]]


def _start(x: torch.Tensor, start: int, n_t: int, sigma0, noised: Optional[bool]) -> torch.Tensor:
    """Validate ``start`` and scale unit noise by ``init_noise_sigma`` unless x is already noised."""
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n_t:
        raise InputError(f"start must be an integer in [0, {n_t - 1}] for this sampler and step count, got {start!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if noised is None:
        noised = start > 0
    return x if noised else x * sigma0


# --- DDIM (Song et al. 2021, eq. 12) ----------------------------------------------------------------

def sample_ddim(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                eta: float = 0.0, generator: Optional[torch.Generator] = None, start: int = 0,
                noised: Optional[bool] = None,
                blend: Blend = None) -> Steps:
    """DDIM; ``eta`` = 0 is deterministic, ``eta`` = 1 ancestral-like (noise from ``generator``)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
        raise InputError(f"eta must be a number >= 0, got {eta!r}")
    ts = torch.from_numpy(spaced_timesteps(schedule, num_steps, "leading"))
    ac, a_final = alphas_cumprod(schedule), final_alpha(schedule)
    jump = schedule.num_train_timesteps // num_steps
    x = _start(x, start, len(ts), 1.0, noised)
    for i in range(start, len(ts)):
        t = ts[i]
        out = eps_fn(x, t)
        prev = int(t) - jump
        a_t = ac[t]
        a_prev = ac[prev] if prev >= 0 else a_final
        x0, eps = prediction_to_eps_x0(schedule, out, x, a_t)
        if schedule.clip_sample:
            x0 = x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
        var = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
        std = eta * var ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
        if eta > 0:
            x = x + std * randn_tensor(out.shape, generator, out.device, out.dtype)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


# --- PNDM / PLMS (Liu et al. 2022, "Pseudo numerical methods for diffusion models", eqs. 9-12) --------

def _pndm_transfer(x, t: int, t_prev: int, eps, ac, a_final, pred: str):
    """phi(x_t, eps_t, t -> t_prev): the PNDM transfer step (paper eq. 11)."""
    a_t = ac[t]
    a_prev = ac[t_prev] if t_prev >= 0 else a_final
    b_t, b_prev = 1 - a_t, 1 - a_prev
    if pred == "v_prediction":
        eps = (a_t ** 0.5) * eps + (b_t ** 0.5) * x
    denom = a_t * b_prev ** 0.5 + (a_t * b_t * a_prev) ** 0.5
    return (a_prev / a_t) ** 0.5 * x - (a_prev - a_t) * eps / denom


def pndm_timesteps(schedule: ScheduleConfig, num_steps: int, prk: bool = False) -> np.ndarray:
    """PNDM's evaluation timesteps: PLMS repeats the second timestep once (its warm-up is a
    second-order step); with the Runge-Kutta warm-up (``prk``) the first three steps take four
    evaluations each."""
    base = spaced_timesteps(schedule, num_steps, "leading")[::-1].copy()  # ascending
    if prk and num_steps < 4:
        raise InputError(f"pndm with prk_warmup needs at least 4 steps (three Runge-Kutta warm-up steps and "
                         f"one more), got {num_steps}; use more steps or prk_warmup=False")
    if not prk:
        return np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].astype(np.int64).copy()
    half = schedule.num_train_timesteps // num_steps // 2
    rk = np.array(base[-4:]).repeat(2) + np.tile(np.array([0, half]), 4)
    rk = rk[:-1].repeat(2)[1:-1][::-1]
    return np.concatenate([rk, base[:-3][::-1]]).astype(np.int64)


def sample_pndm(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                prk_warmup: bool = False, generator: Optional[torch.Generator] = None, start: int = 0,
                noised: Optional[bool] = None,
                blend: Blend = None) -> Steps:
    """PLMS (linear multistep on eps, 4th order after warm-up); ``prk_warmup`` uses PNDM's
    Runge-Kutta warm-up instead of the second-order start (diffusers ``skip_prk_steps=False``)."""
    ts = torch.from_numpy(pndm_timesteps(schedule, num_steps, prk_warmup))
    ac, a_final = alphas_cumprod(schedule), final_alpha(schedule)
    jump = schedule.num_train_timesteps // num_steps
    pred = schedule.prediction_type
    if pred not in ("epsilon", "v_prediction"):
        raise InputError(f"pndm supports prediction_type epsilon and v_prediction, not {pred!r}")
    x = _start(x, start, len(ts), 1.0, noised)
    if start and prk_warmup:
        raise InputError("pndm with prk_warmup cannot start mid-schedule; use start=0 or prk_warmup=False")
    ets: list[torch.Tensor] = []
    n_prk = 12 if prk_warmup else 0
    cur_x, acc = None, None
    for i in range(start, len(ts)):
        t = ts[i]
        out = eps_fn(x, t)
        k = i - start
        if k < n_prk:  # Runge-Kutta warm-up: four evaluations per step
            r = k % 4
            t_base = int(ts[k // 4 * 4])
            t_prev = int(t) - (0 if k % 2 else jump // 2)
            if r == 0:
                acc = (1 / 6) * out
                ets.append(out)
                cur_x = x
            elif r in (1, 2):
                acc = acc + (1 / 3) * out
            else:
                out = acc + (1 / 6) * out
            x = _pndm_transfer(cur_x, t_base, t_prev, out, ac, a_final, pred)
        else:
            m = k - n_prk
            t_cur, t_prev = int(t), int(t) - jump
            if m != 1 or prk_warmup:
                ets = ets[-3:] + [out]
            else:
                t_prev, t_cur = int(t), int(t) + jump
            if len(ets) == 1 and m == 0:
                e, cur_x = out, x
            elif len(ets) == 1 and m == 1:
                e, x = (out + ets[-1]) / 2, cur_x
            elif len(ets) == 2:
                e = (3 * ets[-1] - ets[-2]) / 2
            elif len(ets) == 3:
                e = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
            else:
                e = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
            x = _pndm_transfer(x, t_cur, t_prev, e, ac, a_final, pred)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


# --- Sigma-space samplers (Karras et al. 2022 parameterisation: x = x0 + sigma * eps) -------------

def _sigma_plan(schedule: ScheduleConfig, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(timesteps float32 (n,), sigmas float32 (n+1,), init_noise_sigma) for the sigma samplers."""
    ts = spaced_timesteps(schedule, num_steps, "linspace", dtype=np.float32)
    sig = interp_sigmas(schedule, ts)
    mode = schedule.timestep_spacing or "linspace"
    init = sig.max() if mode in ("linspace", "trailing") else (sig.max() ** 2 + 1) ** 0.5
    return torch.from_numpy(ts), sig, init


def _x0_sigma(schedule: ScheduleConfig, out, x, sigma):
    if schedule.prediction_type == "epsilon":
        return x - sigma * out
    if schedule.prediction_type == "v_prediction":
        return out * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
    return out


def lms_coefficient(sigmas: torch.Tensor, order: int, i: int, j: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the j-th Lagrange basis polynomial through the nodes
    sigma_i, sigma_{i-1}, ..., sigma_{i-order+1} (k-diffusion ``linear_multistep_coeff``; diffusers'
    ``get_lms_coefficient`` computes the same integral numerically).

    sigmas: (n + 1,) -> a python float. The basis has degree order - 1 <= 3: its coefficients come
    from its roots (the other nodes), and the integral is the antiderivative's difference, all in
    float64 on the float32 sigmas.
    """
    s = sigmas.detach().cpu().numpy().astype(np.float32).astype(np.float64)
    nodes = [s[i - k] for k in range(order)]
    others = [nodes[k] for k in range(order) if k != j]
    denom = float(np.prod([nodes[j] - o for o in others])) if others else 1.0
    antiderivative = np.polyint(np.poly(others) if others else np.ones(1))
    return float((np.polyval(antiderivative, s[i + 1]) - np.polyval(antiderivative, s[i])) / denom)


def sample_lms(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
               order: int = 4, generator: Optional[torch.Generator] = None, start: int = 0,
               noised: Optional[bool] = None,
               blend: Blend = None) -> Steps:
    """Linear multistep in sigma (k-diffusion ``sample_lms``; diffusers ``LMSDiscreteScheduler``)."""
    if not isinstance(order, int) or order < 1:
        raise InputError(f"lms order must be a positive integer, got {order!r}")
    ts, sig, init = _sigma_plan(schedule, num_steps)
    x = _start(x, start, len(ts), init, noised)
    ds: list[torch.Tensor] = []
    for i in range(start, len(ts)):
        t, s = ts[i], sig[i]
        out = eps_fn(x / ((s ** 2 + 1) ** 0.5), t)
        d = (x - _x0_sigma(schedule, out, x, s)) / s
        ds = (ds + [d])[-order:]
        cur = min(i - start + 1, order)
        coeffs = [lms_coefficient(sig, cur, i, j) for j in range(cur)]
        x = x + sum(c * dd for c, dd in zip(coeffs, reversed(ds)))
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


def sample_euler(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                 generator: Optional[torch.Generator] = None, start: int = 0,
                 noised: Optional[bool] = None, blend: Blend = None) -> Steps:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, algorithm 2 without churn)."""
    ts, sig, init = _sigma_plan(schedule, num_steps)
    x = _start(x, start, len(ts), init, noised)
    for i in range(start, len(ts)):
        t, s = ts[i], sig[i]
        out = eps_fn(x / ((s ** 2 + 1) ** 0.5), t)
        xf = x.to(torch.float32)
        d = (xf - _x0_sigma(schedule, out, xf, s)) / s
        x = (xf + d * (sig[i + 1] - s)).to(out.dtype)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


def sample_euler_ancestral(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                           generator: Optional[torch.Generator] = None, start: int = 0, noised: Optional[bool] = None,
                           blend: Blend = None) -> Steps:
    """Euler ancestral (k-diffusion ``sample_euler_ancestral``): a deterministic step to sigma_down,
    then fresh noise of std sigma_up from ``generator``."""
    if schedule.prediction_type == "sample":
        raise InputError("euler_ancestral supports prediction_type epsilon and v_prediction, not 'sample' "
                         "(nor does diffusers' EulerAncestralDiscreteScheduler)")
    ts, sig, init = _sigma_plan(schedule, num_steps)
    x = _start(x, start, len(ts), init, noised)
    for i in range(start, len(ts)):
        t, s, s_to = ts[i], sig[i], sig[i + 1]
        out = eps_fn(x / ((s ** 2 + 1) ** 0.5), t)
        xf = x.to(torch.float32)
        x0 = _x0_sigma(schedule, out, xf, s)
        up = (s_to ** 2 * (s ** 2 - s_to ** 2) / s ** 2) ** 0.5
        down = (s_to ** 2 - up ** 2) ** 0.5
        xf = xf + (xf - x0) / s * (down - s)
        x = (xf + randn_tensor(out.shape, generator, out.device, out.dtype) * up).to(out.dtype)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


def heun_timesteps(schedule: ScheduleConfig, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heun's evaluation plan: every timestep after the first twice, sigmas likewise."""
    ts, sig, init = _sigma_plan(schedule, num_steps)
    sig2 = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]])
    ts2 = torch.cat([ts[:1], ts[1:].repeat_interleave(2)])
    return ts2, sig2, init


def sample_heun(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                generator: Optional[torch.Generator] = None, start: int = 0,
                noised: Optional[bool] = None, blend: Blend = None) -> Steps:
    """Heun's second-order method (Karras et al. 2022, algorithm 1): an Euler step, then the average
    of the slopes at both ends; the last step (to sigma 0) is plain Euler. Yields after each model
    evaluation (2 * num_steps - 1 of them)."""
    ts, sig, init = heun_timesteps(schedule, num_steps)
    x = _start(x, start, len(ts), init, noised)
    if start % 2:
        raise InputError("heun can only start at an even index (the start of a step)")
    first = True
    d_prev = dt = x_prev = None
    for i in range(start, len(ts)):
        t = ts[i]
        out = eps_fn(x / ((sig[i] ** 2 + 1) ** 0.5), t)
        if first:
            s, s_next = sig[i], sig[i + 1]
            x0 = _x0_sigma(schedule, out, x, s)
        else:
            s, s_next = sig[i - 1], sig[i]
            x0 = _x0_sigma(schedule, out, x, s_next)
        if schedule.clip_sample:
            x0 = x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
        if first:
            d_prev, dt, x_prev = (x - x0) / s, s_next - s, x
            x = x + d_prev * dt
            first = s_next == 0  # the last step stays first order
        else:
            d = ((x - x0) / s_next + d_prev) / 2
            x = x_prev + d * dt
            first = True
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


# --- Multistep exponential integrators in VP space (x = alpha x0 + sigma eps) ------------------------

def _multistep_plan(schedule: ScheduleConfig, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    ts = spaced_timesteps(schedule, num_steps, "linspace", extra=1)
    return torch.from_numpy(ts), interp_sigmas(schedule, ts)


def _alpha_sigma(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = 1 / ((s ** 2 + 1) ** 0.5)
    return alpha, s * alpha


def _lam(s: torch.Tensor) -> torch.Tensor:
    a, sg = _alpha_sigma(s)
    return torch.log(a) - torch.log(sg)


def _x0_vp(schedule: ScheduleConfig, out, x, s):
    a, sg = _alpha_sigma(s)
    if schedule.prediction_type == "epsilon":
        return (x - sg * out) / a
    if schedule.prediction_type == "v_prediction":
        return a * x - sg * out
    return out


def sample_dpmsolver_pp(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                        generator: Optional[torch.Generator] = None, start: int = 0, noised: Optional[bool] = None,
                        blend: Blend = None) -> Steps:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", algorithm 2, midpoint form): data
    prediction, second order from the second step, first order on the last (final sigma 0)."""
    ts, sig = _multistep_plan(schedule, num_steps)
    x = _start(x, start, len(ts), 1.0, noised)
    n = len(ts)
    hist: list[torch.Tensor] = []
    for i in range(start, n):
        t = ts[i]
        out = eps_fn(x, t)
        m0 = _x0_vp(schedule, out, x, sig[i])
        hist = (hist + [m0])[-2:]
        xf = x.to(torch.float32)
        a_t, s_t = _alpha_sigma(sig[i + 1])
        _, s_s0 = _alpha_sigma(sig[i])
        h = _lam(sig[i + 1]) - _lam(sig[i])
        if len(hist) < 2 or i == n - 1:
            x = (s_t / s_s0) * xf - (a_t * (torch.exp(-h) - 1.0)) * m0
        else:
            r0 = (_lam(sig[i]) - _lam(sig[i - 1])) / h
            d1 = (1.0 / r0) * (m0 - hist[-2])
            x = (s_t / s_s0) * xf - (a_t * (torch.exp(-h) - 1.0)) * m0 - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * d1
        x = x.to(out.dtype)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


def _unipc_coeffs(order: int, h: torch.Tensor, rks: list[torch.Tensor]):
    """(h_phi_1, B_h, R, b) of UniPC's B(h) = e^h - 1 variant ("bh2"; Zhao et al. 2023, algorithm 1)."""
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = torch.expm1(hh)
    rk = torch.stack(rks + [torch.ones(())])
    r_rows, b = [], []
    fact = 1
    for k in range(1, order + 1):
        r_rows.append(torch.pow(rk, k - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return h_phi_1, b_h, torch.stack(r_rows), torch.stack(b)


def sample_unipc(eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                 generator: Optional[torch.Generator] = None, start: int = 0,
                 noised: Optional[bool] = None, blend: Blend = None) -> Steps:
    """UniPC-2 with the bh2 corrector (Zhao et al. 2023): a UniP predictor step, then on the next
    evaluation the UniC corrector refines the previous result with the new model output."""
    ts, sig = _multistep_plan(schedule, num_steps)
    x = _start(x, start, len(ts), 1.0, noised)
    n, solver_order = len(ts), 2
    outs: list[torch.Tensor] = []
    last_x, last_order = None, 0
    for i in range(start, n):
        t = ts[i]
        out = eps_fn(x, t)
        m_t = _x0_vp(schedule, out, x, sig[i])
        if last_x is not None:  # UniC: correct x (the predictor's result) using m_t
            a_t, s_t = _alpha_sigma(sig[i])
            _, s_s0 = _alpha_sigma(sig[i - 1])
            h = _lam(sig[i]) - _lam(sig[i - 1])
            rks, d1s = [], []
            for k in range(1, last_order):
                rk = (_lam(sig[i - (k + 1)]) - _lam(sig[i - 1])) / h
                rks.append(rk)
                d1s.append((outs[-(k + 1)] - outs[-1]) / rk)
            h_phi_1, b_h, r_mat, b = _unipc_coeffs(last_order, h, rks)
            rhos = torch.full((1,), 0.5, dtype=last_x.dtype) if last_order == 1 else \
                torch.linalg.solve(r_mat, b).to(last_x.dtype)  # (order,) on the CPU: indexed into 0-d scalars
            x_ = s_t / s_s0 * last_x - a_t * h_phi_1 * outs[-1]
            corr = sum(rhos[k] * d for k, d in enumerate(d1s)) if d1s else 0
            x = (x_ - a_t * b_h * (corr + rhos[-1] * (m_t - outs[-1]))).to(last_x.dtype)
        outs = (outs + [m_t])[-solver_order:]
        order = min(solver_order, n - i, len(outs))
        last_x, last_order = x, order
        # UniP predictor
        a_t, s_t = _alpha_sigma(sig[i + 1])
        _, s_s0 = _alpha_sigma(sig[i])
        h = _lam(sig[i + 1]) - _lam(sig[i])
        d1s = []
        for k in range(1, order):
            rk = (_lam(sig[i - k]) - _lam(sig[i])) / h
            d1s.append((outs[-(k + 1)] - outs[-1]) / rk)
        h_phi_1, b_h, _, _ = _unipc_coeffs(order, h, [])
        x_ = s_t / s_s0 * x - a_t * h_phi_1 * outs[-1]
        pred = torch.full((1,), 0.5, dtype=x.dtype)[0] * d1s[0] if d1s else 0
        x = (x_ - a_t * b_h * pred).to(x.dtype)
        if blend is not None:
            x = blend(i, t, x)
        yield t, x


# --- Registry: each sampler with its plan -------------------------------------------------------------

def _vp_noise(timesteps: Callable[[ScheduleConfig, int], torch.Tensor]):
    """``add_noise`` at ``timesteps[start]`` (DDPM forward process; DDIM and PNDM)."""
    def noise(schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor, eps: torch.Tensor, start: int):
        return add_noise(schedule, x0, eps, int(timesteps(schedule, num_steps)[start]))
    return noise


def _multistep_noise(schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor, eps: torch.Tensor, start: int):
    a, s = _alpha_sigma(_multistep_plan(schedule, num_steps)[1][start])
    return a * x0 + s * eps


def _sigma_noise(sigmas: Callable[[ScheduleConfig, int], torch.Tensor]):
    """``x0 + sigma[start] * eps`` (the Karras-parameterised samplers)."""
    def noise(schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor, eps: torch.Tensor, start: int):
        return x0 + eps * sigmas(schedule, num_steps)[start]
    return noise


def _ddim_timesteps(schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    return torch.from_numpy(spaced_timesteps(schedule, num_steps, "leading"))


def _pndm_timesteps(schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    return torch.from_numpy(pndm_timesteps(schedule, num_steps))


@dataclass(frozen=True)
class Sampler:
    """A registered sampler and its plan; the only place that knows how a sampler walks the schedule.

    fn: one of the ``sample_*`` generator functions; description: one line for ``audioldm samplers``;
    timesteps(schedule, n): the timesteps the model is evaluated at for n steps, one yield each;
    noise(schedule, n, x0, eps, start): a clean latent noised to the level of ``timesteps[start]``;
    calls_per_step: model evaluations that make one inference step (Heun: 2);
    options: keyword options ``fn`` takes beyond the common ones (e.g. DDIM's ``eta``).
    """

    fn: Callable[..., Steps]
    description: str
    timesteps: Callable[[ScheduleConfig, int], torch.Tensor]
    noise: Callable[..., torch.Tensor]
    calls_per_step: int = 1
    options: tuple[str, ...] = ()

    def num_calls(self, schedule: ScheduleConfig, num_steps: int) -> int:
        """Model evaluations (= yields) of a full run of ``num_steps`` steps."""
        check_steps(num_steps, schedule)
        return len(self.timesteps(schedule, num_steps))

    def start(self, schedule: ScheduleConfig, num_steps: int, strength: float) -> int:
        """Index into :attr:`timesteps` where an edit of ``strength`` in [0, 1] begins (diffusers'
        img2img convention: ``n - min(int(n * strength), n)`` steps skipped, times
        ``calls_per_step``). Strength 0 keeps no step: the result is :meth:`num_calls`, nothing runs."""
        skipped = strength_start(num_steps, strength, self.calls_per_step)
        total = self.num_calls(schedule, num_steps)
        return total if skipped >= num_steps * self.calls_per_step else skipped

    def noise_to_start(self, schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor, eps: torch.Tensor,
                       start: int) -> torch.Tensor:
        """x0, eps: (B, C, T, F) -> x0 noised to the level the sampler expects at index ``start``
        (each diffusers scheduler's ``add_noise`` at ``timesteps[start]``). Pass the result as ``x``
        with the same ``start``."""
        total = self.num_calls(schedule, num_steps)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < total:
            raise InputError(f"start must be an integer in [0, {total - 1}] for {num_steps} steps, got {start!r}")
        return self.noise(schedule, num_steps, x0, eps, start)

    def steps_done(self, index: int, total: int) -> int:
        """Inference steps completed after yield ``index`` (0-based) of ``total``: what progress bars
        and diffusers-style callbacks count."""
        return total // self.calls_per_step if index == total - 1 else (index + 1) // self.calls_per_step

    def __call__(self, eps_fn: EpsFn, x: torch.Tensor, schedule: ScheduleConfig, num_steps: int, *,
                 generator=None, start: int = 0, noised: Optional[bool] = None, blend: Blend = None,
                 **options) -> Steps:
        """Run ``fn``; options this sampler does not take (see :attr:`options`) are dropped, so callers
        may pass e.g. ``eta`` to every sampler."""
        kept = {k: v for k, v in options.items() if k in self.options}
        return self.fn(eps_fn, x, schedule, num_steps, generator=generator, start=start, noised=noised,
                       blend=blend, **kept)


def _sigmas(schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    return _sigma_plan(schedule, num_steps)[1]


def _sigma_timesteps(schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    return _sigma_plan(schedule, num_steps)[0]


def _multistep_timesteps(schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    return _multistep_plan(schedule, num_steps)[0]


SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler(sample_ddim, "DDIM (Song et al. 2021); deterministic at eta=0, diffusers' default for AudioLDM",
                    _ddim_timesteps, _vp_noise(_ddim_timesteps), options=("eta",)),
    "pndm": Sampler(sample_pndm, "PLMS/PNDM (Liu et al. 2022), 4th-order linear multistep on eps",
                    _pndm_timesteps, _vp_noise(_pndm_timesteps), options=("prk_warmup",)),
    "lms": Sampler(sample_lms, "linear multistep in sigma, order 4 (k-diffusion / LMSDiscrete)",
                   _sigma_timesteps, _sigma_noise(_sigmas), options=("order",)),
    "euler": Sampler(sample_euler, "Euler on the probability-flow ODE (Karras et al. 2022)",
                     _sigma_timesteps, _sigma_noise(_sigmas)),
    "euler_ancestral": Sampler(sample_euler_ancestral, "Euler ancestral: Euler step plus fresh noise (stochastic)",
                               _sigma_timesteps, _sigma_noise(_sigmas)),
    "heun": Sampler(sample_heun, "Heun 2nd order (Karras et al. 2022); two model calls per step",
                    lambda sc, n: heun_timesteps(sc, n)[0], _sigma_noise(lambda sc, n: heun_timesteps(sc, n)[1]),
                    calls_per_step=2),
    "dpmsolver++": Sampler(sample_dpmsolver_pp, "DPM-Solver++(2M) multistep (Lu et al. 2022)",
                           _multistep_timesteps, _multistep_noise),
    "unipc": Sampler(sample_unipc, "UniPC-2 predictor-corrector, bh2 (Zhao et al. 2023)",
                     _multistep_timesteps, _multistep_noise),
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name`` (callable like its ``sample_*`` function, plus its plan);
    raises listing the valid names."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def describe(name: str) -> str:
    """One-line description of a registered sampler."""
    return get_sampler(name).description


def timesteps_for(name: str, schedule: ScheduleConfig, num_steps: int) -> torch.Tensor:
    """The timesteps a sampler evaluates the model at (one yield each), in order."""
    check_steps(num_steps, schedule)
    return get_sampler(name).timesteps(schedule, num_steps)


def evals_per_step(name: str) -> int:
    """Model evaluations per inference step (Heun: 2)."""
    return get_sampler(name).calls_per_step


def start_for_strength(name: str, schedule: ScheduleConfig, num_steps: int, strength: float) -> int:
    """Start index for editing with ``strength`` in [0, 1] (see :meth:`Sampler.start`)."""
    return get_sampler(name).start(schedule, num_steps, strength)


def noise_to_start(name: str, schedule: ScheduleConfig, num_steps: int, x0: torch.Tensor,
                   noise: torch.Tensor, start: int) -> torch.Tensor:
    """See :meth:`Sampler.noise_to_start`."""
    return get_sampler(name).noise_to_start(schedule, num_steps, x0, noise, start)


def run(steps: Steps) -> torch.Tensor:
    """Drain a sampler and return the final latents."""
    x = None
    for _, x in steps:
        pass
    if x is None:
        raise InputError("the sampler produced no step")
    return x


__all__ = ["SAMPLERS", "Sampler", "describe", "evals_per_step", "get_sampler", "heun_timesteps", "lms_coefficient",
           "noise_to_start", "pndm_timesteps", "run", "sample_ddim", "sample_dpmsolver_pp", "sample_euler",
           "sample_euler_ancestral", "sample_heun", "sample_lms", "sample_pndm", "sample_unipc", "start_for_strength",
           "timesteps_for"]
