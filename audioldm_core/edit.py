"""Zero-shot audio editing (AudioLDM paper, section 3.4): style transfer, inpainting, super-resolution.

All three encode the input audio with the VAE and re-run part of the denoising loop with a text
prompt; none needs retraining. They work with every sampler (DDIM is the paper's):

- transfer: noise the input's latents to the step given by ``strength`` and denoise with the prompt
  (SDEdit, Meng et al. 2022). strength 0 returns the VAE round trip, 1 is text-to-audio from the
  same noise.
- inpaint: denoise from noise, and after every step put back the known region noised to the next
  step's level with one fixed noise draw; after the last step the known latents are exactly the
  input's encoded latents.
- super_resolve: the same with a mask over frequency: mel bands above the cutoff are regenerated.

``compat="original"`` runs the original AudioLDM code's edit algorithms instead
(:mod:`audioldm_core.compat`, DDIM only): DDIM with eta 1.0 on the original's own timesteps; transfer
clips the encoded input (to [-10, 10] if any value exceeds 100), noises it to DDIM index
t_enc = int(strength * steps) and runs the t_enc steps below that index (strengths where t_enc
falls past the schedule, e.g. 1, are refused; 0 returns the input noised to the first timestep);
inpaint and super_resolve blend the known region *before* each step with the input noised to that
step by fresh noise, and keep whatever the last step gives. Its conditioning also takes the
original's 10% swap to the empty prompt. Every Gaussian draw comes from ``noise(shape)`` (default:
``generator``) in the original's order. Encoding stays ours (posterior mean unless
``sample_posterior``; the original samples the posterior), as does the output length.

Ours is the default because its known latents end exactly at the input's encoded latents (no
residual noise from the last step), a seed fixes the result, strength 0 and 1 mean "the VAE round
trip" and "text-to-audio from the same noise", and it works with every sampler.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from . import checks
from .audio import HOP, SAMPLE_RATE, mel_filterbank, mel_for_vae
from .compat import (compat_mode, original_clip, original_conditioning, original_ddim_plan, original_edit_sampler,
                     original_stochastic_encode, original_transfer_start, sample_original_ddim)
from .errors import InputError
from .loop import AudioOutput, DenoiseStep, checked, drive, output
from .noise import first_generator, randn_tensor
from .samplers import get_sampler

AudioLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]
NoiseFn = Callable[[tuple], torch.Tensor]


@torch.no_grad()
def encode_audio(pipe, audio: AudioLike, *, sample_posterior: bool = False,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, int]:
    """Audio (path or 16 kHz samples) -> scaled latents (1, 8, T/4, 16) and the sample count.

    The posterior mean by default; ``sample_posterior`` draws from it with ``generator``."""
    w = checks.waveform(audio)[0]
    if len(w) <= 512:
        raise InputError(f"audio too short: {len(w)} samples ({len(w) / SAMPLE_RATE:.3f} s); need more than 512")
    mel, n = mel_for_vae(w, pipe.vae_scale_factor)
    vae_dtype = next(pipe.vae.parameters()).dtype
    mean, logvar = pipe.vae.encode(mel.to(device=pipe.device, dtype=vae_dtype))
    z = pipe.vae.sample(mean, logvar, generator) if sample_posterior else mean
    return (z * pipe.config.vae.scaling_factor).to(pipe.dtype), n


def _checked(pipe, prompt, strength, *, num_inference_steps, guidance_scale, callback, callback_steps, sampler,
             output_type, compat, noise) -> dict[str, Any]:
    """Every edit argument checked before any audio is read or encoded; ``strength`` None for the
    masked edits (sampled from noise)."""
    if not isinstance(prompt, str):
        raise InputError(f"editing takes one prompt (a string), got {type(prompt).__name__}")
    mode, schedule = compat_mode(compat), pipe.config.schedule
    steps = checks.positive_int(num_inference_steps, "num_inference_steps")
    args = dict(mode=mode, name=sampler, steps=steps, guidance=checks.guidance(guidance_scale),
                every=checks.callback(callback, callback_steps), output_type=checks.output_type(output_type))
    if mode == "original":
        original_edit_sampler(sampler)
        original_ddim_plan(schedule, steps)  # refuses step counts the original cannot run
        if noise is not None and not callable(noise):
            raise InputError("noise must be callable as noise(shape) -> unit normal tensor")
        args["t_enc"] = None if strength is None else original_transfer_start(schedule, steps, strength)
    else:
        if noise is not None:
            raise InputError("noise= is used only with compat='original' (ours draws from generator)")
        plan = get_sampler(sampler)
        args.update(plan=plan, start=plan.start(schedule, steps, 1.0 if strength is None else strength))
    return args


def _ours(pipe, eps_fn, x0: torch.Tensor, args: dict[str, Any], keep: Optional[torch.Tensor], generator):
    """Our loop: (stream of (t, x) or None, model calls, latents if nothing runs)."""
    plan, steps, start, schedule = args["plan"], args["steps"], args["start"], pipe.config.schedule
    total = plan.num_calls(schedule, steps)
    noise = pipe.prepare_latents(1, x0.shape[2] * pipe.vae_scale_factor, generator)
    if start >= total:  # strength 0 keeps the round trip: nothing to denoise
        return None, 0, x0
    x = noise if start == 0 else plan.noise_to_start(schedule, steps, x0, noise, start)
    blend = None
    if keep is not None:
        def blend(i: int, t: Any, x: torch.Tensor) -> torch.Tensor:
            known = x0 if i + 1 >= total else plan.noise_to_start(schedule, steps, x0, noise, i + 1)
            return keep * known + (1 - keep) * x

    stream = plan(eps_fn, x, schedule, steps, generator=first_generator(generator), start=start, blend=blend)
    return stream, total - start, x


def _original(pipe, eps_fn, x0: torch.Tensor, args: dict[str, Any], keep: Optional[torch.Tensor], noise: NoiseFn):
    """The original's loop (:mod:`audioldm_core.compat`): (stream, model calls, starting latents)."""
    schedule, steps, t_enc = pipe.config.schedule, args["steps"], args["t_enc"]
    if keep is None:  # style transfer (pipeline.py style_transfer)
        x = original_stochastic_encode(schedule, steps, original_clip(x0), noise(tuple(x0.shape)), t_enc)
        return sample_original_ddim(eps_fn, x, schedule, steps, noise=noise, steps=t_enc), t_enc, x
    x = noise(tuple(x0.shape)).to(x0)  # masked (ldm.py generate_sample_masked)
    calls = len(original_ddim_plan(schedule, steps)[0])
    return sample_original_ddim(eps_fn, x, schedule, steps, noise=noise, x0=x0, keep=keep), calls, x


