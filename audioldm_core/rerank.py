"""What the CLAP audio tower adds to the pipeline, built on its public API: CLAP scores,
best-of-N generation (the original AudioLDM's candidate re-ranking) and audio-conditioned
variations.

The UNet of AudioLDM is trained on CLAP *audio* embeddings and sampled with CLAP *text* embeddings
of the same space (Liu et al. 2023, sec. 3). So:

- :func:`clap_score`: cosine similarity between a waveform's CLAP audio embedding and a prompt's
  CLAP text embedding (the CLAP-score metric of text-to-audio evaluation).
- :func:`best_of`: N candidates per requested waveform, keeping the best-scoring ones
  (``audioldm/ldm.py`` ``generate_sample`` with ``n_candidate_gen_per_text``), deterministically:
  no random swap of the scoring embeddings for the empty prompt's (the original's conditioner keeps
  its training dropout there).
- :func:`variation`: the audio embedding replaces the text embedding; the unconditional embedding
  stays the empty prompt's (``audioldm/pipeline.py`` ``text_to_audio`` with
  ``original_audio_file_path``). Only the tower from the same checkpoint as the UNet
  (``pipe.clap_audio_source == "checkpoint"``) lives in the space the UNet was trained on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .compat import compat_mode, original_audio_prompt
from .errors import InputError

AudioLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]

NO_TOWER = ("this model has no CLAP audio tower loaded: convert an original AudioLDM .ckpt with "
            "audioldm-convert (it keeps the tower), or attach a CLAP file with "
            "AudioLDM.from_pretrained(model, clap='clap_audio.safetensors') (from audioldm-convert "
            "laion/clap-htsat-unfused)")


@dataclass
class RankedAudioOutput:
    """Generated audio with CLAP scores: ``audios`` (B, samples), ``scores`` (B,) cosine similarity
    of each kept waveform to its prompt, ``candidates`` per kept waveform."""

    audios: Union[np.ndarray, torch.Tensor]
    sample_rate: int = 16000
    scores: list = field(default_factory=list)
    candidates: int = 1


def attach(pipe, path: Union[str, os.PathLike], source: str = "external") -> None:
    """Attach a CLAP audio file to ``pipe``, loaded on first use. Its projection width must equal
    the text tower's (checked now, from the file header). ``source``: "external" (another CLAP
    model: scores and re-ranking only) or "checkpoint" (the model's own tower)."""
    from .clap_file import load_clap_audio, read_clap_audio_config

    cfg = read_clap_audio_config(path)
    want = pipe.config.clap.projection_dim
    if cfg.projection_dim != want:
        raise InputError(f"the CLAP file {path} projects to {cfg.projection_dim} dimensions but this model's CLAP "
                         f"space has {want}; use a CLAP model with a {want}-wide projection")
    pipe.set_clap_audio(lambda: load_clap_audio(path, device=pipe.device, dtype=torch.float32), source)


def attach_own(pipe) -> None:
    """Attach the model file's own ``clap_audio`` component, if it has one (header read only)."""
    from .clap_file import has_clap_audio

    path = pipe.source.get("path") if pipe.source.get("kind") == "file" else None
    if path is not None and has_clap_audio(path):
        attach(pipe, path, source="checkpoint")


def tower(pipe) -> torch.nn.Module:
    """``pipe.clap_audio`` or one clear error saying how to get one."""
    t = getattr(pipe, "clap_audio", None)
    if t is None:
        raise InputError(NO_TOWER)
    return t


def _waveform(audio: AudioLike, i: int) -> torch.Tensor:
    if isinstance(audio, (str, os.PathLike)):
        from .audio import load_audio

        return torch.from_numpy(load_audio(audio)[0])
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        return torch.as_tensor(audio).float().reshape(-1) if np.ndim(audio) <= 1 or audio.shape[0] == 1 \
            else _bad(i, audio)
    raise InputError(f"audio {i} must be a path or a 1-D array of 16 kHz samples, got {type(audio).__name__}")


def _bad(i: int, audio: Any):
    raise InputError(f"audio {i} must be mono (samples,) at 16 kHz; got shape {tuple(audio.shape)}")


@torch.no_grad()
def audio_embeds(pipe, audios: Union[AudioLike, Sequence[AudioLike]]) -> torch.Tensor:
    """Waveforms (paths or 16 kHz arrays) -> (B, 512) unit-norm CLAP audio embeddings."""
    from .clap_frontend import clap_mel

    t = tower(pipe)
    items = [audios] if isinstance(audios, (str, os.PathLike)) or \
        (isinstance(audios, (np.ndarray, torch.Tensor)) and np.ndim(audios) == 1) else list(audios)
    mel = clap_mel([_waveform(a, i) for i, a in enumerate(items)])
    p = next(t.parameters())
    return t(mel.to(device=p.device, dtype=p.dtype)).float()


@torch.no_grad()
def clap_score(pipe, audios, prompts: Union[str, Sequence[str]]) -> list[float]:
    """Cosine similarity of each audio's CLAP audio embedding with its prompt's (one prompt for
    all, or one per audio)."""
    a = audio_embeds(pipe, audios)
    prompts = [prompts] * a.shape[0] if isinstance(prompts, str) else list(prompts)
    if len(prompts) != a.shape[0]:
        raise InputError(f"{a.shape[0]} audio(s) but {len(prompts)} prompt(s): give one prompt, or one per audio")
    t = pipe.prompt_encoder(prompts).float().to(a.device)
    return F.cosine_similarity(a, t, dim=-1).tolist()


def select(scores: torch.Tensor, n_prompts: int, n_keep: int, n_candidates: int) -> list[int]:
    """Indices to keep from a batch laid out prompt-major (prompt i's ``n_keep * n_candidates``
    waveforms consecutive, as ``pipe.encode_prompt`` repeats them): per prompt the ``n_keep``
    best scores, best first. scores (n_prompts * n_keep * n_candidates,)."""
    per = n_keep * n_candidates
    out = []
    for i in range(n_prompts):
        order = torch.argsort(scores[i * per:(i + 1) * per], descending=True, stable=True)[:n_keep]
        out += [i * per + int(j) for j in order]
    return out


def best_of(pipe, num_candidates: int, prompt=None, num_waveforms_per_prompt: int = 1, output_type: str = "np",
            **kwargs) -> RankedAudioOutput:
    """Generate ``num_candidates`` per requested waveform and keep the best by CLAP score; other
    arguments as ``pipe(...)`` (prompts only, not ``prompt_embeds``: scoring needs the text)."""
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise InputError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
    if isinstance(num_waveforms_per_prompt, bool) or not isinstance(num_waveforms_per_prompt, int) \
            or num_waveforms_per_prompt < 1:
        raise InputError(f"num_waveforms_per_prompt must be an integer >= 1, got {num_waveforms_per_prompt!r}")
    if prompt is None or kwargs.get("prompt_embeds") is not None:
        raise InputError("num_candidates needs text prompts (CLAP ranks candidates against the prompt's text)")
    tower(pipe)  # before any sampling
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    out = pipe(prompt=prompts, num_waveforms_per_prompt=num_waveforms_per_prompt * num_candidates,
               output_type="pt", **kwargs)
    per = num_waveforms_per_prompt * num_candidates
    scores = torch.tensor(clap_score(pipe, list(out.audios), [p for p in prompts for _ in range(per)]))
    keep = select(scores, len(prompts), num_waveforms_per_prompt, num_candidates)
    audios = out.audios[keep]
    return RankedAudioOutput(audios=audios.numpy() if output_type == "np" else audios, sample_rate=out.sample_rate,
                             scores=[float(scores[k]) for k in keep], candidates=num_candidates)


def mix(embeds: torch.Tensor, weights: Optional[Sequence[float]]) -> torch.Tensor:
    """(K, D) unit embeddings and K non-negative weights (not all zero; None = equal) -> (D,) the
    re-normalised weighted sum."""
    k = embeds.shape[0]
    if weights is None:
        weights = [1.0] * k
    w = list(weights)
    if len(w) != k:
        raise InputError(f"{len(w)} weight(s) for {k} clip(s): give one weight per clip")
    if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not np.isfinite(x) or x < 0 for x in w):
        raise InputError(f"weights must be finite numbers >= 0, got {w}")
    if sum(w) == 0:
        raise InputError("weights are all zero; at least one must be positive")
    wt = torch.tensor(w, dtype=embeds.dtype, device=embeds.device)
    return F.normalize((wt[:, None] * embeds).sum(0), dim=-1)


