"""Zero-shot audio editing (AudioLDM paper, section 3.4): style transfer, inpainting, super-resolution.

All three encode the input audio with the VAE and re-run part of the denoising loop with a text
prompt; none needs retraining. They work with every sampler (DDIM is the paper's):

- transfer: noise the input's latents to the step given by ``strength`` and denoise with the prompt
  (SDEdit, Meng et al. 2022). strength 0 returns the VAE round trip, 1 is text-to-audio from the
  same noise.
- inpaint: denoise from noise, and after every step put back the known region, noised to the
  next step's level (the original's masked DDIM); after the last step the known latents are
  exactly the encoded ones.
- super_resolve: the same with a mask over frequency: mel bands above the cutoff are regenerated.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .audio import HOP, SAMPLE_RATE, load_audio, mel_filterbank, mel_for_vae
from . import longform
from .errors import InputError
from .longform import LongSpec
from .samplers import get_sampler, noise_to_start, start_for_strength, timesteps_for

AudioLike = Union[str, os.PathLike, np.ndarray]


def _waveform(audio: AudioLike) -> np.ndarray:
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio)[0]
    w = np.asarray(audio, dtype=np.float32)
    if w.ndim != 1 or w.size == 0:
        raise InputError(f"audio must be a file path or a non-empty 1-D array of 16 kHz samples, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("audio contains NaN or Inf")
    return w


@torch.no_grad()
def encode_audio(pipe, audio: AudioLike, *, sample_posterior: bool = False,
                 generator: Optional[torch.Generator] = None, long: Optional[LongSpec] = None,
                 ) -> tuple[torch.Tensor, int]:
    """Audio (path or 16 kHz samples) -> scaled latents (1, 8, T/4, 16) and the sample count.

    The posterior mean by default; ``sample_posterior`` draws from it with ``generator``. ``long``:
    encode in that spec's windows (:func:`audioldm_core.longform.encode`)."""
    w = _waveform(audio)
    if len(w) <= 512:
        raise InputError(f"audio too short: {len(w)} samples ({len(w) / SAMPLE_RATE:.3f} s); need more than 512")
    mel, n = mel_for_vae(w, pipe.vae_scale_factor)
    vae_dtype = next(pipe.vae.parameters()).dtype
    mel = mel.to(device=pipe.device, dtype=vae_dtype)
    if long is None:
        mean, logvar = pipe.vae.encode(mel)
    else:
        mean, logvar = longform.encode(pipe.vae, mel, window=long.window, overlap=long.overlap)
    z = pipe.vae.sample(mean, logvar, generator) if sample_posterior else mean
    return (z * pipe.config.vae.scaling_factor).to(pipe.dtype), n


def _long(pipe, audio: AudioLike, window_s, overlap_s) -> tuple[np.ndarray, Optional[LongSpec]]:
    """The input waveform and the long-form spec of an edit of it (None: the plain path)."""
    w = _waveform(audio)
    return w, longform.resolve(len(w) / SAMPLE_RATE, pipe.latent_frame_s, window_s, overlap_s)


def _common(pipe, prompt, negative_prompt, guidance_scale, num_inference_steps, sampler, plan=None):
    from .pipeline import _guidance, _positive_int

    steps = _positive_int(num_inference_steps, "num_inference_steps")
    get_sampler(sampler)
    g = _guidance(guidance_scale)
    cond, uncond = pipe.encode_prompt(prompt, negative_prompt=negative_prompt, guidance_scale=g)
    if cond.shape[0] != 1:
        raise InputError("editing takes one prompt (a string)")
    pipe.text_encoder_idle()
    model = None if plan is None or plan.trivial else longform.windowed(pipe.unet, plan, longform.MAX_ROWS)
    return steps, pipe.guided_eps(cond, uncond, g, model)