@torch.no_grad()
def _run(pipe, x0: torch.Tensor, n_samples: int, prompt: str, args: dict[str, Any], *, keep: Optional[torch.Tensor],
         negative_prompt, generator, callback, progress, noise: Optional[NoiseFn] = None) -> AudioOutput:
    """The shared loop: ``keep`` (1 = keep the input's latents) or None (transfer)."""
    cond, uncond = pipe.encode_prompt(prompt, negative_prompt=negative_prompt, guidance_scale=args["guidance"])
    if args["mode"] == "original":  # its conditioner's 10% swap, drawn before any noise as the original does
        cond = original_conditioning(cond, first_generator(generator), lambda: pipe.prompt_encoder([""]))
    pipe.text_encoder_idle()
    eps_fn = pipe.guided_eps(cond, uncond, args["guidance"])
    if keep is not None:
        keep = keep.to(device=x0.device, dtype=x0.dtype)
    if args["mode"] == "original":
        if noise is None:
            def noise(shape: tuple) -> torch.Tensor:
                return randn_tensor(shape, first_generator(generator), pipe.device, pipe.dtype)
        stream, calls, x = _original(pipe, eps_fn, x0, args, keep, noise)
    else:
        stream, calls, x = _ours(pipe, eps_fn, x0, args, keep, generator)
    if calls:
        calls_per_step = 1 if args["mode"] == "original" else args["plan"].calls_per_step
        stream = checked(stream, f"edit step {{i}} of the {args['name']} sampler")
        x = drive((DenoiseStep(i, calls, t, x, n_samples) for i, (t, x) in enumerate(stream)),
                  calls_per_step=calls_per_step, total_steps=math.ceil(calls / calls_per_step), desc="edit",
                  callback=callback, callback_steps=args["every"], progress=progress).latents
    return output(pipe.decode(x, n_samples), args["output_type"], pipe.sample_rate)


