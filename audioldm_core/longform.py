"""Long-form sampling: a noise predictor run on overlapping windows of the latent, merged into one
prediction for the whole length (MultiDiffusion, Bar-Tal et al. 2023, eq. 3-5 with per-frame weights).

At every sampler step the latent (B, C, T, F) is cut along T into windows of ``window`` latent frames
that overlap by at least ``overlap`` frames, all windows go through the model (batched, a bounded
number of rows per call), and the per-window predictions are blended with smooth weights that sum to
one at every frame. The sampler then steps the whole latent as usual, so every sampler in
:mod:`audioldm_core.samplers` works unchanged. With ``loop=True`` the windows wrap around: the last
window continues into the first frames, so the end of the latent flows into its start.

    plan = plan_windows(frames=7500, window=256, overlap=32)         # latent frames
    unet_w = windowed(pipe.unet, plan, max_rows=4)                   # (x, t, cond) -> eps, like the UNet
    eps_fn = pipe.guided_eps(cond, uncond, 2.5, model=unet_w)        # guidance as for short audio

A single window that covers the whole latent (and no loop) is not windowed at all: :func:`windowed`
returns the model itself, so that case is bit-identical to the plain path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .errors import InputError

Model = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows lie on a latent of ``frames`` frames.

    starts: first frame of each window (windows of a loop may run past the end and wrap to frame 0);
    weights: (n, window) float32 blend weights, normalised so that at every latent frame the weights
    of the windows covering it sum to one.
    """

    frames: int
    window: int
    overlap: int
    loop: bool
    starts: tuple[int, ...]
    weights: torch.Tensor

    @property
    def n(self) -> int:
        """Number of windows."""
        return len(self.starts)

    @property
    def trivial(self) -> bool:
        """True when one window covers the whole latent without wrapping (the plain path)."""
        return self.n == 1 and not self.loop and self.window == self.frames

    def index(self, i: int, device: Any = None) -> torch.Tensor:
        """(window,) int64 latent frames covered by window ``i`` (modulo ``frames`` for a loop)."""
        return (torch.arange(self.window, device=device) + self.starts[i]) % self.frames


