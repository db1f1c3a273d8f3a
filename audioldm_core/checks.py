"""Argument checks shared by the pipeline and the edits: each raises :class:`InputError` saying what
was wrong and what is accepted, before any expensive work."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .audio import SAMPLE_RATE, load_audio
from .errors import InputError

Prompt = Union[str, Sequence[str], None]
OUTPUT_TYPES = ("np", "pt")
DEFAULT_SECONDS = 5.12  # diffusers: unet sample_size (128) * VAE factor (4) * hop / rate (0.01)
MAX_SECONDS = 120.0  # longer requests need allow_long=True (memory grows linearly with length)
MB_PER_SECOND = 40  # rough peak activation memory per second of audio per waveform (fp32, decode)


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def guidance(value: Any) -> float:
    return finite_number(value, "guidance_scale")


def eta(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"eta must be a number >= 0 (or None: 0.0, or 1.0 with compat='original'), got {value!r}")
    return float(value)


def output_type(value: Any) -> str:
    if value not in OUTPUT_TYPES:
        raise InputError(f"output_type must be 'np' or 'pt', got {value!r}")
    return value


def callback(fn: Optional[Callable], every: Any) -> int:
    """Checks ``callback(step, timestep, latents)`` and ``callback_steps``; returns the latter."""
    every = positive_int(every, "callback_steps")
    if fn is not None and not callable(fn):
        raise InputError("callback must be callable as callback(step, timestep, latents)")
    return every


def prompt_list(prompt: Prompt, prompt_embeds: Optional[torch.Tensor] = None) -> Optional[list[str]]:
    """A prompt or list of prompts -> list of strings; None when ``prompt_embeds`` are given instead."""
    if prompt is not None and prompt_embeds is not None:
        raise InputError("give prompt or prompt_embeds, not both")
    if prompt is None and prompt_embeds is None:
        raise InputError("give a prompt (a string or a list of strings) or prompt_embeds")
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise InputError("prompt is an empty list; give at least one string")
        bad = [type(p).__name__ for p in prompt if not isinstance(p, str)]
        if bad:
            raise InputError(f"every prompt in the list must be a string; found {', '.join(sorted(set(bad)))}")
        return list(prompt)
    raise InputError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")


def negative_list(negative_prompt: Prompt, batch: int) -> list[str]:
    """The negative prompt for each of ``batch`` prompts: "" by default, one string for all, or a list."""
    if negative_prompt is None:
        return [""] * batch
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    negs = prompt_list(list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else negative_prompt)
    if len(negs) != batch:
        raise InputError(f"negative_prompt has {len(negs)} entries but there are {batch} prompts; "
                         f"give one per prompt, or a single string for all")
    return negs


def embeds(value: Any, name: str, width: int) -> torch.Tensor:
    """A finite (B, width) embedding tensor with B >= 1."""
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] != width or value.shape[0] == 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"{name} must be a (B, {width}) tensor, got {shape}")
    if not torch.isfinite(value).all():
        raise InputError(f"{name} contains NaN or Inf")
    return value


def waveform(audio: Any) -> tuple[np.ndarray, float]:
    """A path to an audio file (read and resampled to 16 kHz) or 16 kHz samples -> ((samples,) float32,
    the input's own duration in seconds: a file's frames / its rate, before resampling)."""
    if isinstance(audio, (str, os.PathLike)):
        w, info = load_audio(audio)
        return w, info.frames / info.sample_rate
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    w = np.asarray(audio, dtype=np.float32)
    if w.ndim != 1 or w.size == 0:
        raise InputError(f"audio must be a file path or a non-empty 1-D array of 16 kHz samples, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("audio contains NaN or Inf")
    return w, w.size / SAMPLE_RATE


def length(config, seconds: Optional[float], *, allow_long: bool = False, batch: int = 1) -> tuple[float, int, int]:
    """(seconds, mel frames, waveform samples) for a requested length in seconds (None: 5.12), as
    diffusers computes them: frames = int(seconds / hop_seconds) rounded up to a multiple of the VAE
    factor; samples = int(seconds * rate). Above :data:`MAX_SECONDS` refused unless ``allow_long``."""
    voc = config.vocoder
    hop_seconds = float(np.prod(voc.upsample_rates)) / voc.sampling_rate
    factor = 2 ** (len(config.vae.block_channels) - 1)
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InputError(f"audio_length_in_s must be a number of seconds, got {seconds!r}")
    minimum = hop_seconds * factor
    if not math.isfinite(seconds) or seconds < minimum:
        raise InputError(f"audio_length_in_s must be at least {minimum:g} s, got {seconds}")
    if seconds > MAX_SECONDS and not allow_long:
        gb = MB_PER_SECOND * seconds * batch / 1024
        raise InputError(f"audio_length_in_s={seconds:g} s is above the {MAX_SECONDS:g} s limit (estimated extra "
                         f"memory about {gb:.1f} GB for {batch} waveform(s), plus the weights); pass "
                         f"allow_long=True (CLI: --allow-long) to run it anyway")
    frames = math.ceil(int(seconds / hop_seconds) / factor) * factor
    return float(seconds), frames, int(seconds * voc.sampling_rate)