def _run(pipe, x0, n_samples, prompt, *, strength, blend_mask, num_inference_steps, guidance_scale,
         negative_prompt, generator, callback, callback_steps, sampler, output_type, progress, long=None):
    """Shared loop: start at ``strength``; ``blend_mask`` (1 = keep the input) or None; ``long``: the
    :class:`~audioldm_core.longform.LongSpec` whose windows the UNet runs on (None: the whole length)."""
    from .pipeline import AudioOutput, _positive_int

    every = _positive_int(callback_steps, "callback_steps")
    if output_type not in ("np", "pt"):
        raise InputError(f"output_type must be 'np' or 'pt', got {output_type!r}")
    plan = None if long is None else long.plan(x0.shape[2])
    steps, eps_fn = _common(pipe, prompt, negative_prompt, guidance_scale, num_inference_steps, sampler, plan)
    windows = 1 if plan is None else plan.n
    schedule = pipe.config.schedule
    n_evals = len(timesteps_for(sampler, schedule, steps))
    start = start_for_strength(sampler, steps, strength)
    noise = pipe.prepare_latents(1, x0.shape[2] * pipe.vae_scale_factor, generator)
    if start >= n_evals:  # strength 0: nothing to denoise
        x = x0
    else:
        x = noise if start == 0 else noise_to_start(sampler, schedule, steps, x0, noise, start)
        blend = None
        if blend_mask is not None:
            keep = blend_mask.to(device=x0.device, dtype=x0.dtype)

            def blend(i: int, t: Any, x: torch.Tensor) -> torch.Tensor:
                known = x0 if i + 1 >= n_evals else noise_to_start(sampler, schedule, steps, x0, noise, i + 1)
                return keep * known + (1 - keep) * x

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=(n_evals - start) * windows, leave=False, unit="window" if windows > 1 else "step",
                       desc=f"{sampler} edit" + (f" {windows} windows" if windows > 1 else ""))
        try:
            for i, (t, x) in enumerate(get_sampler(sampler)(eps_fn, x, schedule, steps, generator=generator,
                                                            start=start, blend=blend)):
                if bar is not None:
                    bar.update(windows)
                if not torch.isfinite(x).all():
                    from .errors import NumericalError

                    raise NumericalError(f"latents became NaN/Inf at edit step {i + 1} (t={t})")
                if callback is not None and i % every == 0:
                    callback(i, t, x)
        finally:
            if bar is not None:
                bar.close()
    audio = pipe.decode(x, n_samples, mode="auto" if long is not None else "full")
    return AudioOutput(audios=audio.numpy() if output_type == "np" else audio, sample_rate=pipe.sample_rate)


def transfer(pipe, audio: AudioLike, prompt: str, strength: float = 0.5, *, num_inference_steps: int = 10,
             guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
             generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
             callback_steps: int = 1, sampler: str = "ddim", sample_posterior: bool = False,
             output_type: str = "np", progress: bool = True, window_s: Union[str, float, None] = "auto",
             overlap_s: float = longform.OVERLAP_S):
    """Text-guided style transfer: (1, samples) audio of the input's length. ``window_s``,
    ``overlap_s``: as for generation (:meth:`AudioLDM.__call__`), by the input's length."""
    w, long = _long(pipe, audio, window_s, overlap_s)
    x0, n = encode_audio(pipe, w, sample_posterior=sample_posterior, generator=generator, long=long)
    return _run(pipe, x0, n, prompt, strength=strength, blend_mask=None, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, negative_prompt=negative_prompt, generator=generator,
                callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                progress=progress, long=long)


