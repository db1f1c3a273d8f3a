"""Configuration dataclasses: only what AudioLDM checkpoints actually vary.

Each component's top-level module takes its config dataclass (``UNet(UNetConfig)``); everything
below it takes plain ints. The whole model is described by :class:`AudioLDMConfig`, which is stored
as JSON inside our checkpoint files, so loading a file needs nothing else.

Built-in architectures (``tiny``, ``s-full``, ``s-full-v2``, ``m-full``, ``l-full``) ship as JSON in
``audioldm_core/configs/``; they are generated from the cvssp ``config.json`` files by
``convert.cvssp`` and a test keeps the two in agreement. Translating the diffusers/transformers
field names into these lives in ``convert/``, never here.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

from .errors import ConfigError


@dataclass(frozen=True)
class ClapTextConfig:
    """CLAP text tower: a RoBERTa encoder, a pooler and a two-layer projection (hidden→proj→proj)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-12
    projection_dim: int = 512


@dataclass(frozen=True)
class UNetConfig:
    """The AudioLDM UNet (latent 8 channels, CLAP embedding concatenated to the time embedding).

    ``num_heads`` is per level (the mid block uses the last level's). diffusers calls this field
    ``attention_head_dim`` but uses it as the number of heads; see ``convert/cvssp.py``.
    """

    in_channels: int = 8
    out_channels: int = 8
    block_channels: tuple[int, ...] = (128, 256, 384, 640)
    attn_levels: tuple[bool, ...] = (False, True, True, True)
    num_heads: tuple[int, ...] = (8, 8, 8, 8)
    layers_per_block: int = 2
    norm_groups: int = 32
    norm_eps: float = 1e-5
    class_embed_dim: int = 512


@dataclass(frozen=True)
class VAEConfig:
    """KL autoencoder between a (B, 1, T, 64) log-mel and (B, 8, T/4, 16) latents."""

    in_channels: int = 1
    out_channels: int = 1
    latent_channels: int = 8
    block_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    scaling_factor: float = 0.9392935633659363


@dataclass(frozen=True)
class HiFiGANConfig:
    """HiFi-GAN generator (SpeechT5HifiGan layout): 64-bin mel frames to 16 kHz samples."""

    model_in_dim: int = 64
    sampling_rate: int = 16000
    upsample_initial_channel: int = 1024
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    leaky_relu_slope: float = 0.1
    normalize_before: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    """The training noise schedule and the scheduler options a checkpoint fixes.

    ``timestep_spacing`` is ``None`` when the source config does not name one: each sampler then
    uses its own default, exactly as the diffusers scheduler of the same name does.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    beta_schedule: str = "scaled_linear"
    trained_betas: Optional[tuple[float, ...]] = None
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = False
    steps_offset: int = 1
    timestep_spacing: Optional[str] = None


@dataclass(frozen=True)
class AudioLDMConfig:
    """The whole model: every component's config plus the tokenizer's maximum length."""

    name: str
    clap: ClapTextConfig
    unet: UNetConfig
    vae: VAEConfig
    vocoder: HiFiGANConfig
    schedule: ScheduleConfig
    model_max_length: int = 512

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as stored in checkpoint metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AudioLDMConfig":
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` on unknown or missing fields."""
        return _from_dict(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> "AudioLDMConfig":
        """Parse :meth:`to_json` output; raises :class:`ConfigError` on bad JSON."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model config is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _convert(inner, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}; {cls.__name__} has {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing field {f.name!r}")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


BUILTIN_NAMES = ("tiny", "s-full", "s-full-v2", "m-full", "l-full")


def builtin_config(name: str) -> AudioLDMConfig:
    """The config of a built-in architecture by name: one of :data:`BUILTIN_NAMES`.

    The real architectures' VAE ``scaling_factor`` is only confirmed for ``s-full-v2``; the others
    carry that value as a placeholder (a converted checkpoint always uses its repo's own value).
    """
    if name not in BUILTIN_NAMES:
        raise ConfigError(f"unknown built-in model {name!r}; choose one of {', '.join(BUILTIN_NAMES)}")
    text = resources.files("audioldm_core.configs").joinpath(f"{name}.json").read_text()
    return AudioLDMConfig.from_json(text)
