"""Convert a CLAP audio tower (HTS-AT + projection) into our names and :class:`ClapAudioConfig`.

Two sources: the ``cond_stage_model.model.audio_branch.*`` / ``audio_projection.*`` tensors of an
original AudioLDM ``.ckpt`` (:func:`from_original`), and the transformers layout
(``ClapAudioModelWithProjection``, or the audio half of a ``ClapModel`` such as
``laion/clap-htsat-unfused``; :func:`from_transformers`). The architecture (HTSAT-tiny or -base,
or any other size) is read from the tensors' shapes; ``spec_size`` and the front-end, which no
tensor records, are HTS-AT's (256, 64 mel bins).
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from audioldm_core.errors import CheckpointError
from audioldm_core.htsat import HTSAT, ClapAudioConfig
from convert.remap import remap
from convert.tables import clap_audio as tables

ENC = tables.ENC


def config_from_shapes(state: Mapping[str, torch.Tensor]) -> ClapAudioConfig:
    """The HTS-AT size of transformers-layout tensors: embed width, depths, heads per stage,
    window, patch, mel bins and projection width."""
    try:
        proj = state[ENC + "patch_embed.proj.weight"]  # (D, 1, p, p)
        blocks: dict[int, set[int]] = {}
        heads: dict[int, int] = {}
        window = None
        for k, v in state.items():
            m = re.fullmatch(re.escape(ENC) + r"layers\.(\d+)\.blocks\.(\d+)\.attention\.self\."
                             r"relative_position_bias_table", k)
            if m:
                i = int(m.group(1))
                blocks.setdefault(i, set()).add(int(m.group(2)))
                heads[i] = int(v.shape[1])
                window = (math.isqrt(int(v.shape[0])) + 1) // 2
        stages = sorted(blocks)
        if not stages or stages != list(range(len(stages))) or window is None:
            raise KeyError("layers.N.blocks.M.attention.self.relative_position_bias_table")
        depths = tuple(len(blocks[i]) for i in stages)
        return ClapAudioConfig(embed_dim=int(proj.shape[0]), depths=depths, num_heads=tuple(heads[i] for i in stages),
                               window_size=int(window), patch_size=int(proj.shape[-1]),
                               mel_bins=int(state[ENC + "batch_norm.weight"].shape[0]),
                               projection_dim=int(state["audio_projection.linear2.weight"].shape[0]))
    except KeyError as e:
        raise CheckpointError(f"not a CLAP HTS-AT audio tower: missing {e}") from None


def expected_shapes(cfg: ClapAudioConfig) -> dict[str, torch.Size]:
    """Our state-dict names and shapes for ``cfg`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in HTSAT(cfg).state_dict().items()}


def from_transformers(state: Mapping[str, torch.Tensor], what: str = "clap_audio"
                      ) -> tuple[ClapAudioConfig, dict[str, torch.Tensor]]:
    """transformers-layout tensors (``audio_model.*``, ``audio_projection.*`` only) -> (config, our
    tensors), strictly (see :func:`convert.remap.remap`)."""
    cfg = config_from_shapes(state)
    return cfg, remap(state, tables.TRANSFORMERS, expected_shapes(cfg), what)


def from_original(state: Mapping[str, torch.Tensor], what: str = "clap_audio (original)"
                  ) -> tuple[ClapAudioConfig, dict[str, torch.Tensor]]:
    """Original open_clip tensors (``audio_branch.*``, ``audio_projection.*``; the
    ``cond_stage_model.model.`` prefix stripped) -> (config, our tensors), strictly."""
    table = tables.ORIGINAL
    renamed: dict[str, torch.Tensor] = {}
    for k, v in table.prepare(dict(state)).items():
        if table.is_unused(k):
            continue
        name = table.target(k)  # an unknown key keeps its name and is reported as unexpected below
        if name in renamed:
            raise CheckpointError(f"{what}: two source tensors map to {name}")
        renamed[name] = v
    return from_transformers(renamed, what)


ORIGINAL_PREFIX = "cond_stage_model.model."


def original_audio_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CLAP audio tensors of a whole original ``LatentDiffusion`` state dict (prefix stripped):
    ``cond_stage_model.model.audio_branch.*`` and ``.audio_projection.*``. Empty if it has none."""
    keep = (ORIGINAL_PREFIX + "audio_branch.", ORIGINAL_PREFIX + "audio_projection.")
    return {k[len(ORIGINAL_PREFIX):]: v for k, v in state.items() if k.startswith(keep)}


def transformers_audio_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The audio half of a transformers ``ClapModel`` state dict (``audio_model.*``,
    ``audio_projection.*``); the text half and ``logit_scale_*`` are not ours to keep here."""
    return {k: v for k, v in state.items() if k.startswith(("audio_model.", "audio_projection."))}
