"""Continuation: extend an audio clip by generated audio that follows it (inpainting of a region after
the clip's end, run on the long-form windows of :mod:`audioldm_core.longform`).

The clip's latents are kept at every step exactly as inpainting keeps its known region; the frames
after it start from noise. The returned waveform is the input's own samples up to a short crossfade
before the join, then the generated continuation, scaled by one gain so that its RMS over the first
:data:`MATCH_S` seconds after the join equals the input's RMS over its last :data:`MATCH_S` seconds.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from . import longform
from .audio import HOP, SAMPLE_RATE
from . import checks
from .edit import AudioLike, _checked, _run, encode_audio
from .errors import InputError
from .loop import output

MATCH_S = 1.0  # seconds each side of the join whose RMS is matched
FADE_S = 0.05  # crossfade from the input's samples into the decoded audio, ending at the join
MAX_GAIN = 8.0  # the continuation's gain stays within [1/MAX_GAIN, MAX_GAIN] (and never clips)


def rms(x: np.ndarray) -> float:
    """Root mean square of a 1-D array (0 for an empty one)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def join_gain(before: np.ndarray, after: np.ndarray, peak: float) -> float:
    """The gain that gives ``after`` the RMS of ``before``, within [1/MAX_GAIN, MAX_GAIN] and at most
    ``1 / peak`` (no clipping); 1 when either side is silent."""
    a, b = rms(before), rms(after)
    if a <= 1e-8 or b <= 1e-8:
        return 1.0
    g = min(max(a / b, 1 / MAX_GAIN), MAX_GAIN)
    return min(g, 1.0 / peak) if peak > 0 else g


@torch.no_grad()
def extend(pipe, audio: AudioLike, prompt: str, seconds: float, *, num_inference_steps: int = 10,
           guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
           generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
           callback_steps: int = 1, sampler: str = "ddim", output_type: str = "np", progress: bool = True,
           window_s: Union[str, float, None] = longform.WINDOW_S, overlap_s: float = longform.OVERLAP_S) -> Any:
    """Continue ``audio`` (a path or 16 kHz samples) by ``seconds`` seconds generated from ``prompt``.

    Returns :class:`~audioldm_core.pipeline.AudioOutput` with (1, len(audio) + int(seconds * 16000))
    samples: the input unchanged except for the last :data:`FADE_S` s (a crossfade into the decoded
    audio), then the continuation with its loudness matched at the join (see the module docstring).
    window_s: the UNet's window (default 10.24 s, the trained length; "auto" or None as for
    generation); overlap_s: the windows' overlap. Other arguments as for :func:`audioldm_core.edit.inpaint`.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise InputError(f"seconds must be a positive number of seconds to add, got {seconds!r}")
    args = _checked(pipe, prompt, None, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    callback=callback, callback_steps=callback_steps, sampler=sampler, output_type="np",
                    compat="diffusers", noise=None, window_s=window_s, overlap_s=overlap_s)
    checks.output_type(output_type)
    w, _ = checks.waveform(audio)
    known_n, new_n = len(w), int(seconds * SAMPLE_RATE)
    if new_n < 1:
        raise InputError(f"seconds={seconds!r} adds no sample at {SAMPLE_RATE} Hz")
    total_s = (known_n + new_n) / SAMPLE_RATE
    long = longform.resolve(total_s, pipe.latent_frame_s, window_s, overlap_s)
    f = pipe.vae_scale_factor
    per_frame = HOP * f  # samples per latent frame
    _, mel_frames, _ = pipe.lengths(total_s, allow_long=True)
    frames = mel_frames // f
    if long is None:
        pipe.lengths(total_s)  # the plain path's length limit and its message
    else:
        longform.check_memory(total_s, 1)
    x_known, _ = encode_audio(pipe, w, long=long)
    keep = min(known_n // per_frame, frames)  # latent frames wholly inside the input
    x0 = torch.zeros(1, x_known.shape[1], frames, x_known.shape[3], dtype=x_known.dtype, device=x_known.device)
    x0[:, :, :keep] = x_known[:, :, :keep]
    mask = torch.zeros(1, 1, frames, 1)
    mask[:, :, :keep] = 1
    out = _run(pipe, x0, known_n + new_n, prompt, args, keep=mask, negative_prompt=negative_prompt,
               generator=generator, callback=callback, progress=progress, long=long)
    decoded = out.audios[0]
    fade = min(int(FADE_S * SAMPLE_RATE), known_n)
    m = int(MATCH_S * SAMPLE_RATE)
    g = join_gain(w[max(known_n - m, 0):], decoded[known_n:known_n + m],
                  float(np.abs(decoded[known_n - fade:]).max()))
    result = np.concatenate([w, decoded[known_n:] * g]).astype(np.float32)
    if fade:
        r = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        result[known_n - fade:known_n] = (1 - r) * w[known_n - fade:] + r * g * decoded[known_n - fade:known_n]
    return output(torch.from_numpy(result[None]), output_type, SAMPLE_RATE)


__all__ = ["extend", "join_gain", "rms", "FADE_S", "MATCH_S"]
