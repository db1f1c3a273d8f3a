"""Text-to-audio: prompt -> CLAP embedding -> denoising loop in latent space -> VAE -> HiFi-GAN.

``AudioLDM`` reproduces diffusers' ``AudioLDMPipeline`` argument by argument (same defaults, the same
length rounding and trimming, guidance only when ``guidance_scale > 1``, the same initial latents
for the same CPU ``torch.Generator`` state), with three differences that do not change results:
prompts are not padded to 512 tokens (the attention mask makes the embedding equal), the empty
negative prompt's embedding is cached, and a string ``negative_prompt`` applies to every prompt of a
list (diffusers raises there). ``compat="original"`` switches to the sampling behaviours of the
original AudioLDM code instead (see :meth:`AudioLDM.__call__`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .checkpoint import COMPONENTS, build_component, empty_component, load_components, load_state_strict
from .config import AudioLDMConfig, builtin_config
from .errors import InputError, NumericalError

# Short names of the public checkpoints, accepted wherever a Hub repo id is.
HUB_ALIASES = {
    "s-full": "cvssp/audioldm",
    "s-full-v2": "cvssp/audioldm-s-full-v2",
    "m-full": "cvssp/audioldm-m-full",
    "l-full": "cvssp/audioldm-l-full",
}
DEFAULT_MODEL = "cvssp/audioldm-s-full-v2"
DEFAULT_SECONDS = 5.12  # diffusers: unet sample_size (128) * VAE factor (4) * hop / rate (0.01)
MAX_SECONDS = 120.0  # longer requests need allow_long=True (memory grows linearly with length)
MB_PER_SECOND = 40  # rough peak activation memory per second of audio per waveform (fp32, decode)
TINY_SEED = 1234

Generator = Union[torch.Generator, Sequence[torch.Generator], None]

# Sampling behaviours of the original AudioLDM code (audioldm==0.1.1), applied by compat="original".
COMPAT_MODES = ("diffusers", "original")
ORIGINAL_DDIM_ETA = 1.0  # audioldm/ldm.py LatentDiffusion.generate_sample: ddim_eta=1.0
ORIGINAL_UNCONDITIONAL_PROB = 0.1  # audioldm/utils.py default_audioldm_config: cond_stage_config unconditional_prob
ORIGINAL_CLIP_TRIGGER = 100.0  # audioldm/ldm.py generate_sample: if torch.max(torch.abs(samples)) > 1e2
ORIGINAL_CLIP_BOUND = 10.0  # ... samples = torch.clip(samples, min=-10, max=10)


@dataclass
class AudioOutput:
    """Generated audio: ``audios`` float32 (B, samples) as numpy or torch, at ``sample_rate`` Hz."""

    audios: Union[np.ndarray, torch.Tensor]
    sample_rate: int = 16000


@dataclass
class DenoiseStep:
    """One step of the denoising loop, as yielded by :meth:`AudioLDM.denoise`.

    index: 0-based step number; num_steps: total steps; timestep: the sampler's timestep;
    latents: (B, C, T, F) current latents (scaled, as the UNet sees them before decoding);
    num_samples: the waveform length :meth:`AudioLDM.decode` trims to.
    """

    index: int
    num_steps: int
    timestep: Any
    latents: torch.Tensor
    num_samples: int


def _tokenizer_from_dict(data: dict, max_len: int):
    from .tokenizer import Tokenizer

    return Tokenizer.from_dict(data, model_max_length=max_len)


def _seeded_init_(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights of sensible scale for the built-in ``tiny`` model.

    Weights ~ N(0, 1/fan_in); vectors (biases, norm shifts) ~ N(0, 0.05^2); norm scales 1 + N(0, 0.1^2).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.ndim >= 2:
                fan_in = t[0].numel() if t.ndim > 2 or "embed" not in name else 1
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(max(fan_in, 1)))
            elif name.endswith("scale") or "norm" in name.lower() and name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.05 * torch.randn(t.shape, generator=g))
    return module


class AudioLDM:
    """The AudioLDM text-to-audio pipeline.

    Build it with :meth:`from_pretrained`. Components are plain modules (``clap``, ``unet``, ``vae``,
    ``vocoder``) plus ``tokenizer`` and ``config``; researchers may call them directly.

    ``release_text_encoder`` (default True): once a generation or edit has encoded its prompts, the
    text encoder's file-mapped weight pages are handed back to the OS
    (:func:`audioldm_core.memory.release_clean_pages`) for the rest of the run; the next prompt maps
    them again from the page cache. Values never change (pages written in place are kept); it lowers
    the peak RSS of a full-size generation by the text encoder's ~345 MiB for a few tens of ms of
    page faults per call. Set it to False to keep them resident.
    """

    def __init__(self, config: AudioLDMConfig, tokenizer, clap: nn.Module, unet: nn.Module, vae: nn.Module,
                 vocoder: nn.Module, source: Optional[dict] = None):
        from .clap import PromptEncoder

        self.config = config
        self.tokenizer = tokenizer
        self.clap, self.unet, self.vae, self.vocoder = clap, unet, vae, vocoder
        self.source = dict(source or {})
        self.prompt_encoder = PromptEncoder(tokenizer, clap)
        self.release_text_encoder = True

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: Union[str, os.PathLike] = DEFAULT_MODEL, *, device: Any = "cpu",
                        dtype: torch.dtype = torch.float32, revision: Optional[str] = None,
                        variant: Optional[str] = None, compile: bool = False, backend: str = "torch",
                        backend_options: Optional[dict] = None) -> "AudioLDM":
        """Load a model from any of:

        - a converted ``.safetensors`` file written by ``audioldm-convert``;
        - a cvssp-layout folder (converted in memory by the same code as the CLI);
        - a Hugging Face repo id such as ``cvssp/audioldm-s-full-v2`` (downloaded and cached by
          huggingface_hub; offline and not cached raises with instructions), or one of the short
          names ``s-full``, ``s-full-v2``, ``m-full``, ``l-full`` for the public repos;
        - ``"tiny"``: a few-MB model with seeded random weights for demos and tests. Its output is
          noise, not sound: it exercises every code path, nothing more.

        compile: run :meth:`compile` on the result (opt-in; see there for its one-time cost).
        backend: "torch" (default) or "onnxruntime": the components run as ONNX Runtime sessions of
            graphs exported from these modules and cached on disk (float32, CPU; extra ``[onnx]``);
            ``backend_options`` go to :func:`audioldm_core.onnx_backend.apply` (``cache_dir``, ``threads``).
        """
        from . import onnx_backend

        onnx_backend.check_backend(backend, device=device, dtype=dtype, compile=compile)
        pipe = cls._load(source, device=device, dtype=dtype, revision=revision, variant=variant)
        pipe._warn_slow_dtype()
        if backend == "onnxruntime":
            return onnx_backend.apply(pipe, **(backend_options or {}))
        return pipe.compile() if compile else pipe

    @classmethod
    def _load(cls, source: Union[str, os.PathLike], *, device: Any, dtype: torch.dtype, revision: Optional[str],
              variant: Optional[str]) -> "AudioLDM":
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InputError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
        source = str(source)
        if source == "tiny":
            return cls._tiny(device, dtype)
        path = Path(source).expanduser()
        if path.is_file():
            info, modules = load_components(path, device=device, dtype=lambda c: component_dtype(c, dtype))
            tok = _tokenizer_from_dict(info.tokenizer, info.config.model_max_length)
            src = {"kind": "file", "path": str(path.resolve()), "origin": info.source}
            return cls(info.config, tok, source=src, **modules)
        from convert.core import convert_source  # the converter ships in the same distribution

        repo = HUB_ALIASES.get(source, source)
        conv = convert_source(repo, revision=revision, variant=variant, hash_files=False)
        modules = {}
        for comp in COMPONENTS:
            modules[comp] = load_state_strict(empty_component(comp, conv.config), conv.tensors.pop(comp), comp,
                                              device=device, dtype=component_dtype(comp, dtype))
        tok = _tokenizer_from_dict(conv.tokenizer, conv.config.model_max_length)
        return cls(conv.config, tok, source=conv.source, **modules)

    @classmethod
    def _tiny(cls, device: Any, dtype: torch.dtype) -> "AudioLDM":
        import json
        from importlib import resources

        config = builtin_config("tiny")
        data = json.loads(resources.files("audioldm_core.configs").joinpath("tiny-tokenizer.json").read_text())
        modules = {}
        for i, comp in enumerate(COMPONENTS):
            m = _seeded_init_(build_component(comp, config), TINY_SEED + i)
            modules[comp] = m.to(device=device, dtype=component_dtype(comp, dtype)).eval().requires_grad_(False)
        tok = _tokenizer_from_dict(data, config.model_max_length)
        return cls(config, tok, source={"kind": "builtin", "name": "tiny", "seed": TINY_SEED}, **modules)

    def compile(self, **options: Any) -> "AudioLDM":
        """Compile the UNet's forward with ``torch.compile`` (in place: ``self.unet`` stays the same
        module, with the same state dict); returns self. ``options`` go to ``torch.compile``.

        The UNet runs once per sampler step, so it is the only component worth compiling. The first
        call at each new latent shape pays the compilation; the whole forward is one graph, reused by
        later calls. On the CPU, inductor's layout optimisation (channels-last convolutions) is off
        unless ``options={"layout_optimization": True}`` (or a ``mode``) is given: on the project's
        2-core machine it made the compiled s-full-v2 step slower than eager (0.84 s against 0.68 s),
        and without it the compiled step was 0.78 s against 0.81 s eager in one process.
        Measured there (``python benchmarks/run.py --compile``, s-full-v2, 5.12 s; README "Speed" has
        the latest run): first call 10-20 s with a warm inductor cache, about 100 s cold, then within a
        few percent of eager, whose convolutions and matmuls already run in oneDNN/BLAS kernels near
        that CPU's fp32 peak. It is offered for GPUs and for CPUs where a measurement says otherwise.
        Outputs match eager to float rounding. Needs a C++ compiler on CPU, as inductor does.
        """
        if "mode" not in options and next(self.unet.parameters()).device.type == "cpu":
            inductor = dict(options.pop("options", None) or {})
            inductor.setdefault("layout_optimization", False)
            options["options"] = inductor
        self.unet.compile(**options)
        return self

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "AudioLDM":
        """Move every component to ``device`` and/or cast it to ``dtype``; returns self.

        With ``dtype=torch.float16`` the VAE and the vocoder stay in float32 (their activations
        overflow fp16 on real checkpoints: the NaN/silence reports against diffusers' pipeline), so
        only the text encoder and the UNet run in half precision. bfloat16 has float32's range and
        is applied to every component."""
        for comp in COMPONENTS:
            getattr(self, comp).to(device=device, dtype=component_dtype(comp, dtype) if dtype else None)
        self._warn_slow_dtype()
        return self

    def _warn_slow_dtype(self) -> None:
        """Warn when the UNet would run in float16 on the CPU: PyTorch has no fast fp16 CPU kernels for
        it (measured: 65 s per s-full-v2 step against 1.1 s in float32, one thread)."""
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

    def model_hash(self) -> str:
        """A short identity of the loaded weights' source, for manifests (not a content hash of the
        tensors): SHA-256 of the checkpoint header for a file, of the source description otherwise."""
        src = self.source
        if src.get("kind") == "file":
            with open(src["path"], "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = f.read(min(n, 1 << 28))
            return hashlib.sha256(header).hexdigest()[:16]
        return hashlib.sha256(repr(sorted(src.items())).encode()).hexdigest()[:16]

    # --- geometry ---------------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """How many mel frames (and bins) one latent cell covers: 2 ** (VAE levels - 1)."""
        return 2 ** (len(self.config.vae.block_channels) - 1)

    def lengths(self, audio_length_in_s: Optional[float], allow_long: bool = False,
                batch: int = 1) -> tuple[float, int, int]:
        """(seconds, mel frames, waveform samples) for a requested length, as diffusers computes them:
        frames = int(seconds / hop_seconds), rounded up to a multiple of the VAE factor; samples =
        int(seconds * rate). Lengths above :data:`MAX_SECONDS` are refused unless ``allow_long``."""
        voc = self.config.vocoder
        hop_seconds = float(np.prod(voc.upsample_rates)) / voc.sampling_rate
        if audio_length_in_s is None:
            audio_length_in_s = DEFAULT_SECONDS
        if isinstance(audio_length_in_s, bool) or not isinstance(audio_length_in_s, (int, float)):
            raise InputError(f"audio_length_in_s must be a number of seconds, got {audio_length_in_s!r}")
        minimum = hop_seconds * self.vae_scale_factor
        if not math.isfinite(audio_length_in_s) or audio_length_in_s < minimum:
            raise InputError(f"audio_length_in_s must be at least {minimum:g} s, got {audio_length_in_s}")
        if audio_length_in_s > MAX_SECONDS and not allow_long:
            gb = MB_PER_SECOND * audio_length_in_s * batch / 1024
            raise InputError(f"audio_length_in_s={audio_length_in_s:g} s is above the {MAX_SECONDS:g} s limit "
                             f"(estimated extra memory about {gb:.1f} GB for {batch} waveform(s), plus the "
                             f"weights); pass allow_long=True (CLI: --allow-long) to run it anyway")
        frames = int(audio_length_in_s / hop_seconds)
        samples = int(audio_length_in_s * voc.sampling_rate)
        if frames % self.vae_scale_factor:
            frames = int(np.ceil(frames / self.vae_scale_factor)) * self.vae_scale_factor
        return float(audio_length_in_s), frames, samples

    # --- text ---------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: Union[str, Sequence[str], None] = None, *,
                      negative_prompt: Union[str, Sequence[str], None] = None,
                      num_waveforms_per_prompt: int = 1, guidance_scale: float = 2.5,
                      prompt_embeds: Optional[torch.Tensor] = None,
                      negative_prompt_embeds: Optional[torch.Tensor] = None,
                      ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """CLAP conditioning for the UNet.

        Returns ``(cond, uncond)``: cond (B*n, P) L2-normalised prompt embeddings, each repeated
        ``num_waveforms_per_prompt`` times consecutively; uncond the same for the negative prompt
        ("" by default) when ``guidance_scale > 1``, else None. Given ``prompt_embeds`` are used as
        they are (not re-normalised), as diffusers does.
        """
        prompts = self._prompt_list(prompt, prompt_embeds)
        n = _positive_int(num_waveforms_per_prompt, "num_waveforms_per_prompt")
        dev, dt = self.device, self.dtype
        if prompt_embeds is None:
            cond = self.prompt_encoder(prompts)
        else:
            cond = self._check_embeds(prompt_embeds, "prompt_embeds")
        batch = cond.shape[0]
        uncond = None
        if _guidance(guidance_scale) > 1.0:
            if negative_prompt_embeds is not None:
                if negative_prompt is not None:
                    raise InputError("give negative_prompt or negative_prompt_embeds, not both")
                uncond = self._check_embeds(negative_prompt_embeds, "negative_prompt_embeds")
                if uncond.shape != cond.shape:
                    raise InputError(f"negative_prompt_embeds shape {tuple(uncond.shape)} must equal "
                                     f"prompt_embeds shape {tuple(cond.shape)}")
            else:
                negs = self._negative_list(negative_prompt, batch)
                uncond = self.prompt_encoder(negs)
            uncond = uncond.to(device=dev, dtype=dt).repeat_interleave(n, dim=0)
        elif negative_prompt_embeds is not None and negative_prompt is not None:
            raise InputError("give negative_prompt or negative_prompt_embeds, not both")
        cond = cond.to(device=dev, dtype=dt).repeat_interleave(n, dim=0)
        return cond, uncond

    def text_encoder_idle(self) -> int:
        """Called once a run has all its prompt embeddings: releases the text encoder's clean weight
        pages when ``release_text_encoder`` is set (see the class docstring). Returns the bytes released."""
        from .memory import release_clean_pages

        return release_clean_pages(self.clap) if self.release_text_encoder else 0

    def _prompt_list(self, prompt, prompt_embeds) -> Optional[list[str]]:
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

    def _negative_list(self, negative_prompt, batch: int) -> list[str]:
        if negative_prompt is None:
            return [""] * batch
        if isinstance(negative_prompt, str):
            return [negative_prompt] * batch
        negs = self._prompt_list(list(negative_prompt) if isinstance(negative_prompt, (list, tuple))
                                 else negative_prompt, None)
        if len(negs) != batch:
            raise InputError(f"negative_prompt has {len(negs)} entries but there are {batch} prompts; "
                             f"give one per prompt, or a single string for all")
        return negs

    def _check_embeds(self, embeds, name: str) -> torch.Tensor:
        width = self.config.clap.projection_dim
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[1] != width \
                or embeds.shape[0] == 0:
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise InputError(f"{name} must be a (B, {width}) tensor, got {shape}")
        if not torch.isfinite(embeds).all():
            raise InputError(f"{name} contains NaN or Inf")
        return embeds

    # --- latents ------------------------------------------------------------------------------------

    def prepare_latents(self, batch: int, frames: int, generator: Generator = None,
                        latents: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unit-variance initial noise (B, C, frames/f, bins/f), drawn exactly as diffusers'
        ``randn_tensor`` draws it: on the generator's device (CPU generators draw on the CPU, then
        move), one draw per item for a list of generators. Given ``latents`` are checked and moved."""
        f = self.vae_scale_factor
        shape = (batch, self.config.unet.in_channels, frames // f, self.config.vocoder.model_in_dim // f)
        dev, dt = self.device, self.dtype
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise InputError(f"latents must have shape {shape} for this length and batch, got {got}")
            return latents.to(device=dev, dtype=dt)
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise InputError(f"got {len(generator)} generators for a batch of {batch} waveforms "
                                 f"(prompts x num_waveforms_per_prompt); give one per waveform or a single one")
            if len(generator) == 1:
                generator = generator[0]
        if isinstance(generator, (list, tuple)):
            gdev = generator[0].device
            draws = [torch.randn((1,) + shape[1:], generator=g, device=gdev, dtype=dt) for g in generator]
            return torch.cat(draws).to(dev)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
        gdev = generator.device if generator is not None else dev
        return torch.randn(shape, generator=generator, device=gdev, dtype=dt).to(dev)

    def guided_eps(self, cond: torch.Tensor, uncond: Optional[torch.Tensor],
                   guidance_scale: float) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        """The model closure the samplers call: ``eps_fn(x, t) -> eps``.

        With ``uncond`` it runs the UNet once on the batch [uncond; cond] and returns
        ``eps_u + g * (eps_c - eps_u)`` (classifier-free guidance, Ho & Salimans 2022).
        """
        unet = self.unet
        if uncond is None:
            return lambda x, t: unet(x, t, cond)
        both = torch.cat([uncond, cond])

        def eps_fn(x: torch.Tensor, t: Any) -> torch.Tensor:
            eps_u, eps_c = unet(torch.cat([x, x]), t, both).chunk(2)
            return eps_u + guidance_scale * (eps_c - eps_u)

        return eps_fn

    # --- the loop -----------------------------------------------------------------------------------

    @torch.no_grad()
    def denoise(self, prompt: Union[str, Sequence[str], None] = None, audio_length_in_s: Optional[float] = None,
                num_inference_steps: int = 10, guidance_scale: float = 2.5,
                negative_prompt: Union[str, Sequence[str], None] = None, num_waveforms_per_prompt: int = 1,
                eta: Optional[float] = None, generator: Generator = None, latents: Optional[torch.Tensor] = None,
                prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
                sampler: str = "ddim", allow_long: bool = False, compat: str = "diffusers") -> Iterator[DenoiseStep]:
        """The denoising loop as a generator: yields a :class:`DenoiseStep` after every step.

        Stop iterating to stop early; ``pipe.decode(step.latents, step.num_samples)`` turns any
        step's latents into a waveform. Arguments as in :meth:`__call__`; with ``compat="original"``
        the last step's latents are already clipped by the original's rule (:func:`original_clip`).
        """
        from .samplers import get_sampler, timesteps_for

        mode = _compat(compat)
        run = get_sampler(sampler)
        steps = _positive_int(num_inference_steps, "num_inference_steps")
        g = _guidance(guidance_scale)
        if eta is None:
            eta = ORIGINAL_DDIM_ETA if mode == "original" else 0.0
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
            raise InputError(f"eta must be a number >= 0 (or None: 0.0, or 1.0 with compat='original'), got {eta!r}")
        n_prompts = len(prompt) if isinstance(prompt, (list, tuple)) else \
            (prompt_embeds.shape[0] if isinstance(prompt_embeds, torch.Tensor) and prompt_embeds.ndim else 1)
        n_wave = num_waveforms_per_prompt if isinstance(num_waveforms_per_prompt, int) else 1
        _, frames, samples = self.lengths(audio_length_in_s, allow_long, n_prompts * n_wave)
        cond, uncond = self.encode_prompt(prompt, negative_prompt=negative_prompt,
                                          num_waveforms_per_prompt=num_waveforms_per_prompt, guidance_scale=g,
                                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        n_evals = len(timesteps_for(sampler, self.config.schedule, steps))
        x = self.prepare_latents(cond.shape[0], frames, generator, latents)
        # the samplers continue each generator's stream after the initial noise, as diffusers does
        if isinstance(generator, (list, tuple)) and len(generator) == 1:
            generator = generator[0]
        if mode == "original":  # drawn after the initial noise, so both modes start from the same latents
            swap = original_swap_mask(cond.shape[0], generator).to(cond.device)
            if swap.any():
                empty = self.prompt_encoder([""]).to(device=cond.device, dtype=cond.dtype)
                cond = torch.where(swap[:, None], empty, cond)
        self.text_encoder_idle()
        eps_fn = self.guided_eps(cond, uncond, g)
        opts = {"eta": eta} if sampler == "ddim" else {}
        stream = run(eps_fn, x, self.config.schedule, steps, generator=generator, **opts)
        for i, (t, x) in enumerate(stream):
            if not torch.isfinite(x).all():
                raise NumericalError(f"latents became NaN/Inf at step {i + 1}/{n_evals} (t={_scalar(t)}) of the "
                                     f"{sampler} sampler in the UNet ({self.dtype}); try float32")
            if mode == "original" and i == n_evals - 1:
                x = original_clip(x)
            yield DenoiseStep(index=i, num_steps=n_evals, timestep=t, latents=x, num_samples=samples)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_samples: Optional[int] = None) -> torch.Tensor:
        """Latents (B, C, T, F) -> waveform (B, samples) float32 on the CPU, trimmed to ``num_samples``.

        Divides by the VAE scaling factor, decodes the mel (B, 1, 4T, 64), and runs the vocoder.
        """
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise InputError(f"latents must be a (B, C, T, F) tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(device=self.device, dtype=vae_dtype) / self.config.vae.scaling_factor
        mel = self.vae.decode(z)
        if not torch.isfinite(mel).all():
            raise NumericalError(f"the VAE decoder produced NaN/Inf ({vae_dtype}); try float32")
        voc_dtype = next(self.vocoder.parameters()).dtype
        audio = self.vocoder(mel.squeeze(1).to(voc_dtype))
        if not torch.isfinite(audio).all():
            raise NumericalError(f"the vocoder produced NaN/Inf ({voc_dtype}); try float32")
        audio = audio.cpu().float()
        return audio if num_samples is None else audio[:, :num_samples]

    def __call__(self, prompt: Union[str, Sequence[str], None] = None, audio_length_in_s: Optional[float] = None,
                 num_inference_steps: int = 10, guidance_scale: float = 2.5,
                 negative_prompt: Union[str, Sequence[str], None] = None, num_waveforms_per_prompt: int = 1,
                 eta: Optional[float] = None, generator: Generator = None, latents: Optional[torch.Tensor] = None,
                 prompt_embeds: Optional[torch.Tensor] = None, negative_prompt_embeds: Optional[torch.Tensor] = None,
                 callback: Optional[Callable[[int, Any, torch.Tensor], None]] = None, callback_steps: int = 1,
                 output_type: str = "np", sampler: str = "ddim", progress: bool = True,
                 allow_long: bool = False, compat: str = "diffusers") -> AudioOutput:
        """Generate audio from text (diffusers ``AudioLDMPipeline.__call__`` semantics).

        prompt: a string or list of strings (or give ``prompt_embeds`` (B, 512) instead).
        audio_length_in_s: seconds (default 5.12); the latent length is rounded up to a multiple of
            the VAE factor and the waveform trimmed back to ``int(seconds * 16000)`` samples.
        num_inference_steps, sampler: see ``audioldm samplers`` for the names.
        guidance_scale: classifier-free guidance weight; applied only when > 1.
        negative_prompt: string or list (one per prompt); "" when guidance is on and none is given.
        num_waveforms_per_prompt: waveforms per prompt (batch = prompts x this).
        eta: DDIM noise (0 = deterministic); other samplers ignore it. None (default): 0.0, or 1.0
            with ``compat="original"``.
        generator: a torch.Generator or one per waveform; same CPU generator state -> same initial
            latents as diffusers.
        latents: initial unit-variance noise (B, 8, T/4, 16) to use instead of drawing it.
        callback(step, timestep, latents): called every ``callback_steps`` steps.
        output_type: "np" (numpy) or "pt" (torch). progress: show a tqdm bar.
        allow_long: permit lengths above ``MAX_SECONDS`` (120 s).
        compat: "diffusers" (default: diffusers' sampling) or "original": the original AudioLDM
            code's sampling, which changes results in three ways: DDIM ``eta`` defaults to 1.0; each
            waveform's prompt embedding is replaced by the empty prompt's with probability 0.1 (the
            original's CLAP conditioner keeps its training dropout at inference; here drawn from
            ``generator``, after the initial noise, so a seeded generator is reproducible); and if any
            final latent of the batch exceeds 100 in magnitude, all are clipped to [-10, 10] before
            decoding. The original's ranking of 3 candidates by CLAP audio similarity is not
            reproduced (no converted checkpoint has the CLAP audio branch).
        Returns :class:`AudioOutput` with ``audios`` float32 (B, samples) and ``sample_rate``.
        """
        if output_type not in ("np", "pt"):
            raise InputError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        every = _positive_int(callback_steps, "callback_steps")
        if callback is not None and not callable(callback):
            raise InputError("callback must be callable as callback(step, timestep, latents)")
        stream = self.denoise(prompt, audio_length_in_s, num_inference_steps, guidance_scale, negative_prompt,
                              num_waveforms_per_prompt, eta, generator, latents, prompt_embeds,
                              negative_prompt_embeds, sampler, allow_long, compat)
        from .samplers import evals_per_step

        order = evals_per_step(sampler)
        bar = None
        step = None
        try:
            for step in stream:
                if bar is None and progress:  # created after the first step: bad input never shows a bar
                    from tqdm.auto import tqdm

                    bar = tqdm(total=num_inference_steps, desc=f"{sampler}", unit="step", leave=False)
                # as diffusers: a step is complete every `order` model evaluations (Heun: 2)
                if step.index == step.num_steps - 1 or (step.index + 1) % order == 0:
                    if bar is not None:
                        bar.update(1)
                    if callback is not None and step.index % every == 0:
                        callback(step.index // order, step.timestep, step.latents)
        finally:
            if bar is not None:
                bar.close()
        audio = self.decode(step.latents, step.num_samples)
        return AudioOutput(audios=audio.numpy() if output_type == "np" else audio, sample_rate=self.sample_rate)

    def transfer(self, audio, prompt: str, strength: float = 0.5, **kwargs) -> AudioOutput:
        """Text-guided style transfer of ``audio`` (a path or 16 kHz samples); see
        :func:`audioldm_core.edit.transfer` for the arguments."""
        from . import edit

        return edit.transfer(self, audio, prompt, strength, **kwargs)

    def inpaint(self, audio, prompt: str, start_s: float, end_s: float, **kwargs) -> AudioOutput:
        """Regenerate ``[start_s, end_s)`` of ``audio`` from ``prompt``; see :func:`audioldm_core.edit.inpaint`."""
        from . import edit

        return edit.inpaint(self, audio, prompt, start_s, end_s, **kwargs)

    def super_resolve(self, audio, prompt: str = "", cutoff_hz: Optional[float] = None, **kwargs) -> AudioOutput:
        """Regenerate the mel bands above ``cutoff_hz``; see :func:`audioldm_core.edit.super_resolve`."""
        from . import edit

        return edit.super_resolve(self, audio, prompt, cutoff_hz, **kwargs)


def component_dtype(comp: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a component runs in for a requested pipeline dtype: float16 keeps the VAE and the
    vocoder in float32 (upcast), every other choice applies to all components."""
    return torch.float32 if dtype == torch.float16 and comp in ("vae", "vocoder") else dtype


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _guidance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"guidance_scale must be a finite number, got {value!r}")
    return float(value)


def _compat(value: Any) -> str:
    if not isinstance(value, str) or value not in COMPAT_MODES:
        raise InputError(f"compat must be one of {', '.join(repr(m) for m in COMPAT_MODES)}, got {value!r}")
    return value


def original_swap_mask(batch: int, generator: Generator = None,
                       probability: float = ORIGINAL_UNCONDITIONAL_PROB) -> torch.Tensor:
    """Which conditioning rows the original AudioLDM replaces by the empty prompt's embedding.

    The original's conditioner swaps each row independently when ``u < probability``, u ~ U[0, 1)
    (audioldm/clap/encoders.py CLAPAudioEmbeddingClassifierFreev2.forward / make_decision, with
    torch's global RNG). Here u comes from ``generator``: ``batch`` draws from a single generator,
    one from ``generator[i]`` for row i of a list, torch's global RNG for None.
    Returns (batch,) bool on the generator's device.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise InputError(f"got {len(generator)} generators for a batch of {batch}; "
                             f"give one per row or a single one")
        u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generator])
    else:
        u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return u < probability


def original_clip(latents: torch.Tensor) -> torch.Tensor:
    """The original's guard before decoding: latents (B, C, T, F) -> same shape; if any value of the
    whole batch exceeds ``ORIGINAL_CLIP_TRIGGER`` (100) in magnitude, every value is clipped to
    [-10, 10], else the latents are returned unchanged (audioldm/ldm.py LatentDiffusion.generate_sample)."""
    if latents.abs().max() > ORIGINAL_CLIP_TRIGGER:
        return latents.clamp(-ORIGINAL_CLIP_BOUND, ORIGINAL_CLIP_BOUND)
    return latents


def _scalar(t: Any) -> Any:
    return t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t


def load(source: Union[str, os.PathLike] = DEFAULT_MODEL, **kwargs) -> AudioLDM:
    """Shorthand for :meth:`AudioLDM.from_pretrained`."""
    return AudioLDM.from_pretrained(source, **kwargs)


__all__ = ["AudioLDM", "AudioOutput", "COMPAT_MODES", "DenoiseStep", "DEFAULT_MODEL", "HUB_ALIASES", "MAX_SECONDS",
           "load", "original_clip", "original_swap_mask"]