def time_mask(latent_frames: int, start_s: float, end_s: float, duration_s: float, factor: int) -> torch.Tensor:
    """(1, 1, latent_frames, 1) mask, 1 where the input is kept, 0 on latent frames overlapping
    [start_s, end_s)."""
    for v, name in ((start_s, "start"), (end_s, "end")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{name} must be a number of seconds, got {v!r}")
    if start_s >= end_s:
        raise InputError(f"start ({start_s} s) must be before end ({end_s} s)")
    if start_s < 0 or end_s > duration_s + 1e-9:
        raise InputError(f"range {start_s}-{end_s} s is outside the audio (0-{duration_s:.3f} s)")
    per_s = SAMPLE_RATE / HOP / factor  # latent frames per second
    a, b = int(math.floor(start_s * per_s)), int(math.ceil(end_s * per_s))
    mask = torch.ones(1, 1, latent_frames, 1)
    mask[:, :, a:max(b, a + 1)] = 0
    return mask


def inpaint(pipe, audio: AudioLike, prompt: str, start_s: float, end_s: float, *, num_inference_steps: int = 10,
            guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
            generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
            callback_steps: int = 1, sampler: str = "ddim", output_type: str = "np", progress: bool = True,
            window_s: Union[str, float, None] = "auto", overlap_s: float = longform.OVERLAP_S):
    """Regenerate [start_s, end_s) from the prompt and keep the rest: (1, samples) of the input's length.
    ``window_s``, ``overlap_s``: as for generation, by the input's length."""
    w, long = _long(pipe, audio, window_s, overlap_s)
    x0, n = encode_audio(pipe, w, long=long)
    mask = time_mask(x0.shape[2], start_s, end_s, len(w) / SAMPLE_RATE, pipe.vae_scale_factor)
    return _run(pipe, x0, n, prompt, strength=1.0, blend_mask=mask, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, negative_prompt=negative_prompt, generator=generator,
                callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                progress=progress, long=long)


def detect_cutoff(waveform: np.ndarray, floor_db: float = -60.0) -> float:
    """Estimate the bandwidth of band-limited audio: the highest frequency whose mean STFT magnitude
    is within ``floor_db`` of the loudest frequency (Hz, in (0, 8000])."""
    spec = torch.stft(torch.as_tensor(waveform, dtype=torch.float32), 1024, hop_length=HOP,
                      window=torch.hann_window(1024), return_complex=True).abs().mean(dim=1)
    db = 20 * torch.log10(spec + 1e-12)
    above = torch.nonzero(db > db.max() + floor_db).flatten()
    return float(above.max()) * SAMPLE_RATE / 1024 if len(above) else SAMPLE_RATE / 2


def freq_mask(latent_bins: int, cutoff_hz: float, factor: int) -> torch.Tensor:
    """(1, 1, 1, latent_bins) mask, 1 on latent frequency bins whose mel bands lie wholly below
    ``cutoff_hz`` (kept), 0 above (regenerated)."""
    if isinstance(cutoff_hz, bool) or not isinstance(cutoff_hz, (int, float)) or not 0 < cutoff_hz < SAMPLE_RATE / 2:
        raise InputError(f"cutoff_hz must be in (0, {SAMPLE_RATE // 2}) Hz, got {cutoff_hz!r}")
    fb = mel_filterbank()
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    top = np.array([freqs[np.nonzero(row)[0].max()] for row in fb])  # highest frequency each mel band sees
    kept_mels = int(np.sum(top <= cutoff_hz))
    mask = torch.zeros(1, 1, 1, latent_bins)
    mask[..., : kept_mels // factor] = 1
    return mask


def super_resolve(pipe, audio: AudioLike, prompt: str = "", cutoff_hz: Optional[float] = None, *,
                  num_inference_steps: int = 10, guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
                  generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
                  callback_steps: int = 1, sampler: str = "ddim", output_type: str = "np", progress: bool = True,
                  window_s: Union[str, float, None] = "auto", overlap_s: float = longform.OVERLAP_S):
    """Regenerate the mel bands above ``cutoff_hz`` (detected from the input when None), keep the rest.
    ``window_s``, ``overlap_s``: as for generation, by the input's length."""
    w, long = _long(pipe, audio, window_s, overlap_s)
    cutoff = detect_cutoff(w) if cutoff_hz is None else cutoff_hz
    if cutoff_hz is None and cutoff >= SAMPLE_RATE / 2 - SAMPLE_RATE / 1024:
        raise InputError("the input already has content up to 8 kHz; give cutoff_hz to choose the bands to regenerate")
    x0, n = encode_audio(pipe, w, long=long)
    mask = freq_mask(x0.shape[3], cutoff, pipe.vae_scale_factor)
    return _run(pipe, x0, n, prompt, strength=1.0, blend_mask=mask, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, negative_prompt=negative_prompt, generator=generator,
                callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                progress=progress, long=long)


__all__ = ["transfer", "inpaint", "super_resolve", "encode_audio", "time_mask", "freq_mask", "detect_cutoff"]