def transfer(pipe, audio: AudioLike, prompt: str, strength: float = 0.5, *, num_inference_steps: int = 10,
             guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
             generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
             callback_steps: int = 1, sampler: str = "ddim", sample_posterior: bool = False,
             output_type: str = "np", progress: bool = True, compat: str = "diffusers",
             noise: Optional[NoiseFn] = None) -> AudioOutput:
    """Text-guided style transfer: (1, samples) audio of the input's length.

    compat: "diffusers" (ours, default) or "original" (see the module docstring); noise(shape) ->
    unit normal tensor: with compat="original" only, the source of every Gaussian draw of the loop."""
    args = _checked(pipe, prompt, strength, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                    compat=compat, noise=noise)
    x0, n = encode_audio(pipe, audio, sample_posterior=sample_posterior, generator=generator)
    return _run(pipe, x0, n, prompt, args, keep=None, negative_prompt=negative_prompt, generator=generator,
                callback=callback, progress=progress, noise=noise)


def time_mask(latent_frames: int, start_s: float, end_s: float, duration_s: float, factor: int) -> torch.Tensor:
    """(1, 1, latent_frames, 1) mask, 1 where the input is kept, 0 on latent frames overlapping
    [start_s, end_s). ``duration_s`` is the input's own duration (before any resampling)."""
    for v, name in ((start_s, "start"), (end_s, "end")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{name} must be a number of seconds, got {v!r}")
    if start_s >= end_s:
        raise InputError(f"start ({start_s} s) must be before end ({end_s} s)")
    if start_s < 0 or end_s > duration_s + 1e-9:
        raise InputError(f"range {start_s}-{end_s} s is outside the audio (0-{duration_s:.6g} s)")
    per_s = SAMPLE_RATE / HOP / factor  # latent frames per second
    a, b = int(math.floor(start_s * per_s)), int(math.ceil(end_s * per_s))
    mask = torch.ones(1, 1, latent_frames, 1)
    mask[:, :, a:max(b, a + 1)] = 0
    return mask


def inpaint(pipe, audio: AudioLike, prompt: str, start_s: float, end_s: float, *, num_inference_steps: int = 10,
            guidance_scale: float = 2.5, negative_prompt: Optional[str] = None,
            generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
            callback_steps: int = 1, sampler: str = "ddim", output_type: str = "np",
            progress: bool = True, compat: str = "diffusers", noise: Optional[NoiseFn] = None) -> AudioOutput:
    """Regenerate [start_s, end_s) from the prompt and keep the rest: (1, samples) of the input's length.
    compat, noise: as in :func:`transfer`."""
    args = _checked(pipe, prompt, None, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                    compat=compat, noise=noise)
    w, duration = checks.waveform(audio)
    time_mask(1, start_s, end_s, duration, pipe.vae_scale_factor)  # the range is checked before encoding
    x0, n = encode_audio(pipe, w)
    mask = time_mask(x0.shape[2], start_s, end_s, duration, pipe.vae_scale_factor)
    return _run(pipe, x0, n, prompt, args, keep=mask, negative_prompt=negative_prompt, generator=generator,
                callback=callback, progress=progress, noise=noise)


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
                  callback_steps: int = 1, sampler: str = "ddim", output_type: str = "np",
                  progress: bool = True, compat: str = "diffusers", noise: Optional[NoiseFn] = None) -> AudioOutput:
    """Regenerate the mel bands above ``cutoff_hz`` (detected from the input when None), keep the rest.
    compat, noise: as in :func:`transfer`."""
    args = _checked(pipe, prompt, None, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    callback=callback, callback_steps=callback_steps, sampler=sampler, output_type=output_type,
                    compat=compat, noise=noise)
    if cutoff_hz is not None:
        freq_mask(1, cutoff_hz, 1)  # checked before the audio is read
    w, _ = checks.waveform(audio)
    cutoff = detect_cutoff(w) if cutoff_hz is None else cutoff_hz
    if cutoff_hz is None and cutoff >= SAMPLE_RATE / 2 - SAMPLE_RATE / 1024:
        raise InputError("the input already has content up to 8 kHz; give cutoff_hz to choose the bands to regenerate")
    x0, n = encode_audio(pipe, w)
    mask = freq_mask(x0.shape[3], cutoff, pipe.vae_scale_factor)
    return _run(pipe, x0, n, prompt, args, keep=mask, negative_prompt=negative_prompt, generator=generator,
                callback=callback, progress=progress, noise=noise)


__all__ = ["transfer", "inpaint", "super_resolve", "encode_audio", "time_mask", "freq_mask", "detect_cutoff"]
