"""What the denoising loops of the pipeline and the edits share: their step record, their output, and
the driver that checks each step, shows progress and calls the user's callback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
import torch

from .errors import InputError, NumericalError


@dataclass
class AudioOutput:
    """Generated audio: ``audios`` float32 (B, samples) as numpy or torch, at ``sample_rate`` Hz."""

    audios: Union[np.ndarray, torch.Tensor]
    sample_rate: int = 16000


@dataclass
class DenoiseStep:
    """One model evaluation of a denoising loop, as yielded by :meth:`AudioLDM.denoise`.

    index: 0-based evaluation number; num_steps: evaluations in the run; timestep: the sampler's
    timestep; latents: (B, C, T, F) current latents (scaled, as the UNet sees them before decoding);
    num_samples: the waveform length :meth:`AudioLDM.decode` trims to.
    """

    index: int
    num_steps: int
    timestep: Any
    latents: torch.Tensor
    num_samples: int


def checked(stream: Iterable[tuple[Any, torch.Tensor]], what: str) -> Iterable[tuple[Any, torch.Tensor]]:
    """Pass a sampler's ``(t, x)`` pairs through, raising :class:`NumericalError` at the first
    non-finite latents (``what`` names the run, e.g. "step {i} of the ddim sampler")."""
    for i, (t, x) in enumerate(stream):
        if not torch.isfinite(x).all():
            t = t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
            raise NumericalError(f"latents became NaN/Inf at {what.format(i=i + 1)} (t={t}); try float32")
        yield t, x


def drive(steps: Iterable[DenoiseStep], *, calls_per_step: int, total_steps: int, desc: str,
          callback: Optional[Callable[[int, Any, torch.Tensor], None]] = None, callback_steps: int = 1,
          progress: bool = True) -> DenoiseStep:
    """Run a loop to its end and return its last step.

    A step counts as done every ``calls_per_step`` evaluations (Heun: 2) and at the last one, as
    diffusers counts them: the progress bar (tqdm, created after the first evaluation so bad input
    never shows one) advances then, and ``callback(step, timestep, latents)`` runs every
    ``callback_steps`` evaluations.
    """
    bar, last = None, None
    try:
        for last in steps:
            if bar is None and progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total_steps, desc=desc, unit="step", leave=False)
            if last.index == last.num_steps - 1 or (last.index + 1) % calls_per_step == 0:
                if bar is not None:
                    bar.update(1)
                if callback is not None and last.index % callback_steps == 0:
                    callback(last.index // calls_per_step, last.timestep, last.latents)
    finally:
        if bar is not None:
            bar.close()
    if last is None:
        raise InputError("the sampler produced no step")
    return last


def output(audio: torch.Tensor, output_type: str, sample_rate: int) -> AudioOutput:
    """(B, samples) float32 CPU waveforms -> :class:`AudioOutput` as numpy ("np") or torch ("pt")."""
    return AudioOutput(audios=audio.numpy() if output_type == "np" else audio, sample_rate=sample_rate)
