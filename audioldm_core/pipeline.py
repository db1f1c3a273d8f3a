"""Text-to-audio: prompt -> CLAP embedding -> denoising loop in latent space -> VAE -> HiFi-GAN.

``AudioLDM`` reproduces diffusers' ``AudioLDMPipeline`` argument by argument (same defaults, the same
length rounding and trimming, guidance only when ``guidance_scale > 1``, the same initial latents
for the same CPU ``torch.Generator`` state), with three differences that do not change results:
prompts are not padded to 512 tokens (the attention mask makes the embedding equal), the empty
negative prompt's embedding is cached, and a string ``negative_prompt`` applies to every prompt of a
list (diffusers raises there). ``compat="original"`` switches to the sampling rules of the original
AudioLDM code instead (:mod:`audioldm_core.compat`).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from . import checks, longform
from .checkpoint import COMPONENTS
from .compat import compat_mode, default_eta, original_clip, original_conditioning
from .config import AudioLDMConfig
from .errors import InputError, NumericalError
from .layers import component_dtype
from .loading import DEFAULT_MODEL, HUB_ALIASES, load_parts
from .longform import OVERLAP_S
from .loop import AudioOutput, DenoiseStep, checked, drive, output
from .noise import Generator, first_generator, randn_tensor
from .samplers import get_sampler



class AudioLDM:
    """The AudioLDM text-to-audio pipeline.

    Build it with :meth:`from_pretrained`. Components are plain modules (``clap``, ``unet``, ``vae``,
    ``vocoder``) plus ``tokenizer`` and ``config``; researchers may call them directly.

    ``release_text_encoder`` (default True): once a run has its prompt embeddings, the text encoder's
    clean file-mapped weight pages are handed back to the OS (:mod:`audioldm_core.memory`); the next
    prompt maps them again from the page cache. Values never change. Set it to False to keep them
    resident.
    """

    def __init__(self, config: AudioLDMConfig, tokenizer, clap: nn.Module, unet: nn.Module, vae: nn.Module,
                 vocoder: nn.Module, source: Optional[dict] = None):
        from .clap import PromptEncoder

        self.config, self.tokenizer = config, tokenizer
        self.clap, self.unet, self.vae, self.vocoder = clap, unet, vae, vocoder
        self.source = dict(source or {})
        self.prompt_encoder = PromptEncoder(tokenizer, clap)
        self.release_text_encoder = True
        self._clap_audio, self._clap_audio_loader, self.clap_audio_source = None, None, None

    @classmethod
    def from_pretrained(cls, source: Union[str, os.PathLike] = DEFAULT_MODEL, *, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32, revision: Optional[str] = None,
                        variant: Optional[str] = None, compile: bool = False,
                        clap: Union[str, os.PathLike, None] = None, backend: str = "torch",
                        backend_options: Optional[dict] = None) -> "AudioLDM":
        """Load a model from any of:

        - a converted ``.safetensors`` file written by ``audioldm-convert``;
        - a cvssp-layout folder (converted in memory by the same code as the CLI);
        - a Hugging Face repo id such as ``cvssp/audioldm-s-full-v2`` (downloaded and cached by
          huggingface_hub; offline and not cached raises with instructions), or one of the short
          names ``s-full``, ``s-full-v2``, ``m-full``, ``l-full`` for the public repos;
        - ``"tiny"``: a few-MB model with seeded random weights for demos and tests (its output is noise).

        dtype: see :func:`audioldm_core.layers.component_dtype` for what stays float32.
        compile: run :meth:`compile` on the result.
        clap: a CLAP audio file (``audioldm-convert laion/clap-htsat-unfused``) to score and re-rank
            with (:mod:`audioldm_core.rerank`); loaded on first use.
        backend: "torch" (default), "onnxruntime" or "openvino": the components run as ONNX Runtime
            (extra ``[onnx]``) or OpenVINO (extra ``[openvino]``) sessions of graphs exported from these
            modules and cached on disk (float32, CPU); ``backend_options`` go to
            :func:`audioldm_core.onnx_backend.apply` (``cache_dir``, ``threads``).
        """
        from . import onnx_backend

        onnx_backend.check_backend(backend, device=device, dtype=dtype, compile=compile, options=backend_options)
        parts = load_parts(source, device=device, dtype=dtype, revision=revision, variant=variant)
        pipe = cls(parts.config, parts.tokenizer, source=parts.source, **parts.modules)
        from .rerank import attach, attach_own

        attach_own(pipe)
        if clap is not None:
            attach(pipe, clap)
        pipe._warn_slow_dtype()
        if backend in onnx_backend.RUNTIMES:
            return onnx_backend.apply(pipe, **(backend_options or {}), runtime=backend)
        return pipe.compile() if compile else pipe

    def compile(self, **options: Any) -> "AudioLDM":
        """Compile the UNet's forward with ``torch.compile`` in place (the UNet runs once per sampler
        step; the other components once per run); returns self. ``options`` go to ``torch.compile``.

        The first call at each new latent shape compiles one graph for the whole forward; outputs
        match eager to float rounding. On the CPU, inductor's layout optimisation (channels-last
        convolutions) is off unless ``options={"layout_optimization": True}`` or a ``mode`` is given:
        it made the compiled step slower than eager (``benchmarks/RESULTS.md``). Needs a C++ compiler
        on the CPU, as inductor does.
        """
        if "mode" not in options and self.device.type == "cpu":
            inductor = dict(options.pop("options", None) or {})
            inductor.setdefault("layout_optimization", False)
            options["options"] = inductor
        self.unet.compile(**options)
        return self

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "AudioLDM":
        """Move every component to ``device`` and/or cast it to ``dtype`` (as
        :func:`~audioldm_core.layers.component_dtype` says per component); returns self."""
        for comp in COMPONENTS:
            getattr(self, comp).to(device=device, dtype=component_dtype(comp, dtype) if dtype else None)
        if self._clap_audio is not None:  # a tower not built yet is built where the text tower is
            self._clap_audio.to(**self._clap_audio_place())
        self._warn_slow_dtype()
        return self

    def _warn_slow_dtype(self) -> None:
        if self.device.type == "cpu" and self.dtype == torch.float16:
            import warnings

            warnings.warn("float16 on the CPU is about 60x slower than float32 for the UNet (no fast fp16 "
                          "CPU kernels); use float32, or bfloat16 on a CPU with AVX512-BF16/AMX", stacklevel=3)

    @property
    def device(self) -> torch.device:
        """The device the UNet's weights are on."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the UNet's weights."""
        return next(self.unet.parameters()).dtype

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (16000 for every AudioLDM checkpoint)."""
        return self.config.vocoder.sampling_rate

    @property
    def vae_scale_factor(self) -> int:
        """How many mel frames (and bins) one latent cell covers: 2 ** (VAE levels - 1)."""
        return 2 ** (len(self.config.vae.block_channels) - 1)

    def model_hash(self) -> str:
        """A short identity of the loaded weights' source, for manifests (not a content hash of the
        tensors): SHA-256 of the checkpoint header for a file, of the source description otherwise."""
        if self.source.get("kind") == "file":
            with open(self.source["path"], "rb") as f:
                header = f.read(min(int.from_bytes(f.read(8), "little"), 1 << 28))
            return hashlib.sha256(header).hexdigest()[:16]
        return hashlib.sha256(repr(sorted(self.source.items())).encode()).hexdigest()[:16]

    @property
    def latent_frame_s(self) -> float:
        """Seconds of audio per latent frame (0.04 for AudioLDM: 4 mel frames of 10 ms)."""
        voc = self.config.vocoder
        return math.prod(voc.upsample_rates) * self.vae_scale_factor / voc.sampling_rate

    def lengths(self, audio_length_in_s: Optional[float], allow_long: bool = False,
                batch: int = 1) -> tuple[float, int, int]:
        """(seconds, mel frames, waveform samples) for a requested length: see :func:`checks.length`."""
        return checks.length(self.config, audio_length_in_s, allow_long=allow_long, batch=batch)

    # --- CLAP audio tower (optional; see rerank.py) ---------------------------------------------------

    def set_clap_audio(self, loader: Optional[Callable[[], nn.Module]], source: Optional[str]) -> None:
        """Give the pipeline a CLAP audio tower, built by ``loader()`` on first use (None: none).
        source: "checkpoint" (the model's own, can drive variations) or "external"."""
        self._clap_audio, self._clap_audio_loader = None, loader
        self.clap_audio_source = source if loader is not None else None

    @property
    def clap_audio(self) -> Optional[nn.Module]:
        """The CLAP audio tower (:class:`~audioldm_core.htsat.HTSAT`) or None; loaded on first use, on
        the text tower's device and dtype (and moved with it by :meth:`to`)."""
        if self._clap_audio is None and self._clap_audio_loader is not None:
            self._clap_audio = self._clap_audio_loader().to(**self._clap_audio_place())
        return self._clap_audio

    def _clap_audio_place(self) -> dict:
        p = next(self.clap.parameters())
        return {"device": p.device, "dtype": p.dtype}

    def clap_score(self, audios, prompts) -> list[float]:
        """CLAP text-audio cosine similarity per audio; see :func:`audioldm_core.rerank.clap_score`."""
        from . import rerank

        return rerank.clap_score(self, audios, prompts)

    def variation(self, audio, **kwargs):
        """Generate from the CLAP audio embedding of ``audio``; see :func:`audioldm_core.rerank.variation`."""
        from . import rerank

        return rerank.variation(self, audio, **kwargs)

    # --- stages: prompt -> embeddings -> latents -> loop -> waveform ---------------------------------

    def encode_prompt(self, prompt: checks.Prompt = None, *, negative_prompt: checks.Prompt = None,
                      num_waveforms_per_prompt: int = 1, guidance_scale: float = 2.5,
                      prompt_embeds: Optional[torch.Tensor] = None,
                      negative_prompt_embeds: Optional[torch.Tensor] = None,
                      ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """CLAP conditioning for the UNet: ``(cond, uncond)``.

        cond (B*n, P): L2-normalised prompt embeddings, each repeated ``num_waveforms_per_prompt``
        times consecutively; uncond the same for the negative prompt ("" by default) when
        ``guidance_scale > 1``, else None. Given embeddings are used as they are (not re-normalised).
        """
        prompts = checks.prompt_list(prompt, prompt_embeds)
        n = checks.positive_int(num_waveforms_per_prompt, "num_waveforms_per_prompt")
        width = self.config.clap.projection_dim
        if negative_prompt_embeds is not None and negative_prompt is not None:
            raise InputError("give negative_prompt or negative_prompt_embeds, not both")
        cond = self.prompt_encoder(prompts) if prompts else checks.embeds(prompt_embeds, "prompt_embeds", width)
        uncond = None
        if checks.guidance(guidance_scale) > 1.0:
            if negative_prompt_embeds is None:
                uncond = self.prompt_encoder(checks.negative_list(negative_prompt, cond.shape[0]))
            else:
                uncond = checks.embeds(negative_prompt_embeds, "negative_prompt_embeds", width)
                if uncond.shape != cond.shape:
                    raise InputError(f"negative_prompt_embeds shape {tuple(uncond.shape)} must equal "
                                     f"prompt_embeds shape {tuple(cond.shape)}")
            uncond = uncond.to(device=self.device, dtype=self.dtype).repeat_interleave(n, dim=0)
        return cond.to(device=self.device, dtype=self.dtype).repeat_interleave(n, dim=0), uncond

    def text_encoder_idle(self) -> int:
        """Called once a run has all its prompt embeddings: releases the text encoder's clean weight
        pages when ``release_text_encoder`` is set. Returns the bytes released."""
        from .memory import release_clean_pages

        return release_clean_pages(self.clap) if self.release_text_encoder else 0

    def prepare_latents(self, batch: int, frames: int, generator: Generator = None,
                        latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unit-variance initial noise (B, C, frames/f, bins/f), drawn as diffusers draws it
        (:func:`~audioldm_core.noise.randn_tensor`). Given ``latents`` are checked and moved."""
        f = self.vae_scale_factor
        shape = (batch, self.config.unet.in_channels, frames // f, self.config.vocoder.model_in_dim // f)
        if latents is None:
            return randn_tensor(shape, generator, self.device, self.dtype)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents must have shape {shape} for this length and batch, got {got}")
        return latents.to(device=self.device, dtype=self.dtype)

    def guided_eps(self, cond: torch.Tensor, uncond: Optional[torch.Tensor], guidance_scale: float,
                   model: Optional[Callable[..., torch.Tensor]] = None) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """The model closure the samplers call, ``eps_fn(x, t) -> eps``: with ``uncond``, one UNet call
        on [uncond; cond] and ``eps_u + g * (eps_c - eps_u)`` (classifier-free guidance, Ho & Salimans 2022).
        ``model``: called instead of ``self.unet`` as ``model(x, t, class_emb)`` (the windowed UNet of
        :func:`audioldm_core.longform.windowed`)."""
        unet = self.unet if model is None else model
        if uncond is None:
            return lambda x, t: unet(x, t, cond)
        both = torch.cat([uncond, cond])

        def eps_fn(x: torch.Tensor, t: Any) -> torch.Tensor:
            eps_u, eps_c = unet(torch.cat([x, x]), t, both).chunk(2)
            return eps_u + guidance_scale * (eps_c - eps_u)

        return eps_fn

    @torch.no_grad()
    def denoise(self, prompt: checks.Prompt = None, audio_length_in_s: Optional[float] = None,
                num_inference_steps: int = 10, guidance_scale: float = 2.5, negative_prompt: checks.Prompt = None,
                num_waveforms_per_prompt: int = 1, eta: Optional[float] = None, generator: Generator = None,
                latents: Optional[torch.Tensor] = None, prompt_embeds: Optional[torch.Tensor] = None,
                negative_prompt_embeds: Optional[torch.Tensor] = None, sampler: str = "ddim",
                allow_long: bool = False, compat: str = "diffusers", window_s: Union[str, float, None] = "auto",
                overlap_s: float = OVERLAP_S, loop: bool = False) -> Iterator[DenoiseStep]:
        """The denoising loop as a generator: yields a :class:`DenoiseStep` after every model call.

        Stop iterating to stop early; ``pipe.decode(step.latents, step.num_samples)`` turns any
        step's latents into a waveform. Arguments as in :meth:`__call__`.
        """
        mode, plan = compat_mode(compat), get_sampler(sampler)
        steps = checks.positive_int(num_inference_steps, "num_inference_steps")
        eta = checks.eta(default_eta(mode) if eta is None else eta)
        n_calls = plan.num_calls(self.config.schedule, steps)
        rows = len(checks.prompt_list(prompt, prompt_embeds) or prompt_embeds)
        batch = rows * checks.positive_int(num_waveforms_per_prompt, "num_waveforms_per_prompt")
        seconds, frames, samples = self.lengths(audio_length_in_s, True, batch)
        spec = longform.resolve(seconds, self.latent_frame_s, window_s, overlap_s, loop)
        if spec is not None:
            longform.check_memory(seconds, batch)
        windows = None if spec is None else spec.plan(frames // self.vae_scale_factor)
        if windows is None or windows.trivial:
            windows = None
            self.lengths(audio_length_in_s, allow_long, batch)  # the plain path's length limit
        else:
            if loop:  # a loop's period is the whole latent: no trimming
                samples = frames * math.prod(self.config.vocoder.upsample_rates)
        cond, uncond = self.encode_prompt(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                                          num_waveforms_per_prompt=num_waveforms_per_prompt,
                                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        x = self.prepare_latents(cond.shape[0], frames, generator, latents)
        generator = first_generator(generator)  # samplers continue each stream after the noise, as diffusers
        if mode == "original":  # drawn after the initial noise, so both modes start from the same latents
            cond = original_conditioning(cond, generator, lambda: self.prompt_encoder([""]))
        self.text_encoder_idle()
        g = checks.guidance(guidance_scale)
        eps_fn = self.guided_eps(cond, uncond, g) if windows is None else \
            self.guided_eps(cond, uncond, g, longform.windowed(self.unet, windows, longform.MAX_ROWS))
        stream = plan(eps_fn, x, self.config.schedule, steps, generator=generator, eta=eta)
        # window_s=None decodes in one pass at any length ("auto" is one pass up to the switch point)
        decode_mode = "full" if window_s is None and seconds > longform.SWITCH_S else "auto"
        n_win = 1 if windows is None else windows.n
        for i, (t, x) in enumerate(checked(stream, f"step {{i}}/{n_calls} of the {sampler} sampler ({self.dtype})")):
            if mode == "original" and i == n_calls - 1:
                x = original_clip(x)
            yield DenoiseStep(index=i, num_steps=n_calls, timestep=t, latents=x, num_samples=samples, windows=n_win,
                              loop=loop, decode_mode=decode_mode)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_samples: Optional[int] = None, *, mode: str = "auto",
               loop: bool = False) -> torch.Tensor:
        """Latents (B, C, T, F) -> waveform (B, samples) float32 on the CPU, trimmed to ``num_samples``:
        divides by the VAE scaling factor, decodes the mel (B, 1, 4T, 64), runs the vocoder.

        mode: "full" (one pass of each), "tiled" (the same to float rounding, in bounded activation
        memory), "windowed" (the VAE in blended windows: bounded memory and linear time, an
        approximation) or "auto" ("full" up to ``longform.SWITCH_S`` seconds, "windowed" beyond);
        loop: the decode wraps around. See :func:`audioldm_core.longform.decode`."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise InputError(f"latents must be a (B, C, T, F) tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(device=self.device, dtype=vae_dtype) / self.config.vae.scaling_factor
        audio = longform.decode(self.vae, self.vocoder, z, mode=mode, loop=loop)
        if not torch.isfinite(audio).all():
            raise NumericalError(f"the vocoder produced NaN/Inf ({audio.dtype}); try float32")
        audio = audio.cpu().float()
        return audio if num_samples is None else audio[:, :num_samples]

    def __call__(self, prompt: checks.Prompt = None, audio_length_in_s: Optional[float] = None,
                 num_inference_steps: int = 10, guidance_scale: float = 2.5, negative_prompt: checks.Prompt = None,
                 num_waveforms_per_prompt: int = 1, eta: Optional[float] = None, generator: Generator = None,
                 latents: Optional[torch.Tensor] = None, prompt_embeds: Optional[torch.Tensor] = None,
                 negative_prompt_embeds: Optional[torch.Tensor] = None,
                 callback: Optional[Callable[[int, Any, torch.Tensor], None]] = None, callback_steps: int = 1,
                 output_type: str = "np", sampler: str = "ddim", progress: bool = True,
                 allow_long: bool = False, compat: str = "diffusers", num_candidates: int = 1,
                 window_s: Union[str, float, None] = "auto", overlap_s: float = OVERLAP_S,
                 loop: bool = False) -> AudioOutput:
        """Generate audio from text (diffusers ``AudioLDMPipeline.__call__`` semantics).

        prompt: a string or list of strings (or give ``prompt_embeds`` (B, 512) instead).
        audio_length_in_s: seconds (default 5.12); the latent length is rounded up to a multiple of
            the VAE factor and the waveform trimmed back to ``int(seconds * 16000)`` samples.
        num_inference_steps, sampler: see ``audioldm samplers`` for the names.
        guidance_scale: classifier-free guidance weight; applied only when > 1.
        negative_prompt: string or list (one per prompt); "" when guidance is on and none is given.
        num_waveforms_per_prompt: waveforms per prompt (batch = prompts x this).
        eta: DDIM noise (0 = deterministic); other samplers ignore it. None: 0.0, or 1.0 with
            ``compat="original"``.
        generator: a torch.Generator or one per waveform; same CPU generator state -> same initial
            latents as diffusers.
        latents: initial unit-variance noise (B, 8, T/4, 16) to use instead of drawing it.
        callback(step, timestep, latents): called every ``callback_steps`` steps.
        output_type: "np" (numpy) or "pt" (torch). progress: show a tqdm bar.
        allow_long: permit lengths above ``checks.MAX_SECONDS`` (120 s) on the plain path (windowed
            runs need no permission; they are refused only when memory cannot hold them).
        window_s: "auto" (default): the plain full-length path up to ``longform.SWITCH_S`` seconds,
            beyond it the UNet runs on windows of 10.24 s (the trained length) overlapping by
            ``overlap_s``, merged into one noise prediction at every step (MultiDiffusion), and the
            VAE decodes in windows; None: always the plain path (diffusers' result, at any length);
            a number: windows of that many seconds at any length (a multiple of 0.04 s). A run that
            fits in one window is the plain path, bit for bit.
        overlap_s: seconds neighbouring windows share (default 1.28; a multiple of 0.04 s).
        loop: windows wrap around the end so the audio loops without a seam; the output is the whole
            latent (``audio_length_in_s`` rounded up to 0.04 s), at least one window long.
        compat: "diffusers" (default) or "original": the original AudioLDM code's sampling rules
            (:mod:`audioldm_core.compat`: DDIM eta 1.0, its 10% unconditional swap drawn from
            ``generator`` after the initial noise, and its latent clipping).
        num_candidates: generate this many per waveform and keep the best by CLAP score (needs a
            CLAP audio tower; :func:`audioldm_core.rerank.best_of`); returns
            :class:`~audioldm_core.rerank.RankedAudioOutput`, which adds ``scores``.
        Returns :class:`AudioOutput` with ``audios`` float32 (B, samples) and ``sample_rate``.
        """
        if num_candidates != 1:
            from . import rerank

            return rerank.best_of(self, num_candidates, prompt, num_waveforms_per_prompt, output_type,
                                  audio_length_in_s=audio_length_in_s, num_inference_steps=num_inference_steps,
                                  guidance_scale=guidance_scale, negative_prompt=negative_prompt, eta=eta,
                                  generator=generator, latents=latents, prompt_embeds=prompt_embeds,
                                  negative_prompt_embeds=negative_prompt_embeds, callback=callback,
                                  callback_steps=callback_steps, sampler=sampler, progress=progress,
                                  allow_long=allow_long, compat=compat, window_s=window_s, overlap_s=overlap_s,
                                  loop=loop)
        checks.output_type(output_type)
        every = checks.callback(callback, callback_steps)
        stream = self.denoise(prompt, audio_length_in_s=audio_length_in_s, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                              num_waveforms_per_prompt=num_waveforms_per_prompt, eta=eta, generator=generator,
                              latents=latents, prompt_embeds=prompt_embeds,
                              negative_prompt_embeds=negative_prompt_embeds, sampler=sampler,
                              allow_long=allow_long, compat=compat, window_s=window_s, overlap_s=overlap_s, loop=loop)
        last = drive(stream, calls_per_step=get_sampler(sampler).calls_per_step, total_steps=num_inference_steps,
                     desc=sampler, callback=callback, callback_steps=every, progress=progress)
        how = {} if (last.decode_mode, last.loop) == ("auto", False) else {"mode": last.decode_mode, "loop": last.loop}
        return output(self.decode(last.latents, last.num_samples, **how), output_type, self.sample_rate)

    # --- zero-shot edits (audioldm_core.edit) and continuation (audioldm_core.extend) ----------------

    def extend(self, audio, prompt: str, seconds: float, **kwargs) -> AudioOutput:
        """Continue ``audio`` by ``seconds`` of generated audio; see :func:`audioldm_core.extend.extend`."""
        from .extend import extend

        return extend(self, audio, prompt, seconds, **kwargs)

    def transfer(self, audio, prompt: str, strength: float = 0.5, **kwargs) -> AudioOutput:
        """Text-guided style transfer of ``audio``; see :func:`audioldm_core.edit.transfer`."""
        from . import edit

        return edit.transfer(self, audio, prompt, strength, **kwargs)

    def inpaint(self, audio, prompt: str, start_s: float, end_s: float, **kwargs) -> AudioOutput:
        """Regenerate ``[start_s, end_s)`` of ``audio``; see :func:`audioldm_core.edit.inpaint`."""
        from . import edit

        return edit.inpaint(self, audio, prompt, start_s, end_s, **kwargs)

    def super_resolve(self, audio, prompt: str = "", cutoff_hz: Optional[float] = None, **kwargs) -> AudioOutput:
        """Regenerate the mel bands above ``cutoff_hz``; see :func:`audioldm_core.edit.super_resolve`."""
        from . import edit

        return edit.super_resolve(self, audio, prompt, cutoff_hz, **kwargs)


def load(source: Union[str, os.PathLike] = DEFAULT_MODEL, **kwargs) -> AudioLDM:
    """Shorthand for :meth:`AudioLDM.from_pretrained`."""
    return AudioLDM.from_pretrained(source, **kwargs)


__all__ = ["AudioLDM", "AudioOutput", "DenoiseStep", "DEFAULT_MODEL", "HUB_ALIASES", "load"]