def variation(pipe, audio, *, weights: Optional[Sequence[float]] = None, prompt: Optional[str] = None,
              text_weight: float = 0.5, num_waveforms: int = 1, **kwargs) -> Any:
    """Generate from the CLAP audio embedding of ``audio`` (a path or 16 kHz array, or a list
    mixed by ``weights``); with ``prompt``, the text embedding is mixed in at ``text_weight``
    (0..1). Other arguments as ``pipe(...)``; with ``compat="original"`` each clip is first prepared
    as the original prepares its audio prompt (:func:`~audioldm_core.compat.original_audio_prompt`:
    normalised, zero-padded to the generated length). Returns what ``pipe(...)`` returns."""
    t = tower(pipe)
    if getattr(pipe, "clap_audio_source", "checkpoint") != "checkpoint":
        raise InputError("this CLAP audio tower was attached from another CLAP model, whose embedding space is "
                         "not the one the UNet was trained on: it can score and re-rank, not drive variations; "
                         "use a model converted from an original AudioLDM .ckpt")
    del t
    if kwargs.get("prompt_embeds") is not None or kwargs.get("negative_prompt_embeds") is not None:
        raise InputError("variation computes the embeddings itself; do not pass prompt_embeds")
    if prompt is not None and (isinstance(text_weight, bool) or not isinstance(text_weight, (int, float))
                               or not 0 <= text_weight <= 1):
        raise InputError(f"text_weight must be a number in [0, 1], got {text_weight!r}")
    clips = [audio] if isinstance(audio, (str, os.PathLike)) or \
        (isinstance(audio, (np.ndarray, torch.Tensor)) and np.ndim(audio) == 1) else list(audio)
    if not clips:
        raise InputError("no audio given")
    if compat_mode(kwargs.get("compat", "diffusers")) == "original":
        n = pipe.lengths(kwargs.get("audio_length_in_s"), True)[1] \
            * math.prod(pipe.config.vocoder.upsample_rates)
        clips = [original_audio_prompt(_waveform(c, i).numpy(), n) for i, c in enumerate(clips)]
    emb = mix(audio_embeds(pipe, clips), weights)
    if prompt is not None:
        text = pipe.prompt_encoder([prompt])[0].float().to(emb.device)
        emb = F.normalize((1 - text_weight) * emb + text_weight * text, dim=-1)
    cond = emb[None].to(device=pipe.device, dtype=pipe.dtype)
    uncond = pipe.prompt_encoder([""]).to(device=pipe.device, dtype=pipe.dtype)
    return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_waveforms_per_prompt=num_waveforms, **kwargs)