def frames_for_seconds(seconds: Any, frame_s: float, name: str) -> int:
    """A length in seconds -> a whole number of latent frames of ``frame_s`` seconds each.

    Raises InputError unless ``seconds`` is a positive finite number that is a whole multiple of
    ``frame_s`` (to 1e-6 frame): the message names the nearest accepted values."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise InputError(f"{name} must be a positive number of seconds, got {seconds!r}")
    exact = seconds / frame_s
    n = round(exact)
    if n < 1 or abs(exact - n) > 1e-6:
        lo, hi = max(math.floor(exact), 1), math.floor(exact) + 1
        raise InputError(f"{name}={seconds:g} s is not a whole number of latent frames ({frame_s:g} s each); "
                         f"accepted: multiples of {frame_s:g} s, e.g. {lo * frame_s:.2f} or {hi * frame_s:.2f}")
    return n


def _ramp(n: int) -> torch.Tensor:
    """(n,) float64 rising half-cosine sin^2(pi/2 (k + 1/2) / n): strictly inside (0, 1), and
    ``_ramp(n) + _ramp(n).flip(0) == 1`` (a window fading out over exactly the frames where the next
    fades in sums to one)."""
    k = torch.arange(n, dtype=torch.float64)
    return torch.sin(0.5 * math.pi * (k + 0.5) / n) ** 2


def plan_windows(frames: int, window: int, overlap: int, loop: bool = False) -> WindowPlan:
    """Windows of ``window`` latent frames over ``frames`` frames, neighbours overlapping by at least
    ``overlap`` frames, spread evenly (so actual overlaps differ by at most one frame, except that the
    last window of a non-loop ends exactly at the last frame).

    Non-loop: one window when ``frames <= window`` (it is then ``frames`` long: the plain path).
    Loop: needs ``frames >= window``; windows start at ``round(i * frames / n)`` and wrap around.
    Weights rise over each window's first ``overlap`` frames and fall over its last ``overlap``
    frames (:func:`_ramp`), except at the two outer edges of a non-loop, then are divided by their
    sum at every frame.
    """
    for value, name in ((frames, "frames"), (window, "window"), (overlap, "overlap")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an int number of latent frames, got {value!r}")
    if frames < 1:
        raise InputError(f"the latent must have at least one frame, got {frames}")
    if overlap <= 0:
        raise InputError(f"the window overlap must be positive (at least one latent frame), got {overlap} frames")
    if window <= overlap:
        raise InputError(f"the window ({window} latent frames) must be longer than the overlap ({overlap} frames)")
    if loop and frames < window:
        raise InputError(f"a loop must be at least one window long: {frames} latent frames is shorter than the "
                         f"window of {window} frames; lengthen the audio or shorten the window")
    hop = window - overlap
    if not loop and frames <= window:
        return WindowPlan(frames, frames, overlap, False, (0,), torch.ones(1, frames))
    if loop:
        n = max(2, math.ceil(frames / hop))
        starts = tuple(round(i * frames / n) for i in range(n))
    else:
        n = math.ceil((frames - overlap) / hop)
        starts = tuple(round(i * (frames - window) / (n - 1)) for i in range(n))
    ramp = _ramp(overlap)
    w = torch.ones(n, window, dtype=torch.float64)
    w[:, :overlap] *= ramp
    w[:, window - overlap:] *= ramp.flip(0)
    if not loop:
        w[0, :overlap] = 1.0
        w[-1, window - overlap:] = 1.0
    total = torch.zeros(frames, dtype=torch.float64)
    for i, s in enumerate(starts):
        total.index_add_(0, (torch.arange(window) + s) % frames, w[i])
    for i, s in enumerate(starts):
        w[i] /= total[(torch.arange(window) + s) % frames]
    return WindowPlan(frames, window, overlap, loop, starts, w.float())


def windowed(model: Model, plan: WindowPlan, max_rows: Optional[int] = None) -> Model:
    """Wrap ``model(x, t, *row_args) -> (B, C', T, F)`` (the UNet's call, or any ``eps_fn(x, t)``)
    into the same call on windows of ``plan``, merged into one (B, C', T, F) prediction.

    x: (B, C, T, F) with T == plan.frames; t: a scalar / 0-d timestep or (B,) timesteps; row_args:
    tensors whose first axis is the batch B (the UNet's class embeddings), repeated per window.
    Windows are stacked window-major along the batch and sent in calls of at most ``max_rows`` rows
    (at least one window per call; None: all windows in one call). Each output frame is the
    weighted sum of the windows' outputs at that frame (weights from the plan, summing to one).
    A trivial plan returns ``model`` itself.
    """
    if plan.trivial:
        return model
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise InputError(f"max_rows must be None or an int >= 1, got {max_rows!r}")

    def call(x: torch.Tensor, t: Any, *row_args: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[2] != plan.frames:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"windowed model input must be (B, C, {plan.frames}, F) latents, got {got}")
        b = x.shape[0]
        per_call = plan.n if max_rows is None else max(1, max_rows // b)
        t_rows = isinstance(t, torch.Tensor) and t.ndim == 1 and t.shape[0] == b and b > 1
        out = None
        for c0 in range(0, plan.n, per_call):
            ids = range(c0, min(c0 + per_call, plan.n))
            idx = [plan.index(i, x.device) for i in ids]
            k = len(idx)
            xw = torch.cat([x.index_select(2, j) for j in idx])
            tw = t.repeat(k) if t_rows else t
            args = [a.repeat((k,) + (1,) * (a.ndim - 1)) for a in row_args]
            y = model(xw, tw, *args)
            if out is None:
                out = y.new_zeros(b, y.shape[1], plan.frames, y.shape[3])
            for n_, (i, j) in enumerate(zip(ids, idx)):
                wi = plan.weights[i].to(device=y.device, dtype=y.dtype)[None, None, :, None]
                out.index_add_(2, j, y[n_ * b:(n_ + 1) * b] * wi)
        return out

    return call


def progress_total(plan: Optional[WindowPlan], model_calls: int) -> int:
    """Window evaluations of a run: windows x model calls (model calls for a plain run)."""
    return model_calls * (plan.n if plan is not None else 1)


__all__ = ["WindowPlan", "frames_for_seconds", "plan_windows", "progress_total", "windowed"]
