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
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .audio import SAMPLE_RATE
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
    _check_rows(max_rows)

    def call(x: torch.Tensor, t: Any, *row_args: torch.Tensor) -> torch.Tensor:
        b = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim == 4 else 0
        t_rows = isinstance(t, torch.Tensor) and t.ndim == 1 and t.shape[0] == b and b > 1

        def fn(xw: torch.Tensor, k: int) -> torch.Tensor:
            args = [a.repeat((k,) + (1,) * (a.ndim - 1)) for a in row_args]
            return model(xw, t.repeat(k) if t_rows else t, *args)

        return run_windows(fn, x, plan, max_rows=max_rows)

    return call


def _check_rows(max_rows: Any) -> None:
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise InputError(f"max_rows must be None or an int >= 1, got {max_rows!r}")


def run_windows(fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, plan: WindowPlan, *,
                in_scale: int = 1, out_scale: int = 1, max_rows: Optional[int] = None) -> torch.Tensor:
    """Apply ``fn`` to the windows of ``plan`` cut from ``x`` and blend the results.

    x: (B, C, plan.frames * in_scale, F); window i covers x's time rows
    ``[start_i * in_scale, (start_i + window) * in_scale)`` (modulo the length for a loop).
    fn(xw, k): xw (k*B, C, window * in_scale, F), k windows stacked window-major ->
    (k*B, C', window * out_scale, F'). Returns (B, C', plan.frames * out_scale, F'), each output row
    the sum over windows of the window's output times its weight (the plan's weight of the latent
    frame the row belongs to). At most ``max_rows`` rows (at least one window) per call of fn.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[2] != plan.frames * in_scale:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"windowed input must be (B, C, {plan.frames * in_scale}, F), got {got}")
    _check_rows(max_rows)
    b = x.shape[0]
    per_call = plan.n if max_rows is None else max(1, max_rows // b)
    out = None
    for c0 in range(0, plan.n, per_call):
        ids = range(c0, min(c0 + per_call, plan.n))
        xw = torch.cat([x.index_select(2, _rows(plan, i, in_scale, x.device)) for i in ids])
        y = fn(xw, len(ids))
        if out is None:
            out = y.new_zeros(b, y.shape[1], plan.frames * out_scale, y.shape[3])
        for n_, i in enumerate(ids):
            w = plan.weights[i].to(device=y.device, dtype=y.dtype).repeat_interleave(out_scale)
            out.index_add_(2, _rows(plan, i, out_scale, y.device), y[n_ * b:(n_ + 1) * b] * w[None, None, :, None])
    return out


def _rows(plan: WindowPlan, i: int, scale: int, device: Any) -> torch.Tensor:
    """(window * scale,) int64 rows at ``scale`` rows per latent frame covered by window ``i``."""
    return (torch.arange(plan.window * scale, device=device) + plan.starts[i] * scale) % (plan.frames * scale)


# --- policy: when to window, and the decode ------------------------------------------------------

WINDOW_S = 10.24  # the trained length (diffusers' AudioLDM: 1024 mel frames); default window
OVERLAP_S = 1.28  # default overlap between neighbouring windows (32 latent frames)
SWITCH_S = 30.72  # lengths above this are windowed by default (benchmarks/RESULTS.md "Long-form audio")
MAX_ROWS = 4  # UNet batch rows per windowed call: two guided windows, about a 20 s plain run's rows
VOCODER_CHUNK = 2048  # mel frames per vocoder tile (exact) once the mel is longer than this
DECODE_MODES = ("auto", "full", "tiled", "windowed")
MB_PER_SECOND = 0.5  # windowed run: memory that still grows with length (latents, mel, waveform) per s and waveform


@dataclass(frozen=True)
class LongSpec:
    """The resolved long-form settings of a run: ``window`` and ``overlap`` in latent frames, ``loop``."""

    window: int
    overlap: int
    loop: bool

    def plan(self, frames: int) -> WindowPlan:
        """The window plan for a latent of ``frames`` frames."""
        return plan_windows(frames, self.window, self.overlap, self.loop)


def resolve(seconds: float, frame_s: float, window_s: Any = "auto", overlap_s: Any = OVERLAP_S,
            loop: Any = False) -> Optional[LongSpec]:
    """Check the long-form arguments of a run of ``seconds`` and decide whether it is windowed.

    window_s: "auto" (default): windows of :data:`WINDOW_S` when ``seconds > SWITCH_S`` or ``loop``,
    else the plain full-length path; None: always the plain path (diffusers' result); a number of
    seconds: windows of that length at any length (a run that fits in one window is the plain path).
    overlap_s: seconds shared by neighbouring windows (> 0, shorter than the window). Both must be
    whole numbers of latent frames (``frame_s`` seconds each). Returns None for the plain path.
    """
    if not isinstance(loop, bool):
        raise InputError(f"loop must be True or False, got {loop!r}")
    overlap = frames_for_seconds(overlap_s, frame_s, "overlap_s")
    if window_s is None:
        if loop:
            raise InputError("loop=True needs windows (they wrap around the end); use window_s='auto' or a length")
        return None
    if isinstance(window_s, str):
        if window_s != "auto":
            raise InputError(f"window_s must be 'auto', None or a number of seconds, got {window_s!r}")
        if seconds <= SWITCH_S and not loop:
            return None
        window_s = WINDOW_S
    window = frames_for_seconds(window_s, frame_s, "window_s")
    if window <= overlap:
        raise InputError(f"window_s ({window_s:g} s) must be longer than overlap_s ({overlap_s:g} s)")
    return LongSpec(window, overlap, loop)


def check_args(seconds: float, window_s: Any = "auto", overlap_s: Any = OVERLAP_S, loop: Any = False,
               frame_s: float = 0.04) -> Optional[LongSpec]:
    """:func:`resolve` plus, for a loop, the check that ``seconds`` holds one window (the pipeline
    does both; front ends call this before loading a model). ``frame_s``: AudioLDM's latent frame."""
    spec = resolve(seconds, frame_s, window_s, overlap_s, loop)
    if spec is not None and loop:
        spec.plan(max(1, math.ceil(seconds / frame_s - 1e-9)))
    return spec


def check_memory(seconds: float, batch: int) -> None:
    """Refuse a windowed run whose length-dependent memory alone (latents, mel and waveform,
    :data:`MB_PER_SECOND` per second and waveform) would exceed this machine's physical memory."""
    need = MB_PER_SECOND * seconds * batch * 2**20
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return
    if need > total:
        raise InputError(f"{seconds:g} s x {batch} waveform(s) needs about {need / 2**30:.1f} GB for its latents and "
                         f"waveforms alone, more than this machine's {total / 2**30:.1f} GB; generate it in parts "
                         f"with extend()")


def decode(vae, vocoder, z: torch.Tensor, *, mode: str = "auto", loop: bool = False,
           window: Optional[int] = None, overlap: Optional[int] = None) -> torch.Tensor:
    """Unscaled latents z (B, C, T, F) -> waveform (B, 4T * hop + tail) in the vocoder's dtype.

    mode: "full": one pass of the VAE and the vocoder (global attention; activation memory grows with
    T, attention quadratically); "tiled": the same result to float rounding, the VAE in tiles of 64
    latent frames with global norms and global attention (:meth:`VAE.decode` ``chunk_frames``) and
    the vocoder in tiles of :data:`VOCODER_CHUNK` mel frames; "windowed": the VAE decodes windows of
    ``window`` latent frames (default :data:`WINDOW_S`) overlapping by ``overlap`` (default
    :data:`OVERLAP_S`) on their own, blended like the sampler's windows (an approximation: each window
    has its own attention and norm statistics; benchmarks/RESULTS.md states the difference), then the
    tiled vocoder; "auto": "full" up to :data:`SWITCH_S`, "windowed" beyond. ``loop``: the VAE's
    windows and the vocoder's context wrap around, so the last sample continues into the first
    (needs a windowed decode: "auto" or "windowed"); the result has exactly 4T * hop samples.
    """
    if mode not in DECODE_MODES:
        raise InputError(f"decode mode must be one of {', '.join(map(repr, DECODE_MODES))}, got {mode!r}")
    frames = z.shape[2]
    frame_s = vocoder.hop * vae.factor / SAMPLE_RATE
    if mode == "auto":
        mode = "windowed" if loop or frames * frame_s > SWITCH_S + 1e-9 else "full"
    if loop and mode != "windowed":
        raise InputError(f"a loop decodes with wrap-around windows; mode must be 'auto' or 'windowed', got {mode!r}")
    if mode == "full":
        mel = vae.decode(z)
    elif mode == "tiled":
        mel = vae.decode(z, chunk_frames=64) if frames > 64 else vae.decode(z)
    else:
        w = window or round(WINDOW_S / frame_s)
        o = overlap or round(OVERLAP_S / frame_s)
        if loop:
            plan = plan_windows(frames, min(w, frames), min(o, min(w, frames) - 1), loop=True)
        else:
            plan = plan_windows(frames, w, o)
        mel = run_windows(lambda zw, k: vae.decode(zw), z, plan, out_scale=vae.factor, max_rows=z.shape[0])
    if not torch.isfinite(mel).all():
        from .errors import NumericalError

        raise NumericalError(f"the VAE decoder produced NaN/Inf ({mel.dtype}); try float32")
    voc_dtype = next(vocoder.parameters()).dtype
    mel = mel.squeeze(1).to(voc_dtype)
    if mode == "full":
        return vocoder(mel)
    chunk = VOCODER_CHUNK if mel.shape[1] > VOCODER_CHUNK else None
    if not loop:
        return vocoder(mel, chunk_frames=chunk)
    m = min(vocoder.margin, mel.shape[1])  # the vocoder's whole receptive field: circular vocoding is exact
    wav = vocoder(torch.cat([mel[:, mel.shape[1] - m:], mel, mel[:, :m]], 1), chunk_frames=chunk)
    return wav[:, m * vocoder.hop:(m + mel.shape[1]) * vocoder.hop]


def encode(vae, mel: torch.Tensor, *, window: int, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`VAE.encode` of a long mel (B, 1, 4T, 64) in windows of ``window`` latent frames
    (overlap ``overlap``), each window's posterior (mean, logvar) blended like the sampler's windows
    -> (mean, logvar), each (B, 8, T, 16). A mel that fits in one window is encoded in one pass."""
    frames = mel.shape[2] // vae.factor
    plan = plan_windows(frames, window, overlap)
    if plan.trivial:
        return vae.encode(mel)
    both = run_windows(lambda m, k: torch.cat(vae.encode(m), 1), mel, plan, in_scale=vae.factor,
                       max_rows=mel.shape[0])
    return both.chunk(2, dim=1)


def progress_total(plan: Optional[WindowPlan], model_calls: int) -> int:
    """Window evaluations of a run: windows x model calls (model calls for a plain run)."""
    return model_calls * (plan.n if plan is not None else 1)


__all__ = ["WindowPlan", "LongSpec", "decode", "encode", "frames_for_seconds", "plan_windows", "progress_total",
           "resolve", "run_windows", "windowed"]
