"""Read a cvssp-layout AudioLDM (a local folder or a Hugging Face Hub repo): configs, tokenizer, weights.

A cvssp folder (the layout of the ``cvssp/audioldm*`` Hugging Face repos) holds ``model_index.json``
and the subfolders ``scheduler/``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/`` and
``vocoder/``. Every field that changes the computation is either translated or checked against the
values we support; a value we do not support raises :class:`ConfigError` naming the field, the
value and what is accepted. Keys starting with ``_`` are metadata and ignored. The weight files
(``.safetensors``, or ``.bin`` read with ``torch.load(weights_only=True)``) are renamed to ours by the
strict remapper with the cvssp key tables (:mod:`convert.tables`). A Hub repo id is downloaded (and
cached) by huggingface_hub. :func:`convert_cvssp` does it all and returns a
:class:`~convert.converted.Converted`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from audioldm_core.checkpoint import COMPONENTS, expected_shapes, safetensors_header
from audioldm_core.config import (AudioLDMConfig, ClapTextConfig, HiFiGANConfig, ScheduleConfig,
                                  UNetConfig, VAEConfig)
from audioldm_core.errors import CheckpointError, ConfigError, InputError, SourceNotFoundError
from convert.converted import Converted, sha256_file
from convert.remap import remap
from convert.tables import cvssp_table

COMPONENT_DIRS = {"clap": "text_encoder", "unet": "unet", "vae": "vae", "vocoder": "vocoder"}

# Our built-in names of the four public checkpoints (and the test-sized one) -> cvssp config folder.
BUILTIN_SOURCES = {
    "tiny": "tiny",
    "s-full": "audioldm",
    "s-full-v2": "audioldm-s-full-v2",
    "m-full": "audioldm-m-full",
    "l-full": "audioldm-l-full",
}


def shipped_config_dir(name: str) -> Path:
    """The copy of a known checkpoint's cvssp config files shipped in ``convert/cvssp_configs``."""
    if name not in BUILTIN_SOURCES:
        raise ConfigError(f"unknown checkpoint name {name!r}; choose one of {', '.join(BUILTIN_SOURCES)}")
    return Path(__file__).parent / "cvssp_configs" / BUILTIN_SOURCES[name]


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; a missing or malformed file raises a clear error."""
    if not path.is_file():
        raise SourceNotFoundError(f"missing config file {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _require(cfg: dict[str, Any], where: str, field: str, supported: tuple, default: Any) -> None:
    value = cfg.get(field, default)
    if value not in supported:
        raise ConfigError(f"{where}: {field}={value!r} is not supported; supported: "
                          + ", ".join(repr(s) for s in supported))


def _get(cfg: dict[str, Any], where: str, field: str, default: Any = ...) -> Any:
    if field in cfg:
        return cfg[field]
    if default is ...:
        raise ConfigError(f"{where}: required field {field!r} is missing")
    return default


def _check_unknown(cfg: dict[str, Any], where: str, known: set[str]) -> None:
    unknown = {k for k in cfg if not k.startswith("_")} - known
    if unknown:
        raise ConfigError(f"{where}: unknown fields {sorted(unknown)}; this converter knows {sorted(known)}")


def _check_fields(cfg: dict[str, Any], where: str, read: set[str], fixed: list[tuple]) -> None:
    """Refuse unknown fields, and fixed fields at any value but the supported ones."""
    _check_unknown(cfg, where, read | {f for f, _, _ in fixed})
    for field, supported, default in fixed:
        _require(cfg, where, field, supported, default)


def _norm_groups(cfg: dict[str, Any], where: str, channels: tuple[int, ...]) -> int:
    """``norm_num_groups``, checked to divide every block's channel count."""
    groups = int(_get(cfg, where, "norm_num_groups", 32))
    for c in channels:
        if c % groups:
            raise ConfigError(f"{where}: norm_num_groups={groups} does not divide block channels {c}")
    return groups


# --- UNet -----------------------------------------------------------------------------------------

# Fields of diffusers' UNet2DConditionModel that AudioLDM leaves at one value; any other value
# changes the network and is refused. (field, supported values, diffusers' default when absent)
_UNET_FIXED = [
    ("act_fn", ("silu",), "silu"),
    ("center_input_sample", (False,), False),
    ("flip_sin_to_cos", (True,), True),
    ("freq_shift", (0,), 0),
    ("mid_block_type", ("UNetMidBlock2DCrossAttn",), "UNetMidBlock2DCrossAttn"),
    ("only_cross_attention", (False,), False),
    ("downsample_padding", (1,), 1),
    ("mid_block_scale_factor", (1, 1.0), 1),
    ("dropout", (0.0, 0), 0.0),
    ("transformer_layers_per_block", (1,), 1),
    ("reverse_transformer_layers_per_block", (None,), None),
    ("encoder_hid_dim", (None,), None),
    ("encoder_hid_dim_type", (None,), None),
    ("num_attention_heads", (None,), None),
    ("dual_cross_attention", (False,), False),
    ("use_linear_projection", (False,), False),
    ("class_embed_type", ("simple_projection",), None),
    ("addition_embed_type", (None,), None),
    ("addition_time_embed_dim", (None,), None),
    ("num_class_embeds", (None,), None),
    ("upcast_attention", (False, True), False),  # only changes fp16 rounding; fp32 is identical
    ("resnet_time_scale_shift", ("default",), "default"),
    ("resnet_skip_time_act", (False,), False),
    ("resnet_out_scale_factor", (1.0, 1), 1.0),
    ("time_embedding_type", ("positional",), "positional"),
    ("time_embedding_dim", (None,), None),
    ("time_embedding_act_fn", (None,), None),
    ("timestep_post_act", (None,), None),
    ("time_cond_proj_dim", (None,), None),
    ("conv_in_kernel", (3,), 3),
    ("conv_out_kernel", (3,), 3),
    ("attention_type", ("default",), "default"),
    ("class_embeddings_concat", (True,), False),
    ("mid_block_only_cross_attention", (None, False), None),
    ("cross_attention_norm", (None,), None),
    ("addition_embed_type_num_heads", (64,), 64),
]
_UNET_READ = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
              "layers_per_block", "norm_num_groups", "norm_eps", "cross_attention_dim",
              "attention_head_dim", "projection_class_embeddings_input_dim", "sample_size"}


def unet_config(cfg: dict[str, Any], where: str = "unet/config.json") -> UNetConfig:
    """Translate diffusers ``UNet2DConditionModel`` config fields into :class:`UNetConfig`."""
    _check_fields(cfg, where, _UNET_READ, _UNET_FIXED)
    channels = tuple(int(c) for c in _get(cfg, where, "block_out_channels"))
    down = list(_get(cfg, where, "down_block_types"))
    up = list(_get(cfg, where, "up_block_types"))
    kinds = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
    up_kinds = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
    for t in down:
        if t not in kinds:
            raise ConfigError(f"{where}: down_block_types entry {t!r} is not supported; supported: {sorted(kinds)}")
    for t in up:
        if t not in up_kinds:
            raise ConfigError(f"{where}: up_block_types entry {t!r} is not supported; supported: {sorted(up_kinds)}")
    attn = tuple(kinds[t] for t in down)
    if len(down) != len(channels) or tuple(up_kinds[t] for t in reversed(up)) != attn:
        raise ConfigError(f"{where}: up_block_types {up} must mirror down_block_types {down}, "
                          f"one per block_out_channels entry {list(channels)}")
    # diffusers names the number of heads "attention_head_dim" (a historical misnomer it keeps for
    # compatibility); it is an int for every level or a list per level.
    heads = _get(cfg, where, "attention_head_dim", 8)
    heads = tuple(int(h) for h in heads) if isinstance(heads, (list, tuple)) else (int(heads),) * len(channels)
    cross = _get(cfg, where, "cross_attention_dim", 1280)
    cross = tuple(int(c) for c in cross) if isinstance(cross, (list, tuple)) else (int(cross),) * len(channels)
    if cross != channels:
        # AudioLDM gives the UNet no text states: attn2 attends to the hidden states themselves, so
        # its key/value width must be each level's channel count.
        raise ConfigError(f"{where}: cross_attention_dim {list(cross)} must equal block_out_channels "
                          f"{list(channels)} (AudioLDM's second attention attends to its own input)")
    if len(heads) != len(channels):
        raise ConfigError(f"{where}: attention_head_dim has {len(heads)} entries for {len(channels)} levels")
    groups = _norm_groups(cfg, where, channels)
    for c, h, a in zip(channels, heads, attn):
        if a and c % h:
            raise ConfigError(f"{where}: {h} heads do not divide {c} channels")
    class_dim = _get(cfg, where, "projection_class_embeddings_input_dim")
    if class_dim is None:
        raise ConfigError(f"{where}: projection_class_embeddings_input_dim must be set for simple_projection")
    return UNetConfig(
        in_channels=int(_get(cfg, where, "in_channels")),
        out_channels=int(_get(cfg, where, "out_channels")),
        block_channels=channels,
        attn_levels=attn,
        num_heads=heads,
        layers_per_block=int(_get(cfg, where, "layers_per_block", 2)),
        norm_groups=groups,
        norm_eps=float(_get(cfg, where, "norm_eps", 1e-5)),
        class_embed_dim=int(class_dim),
    )


# --- VAE ------------------------------------------------------------------------------------------

_VAE_FIXED = [
    ("act_fn", ("silu",), "silu"),
    ("shift_factor", (None,), None),
    ("latents_mean", (None,), None),
    ("latents_std", (None,), None),
    ("force_upcast", (True, False), True),  # a dtype policy hint, not part of the network
    ("use_quant_conv", (True,), True),
    ("use_post_quant_conv", (True,), True),
    ("mid_block_add_attention", (True,), True),
]
_VAE_READ = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
             "layers_per_block", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor"}


def vae_config(cfg: dict[str, Any], where: str = "vae/config.json") -> VAEConfig:
    """Translate diffusers ``AutoencoderKL`` config fields into :class:`VAEConfig`."""
    _check_fields(cfg, where, _VAE_READ, _VAE_FIXED)
    channels = tuple(int(c) for c in _get(cfg, where, "block_out_channels"))
    down = list(_get(cfg, where, "down_block_types"))
    up = list(_get(cfg, where, "up_block_types"))
    if down != ["DownEncoderBlock2D"] * len(channels) or up != ["UpDecoderBlock2D"] * len(channels):
        raise ConfigError(f"{where}: block types {down} / {up} are not supported; supported: "
                          f"DownEncoderBlock2D / UpDecoderBlock2D once per block_out_channels entry")
    groups = _norm_groups(cfg, where, channels)
    return VAEConfig(
        in_channels=int(_get(cfg, where, "in_channels")),
        out_channels=int(_get(cfg, where, "out_channels")),
        latent_channels=int(_get(cfg, where, "latent_channels")),
        block_channels=channels,
        layers_per_block=int(_get(cfg, where, "layers_per_block", 1)),
        norm_groups=groups,
        scaling_factor=float(_get(cfg, where, "scaling_factor")),
    )


# --- CLAP text tower (transformers ClapTextConfig) -------------------------------------------------

def clap_config(cfg: dict[str, Any], where: str = "text_encoder/config.json") -> ClapTextConfig:
    """Translate transformers ``ClapTextConfig`` fields into :class:`ClapTextConfig`.

    transformers configs carry many generic keys (dropouts, labels, ...); only the fields that change
    the inference computation are read or checked.
    """
    _require(cfg, where, "hidden_act", ("gelu",), "gelu")
    _require(cfg, where, "projection_hidden_act", ("relu",), "relu")
    _require(cfg, where, "position_embedding_type", ("absolute",), "absolute")
    hidden = int(_get(cfg, where, "hidden_size", 768))
    heads = int(_get(cfg, where, "num_attention_heads", 12))
    if hidden % heads:
        raise ConfigError(f"{where}: num_attention_heads={heads} does not divide hidden_size={hidden}")
    return ClapTextConfig(
        vocab_size=int(_get(cfg, where, "vocab_size", 50265)),
        hidden_size=hidden,
        num_layers=int(_get(cfg, where, "num_hidden_layers", 12)),
        num_heads=heads,
        intermediate_size=int(_get(cfg, where, "intermediate_size", 3072)),
        max_positions=int(_get(cfg, where, "max_position_embeddings", 514)),
        type_vocab_size=int(_get(cfg, where, "type_vocab_size", 1)),
        pad_token_id=int(_get(cfg, where, "pad_token_id", 1)),
        layer_norm_eps=float(_get(cfg, where, "layer_norm_eps", 1e-12)),
        projection_dim=int(_get(cfg, where, "projection_dim", 512)),
    )


# --- HiFi-GAN vocoder (transformers SpeechT5HifiGanConfig) ----------------------------------------

def vocoder_config(cfg: dict[str, Any], where: str = "vocoder/config.json") -> HiFiGANConfig:
    """Translate transformers ``SpeechT5HifiGanConfig`` fields into :class:`HiFiGANConfig`."""
    rates = tuple(int(r) for r in _get(cfg, where, "upsample_rates"))
    kernels = tuple(int(k) for k in _get(cfg, where, "upsample_kernel_sizes"))
    if len(rates) != len(kernels):
        raise ConfigError(f"{where}: upsample_rates {list(rates)} and upsample_kernel_sizes "
                          f"{list(kernels)} must have the same length")
    rk = tuple(int(k) for k in _get(cfg, where, "resblock_kernel_sizes"))
    rd = tuple(tuple(int(d) for d in ds) for ds in _get(cfg, where, "resblock_dilation_sizes"))
    if len(rk) != len(rd):
        raise ConfigError(f"{where}: resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
    return HiFiGANConfig(
        model_in_dim=int(_get(cfg, where, "model_in_dim", 64)),
        sampling_rate=int(_get(cfg, where, "sampling_rate", 16000)),
        upsample_initial_channel=int(_get(cfg, where, "upsample_initial_channel")),
        upsample_rates=rates,
        upsample_kernel_sizes=kernels,
        resblock_kernel_sizes=rk,
        resblock_dilation_sizes=rd,
        leaky_relu_slope=float(_get(cfg, where, "leaky_relu_slope", 0.1)),
        normalize_before=bool(_get(cfg, where, "normalize_before", False)),
    )


# --- Scheduler --------------------------------------------------------------------------------------

_SCHEDULE_FIXED = [
    ("thresholding", (False,), False),
    ("rescale_betas_zero_snr", (False,), False),
]
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_SPACINGS = ("leading", "trailing", "linspace")
_PREDICTIONS = ("epsilon", "v_prediction", "sample")


def schedule_config(cfg: dict[str, Any], where: str = "scheduler/scheduler_config.json") -> ScheduleConfig:
    """Translate a diffusers scheduler config into :class:`ScheduleConfig`.

    ``timestep_spacing`` stays ``None`` when the key is absent (the cvssp configs predate it), so
    that each sampler falls back to its own diffusers default; a present value is kept as given.
    Sampler-specific options of other schedulers (solver order, ...) are not part of a checkpoint.
    """
    for field, supported, default in _SCHEDULE_FIXED:
        _require(cfg, where, field, supported, default)
    _require(cfg, where, "beta_schedule", _BETA_SCHEDULES, "linear")
    _require(cfg, where, "prediction_type", _PREDICTIONS, "epsilon")
    spacing = cfg.get("timestep_spacing")
    if spacing is not None and spacing not in _SPACINGS:
        raise ConfigError(f"{where}: timestep_spacing={spacing!r} is not supported; supported: {_SPACINGS}")
    betas = cfg.get("trained_betas")
    return ScheduleConfig(
        num_train_timesteps=int(_get(cfg, where, "num_train_timesteps", 1000)),
        beta_start=float(_get(cfg, where, "beta_start", 0.0001)),
        beta_end=float(_get(cfg, where, "beta_end", 0.02)),
        beta_schedule=str(_get(cfg, where, "beta_schedule", "linear")),
        trained_betas=None if betas is None else tuple(float(b) for b in betas),
        prediction_type=str(_get(cfg, where, "prediction_type", "epsilon")),
        clip_sample=bool(_get(cfg, where, "clip_sample", False)),
        clip_sample_range=float(_get(cfg, where, "clip_sample_range", 1.0)),
        set_alpha_to_one=bool(_get(cfg, where, "set_alpha_to_one", False)),
        steps_offset=int(_get(cfg, where, "steps_offset", 0)),
        timestep_spacing=spacing,
    )


# --- The whole folder -------------------------------------------------------------------------------

def read_folder_config(folder: Path, name: str = "") -> AudioLDMConfig:
    """Read and translate every config of a cvssp-layout folder into one :class:`AudioLDMConfig`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceNotFoundError(f"{folder} is not a folder")
    for sub in ("scheduler", "text_encoder", "tokenizer", "unet", "vae", "vocoder"):
        if not (folder / sub).is_dir():
            raise SourceNotFoundError(f"{folder} is not a cvssp-layout folder: component folder "
                                      f"{sub}/ is missing (expected scheduler/, text_encoder/, "
                                      f"tokenizer/, unet/, vae/, vocoder/)")
    tok = read_json(folder / "tokenizer" / "tokenizer_config.json")
    max_len = tok.get("model_max_length", 512)
    if not isinstance(max_len, int) or max_len <= 0 or max_len > 10**6:
        raise ConfigError(f"{folder}/tokenizer/tokenizer_config.json: model_max_length={max_len!r} "
                          f"must be a positive int")
    clap = clap_config(read_json(folder / "text_encoder" / "config.json"))
    unet = unet_config(read_json(folder / "unet" / "config.json"))
    vae = vae_config(read_json(folder / "vae" / "config.json"))
    vocoder = vocoder_config(read_json(folder / "vocoder" / "config.json"))
    schedule = schedule_config(read_json(folder / "scheduler" / "scheduler_config.json"))
    if unet.class_embed_dim != clap.projection_dim:
        raise ConfigError(f"unet projection_class_embeddings_input_dim={unet.class_embed_dim} must equal "
                          f"text_encoder projection_dim={clap.projection_dim}")
    if unet.in_channels != vae.latent_channels or unet.out_channels != vae.latent_channels:
        raise ConfigError(f"unet in/out channels {unet.in_channels}/{unet.out_channels} must equal "
                          f"vae latent_channels={vae.latent_channels}")
    if max_len + 2 > clap.max_positions:
        raise ConfigError(f"tokenizer model_max_length={max_len} needs {max_len + 2} positions; "
                          f"text_encoder has max_position_embeddings={clap.max_positions}")
    return AudioLDMConfig(name=name or folder.name, clap=clap, unet=unet, vae=vae, vocoder=vocoder,
                          schedule=schedule, model_max_length=max_len)


# --- Weights, tokenizer, Hub download ---------------------------------------------------------------

# Weight file names per component folder, in order of preference.
_STEMS = {"clap": ("model", "pytorch_model"), "vocoder": ("model", "pytorch_model"),
          "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
          "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model")}
VARIANTS = (None, "fp16")
HUB_PATTERNS = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*"]
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def weight_file_names(component: str, variant: Optional[str] = None) -> list[str]:
    """The file names a cvssp component folder may hold, preferred first (safetensors, then .bin)."""
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; supported: fp16 (or none)")
    st, binary = _STEMS[component]
    mid = f".{variant}" if variant else ""
    return [f"{st}{mid}.safetensors", f"{binary}{mid}.bin"]


def find_weight_file(folder: Path, component: str, variant: Optional[str] = None) -> Path:
    """The weight file of one component in a cvssp folder; raises naming what was looked for."""
    return first_weight_file(Path(folder) / COMPONENT_DIRS[component], weight_file_names(component, variant),
                             f"no weight file for {component}")


def first_weight_file(sub: Path, names: list[str], what: str) -> Path:
    """The first of ``names`` present in the component folder ``sub``; otherwise
    :class:`SourceNotFoundError` saying ``what``, what was looked for and what is there."""
    if not sub.is_dir():
        raise SourceNotFoundError(f"component folder {sub} is missing")
    for n in names:
        if (sub / n).is_file():
            return sub / n
    present = sorted(p.name for p in sub.iterdir())
    raise SourceNotFoundError(f"{what} in {sub}: looked for {', '.join(names)}; "
                              f"found {', '.join(present) or 'nothing'}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` or ``.bin`` file.

    ``.bin`` files are read only with ``torch.load(weights_only=True)``: a pickle that tries to
    build anything but tensors and plain containers is refused.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        safetensors_header(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # SafetensorError, OSError, ...: a damaged or truncated file
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if path.suffix == ".bin":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # UnpicklingError (refused or damaged), RuntimeError (bad zip), ...
            raise CheckpointError(f"{path} could not be loaded as a weights-only PyTorch file "
                                  f"(torch.load weights_only=True refuses anything but tensors): "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")
        return state
    raise CheckpointError(f"{path}: unsupported weight file type {path.suffix!r}; expected .safetensors or .bin")


def convert_component(folder: Path, component: str, config: AudioLDMConfig,
                      variant: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Read one component's weights from a cvssp folder and return them under our names (strict)."""
    path = find_weight_file(folder, component, variant)
    return remap(read_weights(path), cvssp_table(component), expected_shapes(component, config),
                 f"{component} ({path})")


def read_tokenizer(folder: Path) -> dict[str, Any]:
    """The RoBERTa BPE vocabulary of a cvssp ``tokenizer/`` folder: ``{"vocab", "merges"}``.

    Reads ``vocab.json`` + ``merges.txt``, or ``tokenizer.json`` when those are absent.
    """
    sub = Path(folder) / "tokenizer"
    vocab_path, merges_path, tj = sub / "vocab.json", sub / "merges.txt", sub / "tokenizer.json"
    if vocab_path.is_file() and merges_path.is_file():
        vocab = read_json(vocab_path)
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    elif tj.is_file():
        model = read_json(tj).get("model", {})
        if model.get("type") != "BPE":
            raise CheckpointError(f"{tj}: tokenizer model type {model.get('type')!r} is not BPE")
        vocab = model.get("vocab", {})
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    else:
        raise SourceNotFoundError(f"no tokenizer files in {sub}: need vocab.json + merges.txt, or tokenizer.json")
    if not vocab or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise CheckpointError(f"{sub}: vocabulary must map tokens to integer ids")
    bad = [m for m in merges if len(m.split(" ")) != 2]
    if bad:
        raise CheckpointError(f"{sub}: {len(bad)} malformed merge line(s), e.g. {bad[0]!r}")
    return {"vocab": vocab, "merges": merges}


def resolve_source(source: str, revision: Optional[str] = None,
                   variant: Optional[str] = None) -> tuple[Path, dict[str, Any]]:
    """A local cvssp folder, or a Hub repo id downloaded with huggingface_hub (cached).

    Returns the folder and a JSON-able description (``{"kind": "folder", "path"}`` or
    ``{"kind": "hub", "repo_id", "revision"}``). Honours ``HF_HUB_OFFLINE``: offline and not
    cached raises :class:`SourceNotFoundError` naming the variable and the cache folder.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceNotFoundError(f"{source} is a file, not a cvssp-layout folder (an original AudioLDM .ckpt "
                                      f"is converted by convert_any / audioldm-convert)")
        return path, {"kind": "folder", "path": str(path.resolve())}
    if not REPO_ID.match(source):
        raise SourceNotFoundError(f"{source!r} is neither an existing folder nor a Hub repo id "
                                  f"(owner/name, e.g. cvssp/audioldm-s-full-v2)")
    return download_repo(source, revision, variant)


def download_repo(repo_id: str, revision: Optional[str] = None, variant: Optional[str] = None,
                  patterns: Optional[list[str]] = None) -> tuple[Path, dict[str, Any]]:
    """Fetch (or find in the local cache) the files of a cvssp repo on the Hugging Face Hub.

    patterns: only these files (default: the configs, tokenizer and weight files a conversion reads).
    """
    import huggingface_hub
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if patterns is None:
        patterns = list(HUB_PATTERNS)
        for comp, sub in COMPONENT_DIRS.items():
            patterns += [f"{sub}/{n}" for n in weight_file_names(comp, None)]
            if variant:
                patterns += [f"{sub}/{n}" for n in weight_file_names(comp, variant)]
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        offline = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise SourceNotFoundError(
            f"cannot get {repo_id}{'@' + revision if revision else ''}: {offline} and it is not in the "
            f"local cache ({constants.HF_HUB_CACHE}). Download it once with network access, or pass a "
            f"local cvssp-layout folder or a converted .safetensors file") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise SourceNotFoundError(f"cannot get {repo_id}: {type(e).__name__}: {e}") from None
    except huggingface_hub.errors.HfHubHTTPError as e:
        raise SourceNotFoundError(f"cannot get {repo_id}: {e}") from None
    folder = Path(folder)
    return folder, {"kind": "hub", "repo_id": repo_id, "revision": revision or "main",
                    "commit": folder.name}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify_hub_blob(path: Path, digest: str) -> None:
    """Check a file from the huggingface_hub cache against the hash the Hub recorded for it.

    The cache stores each large (LFS) file as ``blobs/<sha256>`` with the snapshot entry linking to
    it, so the blob's name is the Hub's SHA-256 of the content; a mismatch means the cached file is
    damaged or was replaced. Small non-LFS files are named by their git hash and are not checked.
    """
    blob = Path(path).resolve().name
    if _SHA256.fullmatch(blob) and blob != digest:
        raise CheckpointError(f"{path}: content SHA-256 {digest[:16]}... does not match the hash the Hub "
                              f"recorded ({blob[:16]}...); the cached file is damaged: delete it and download again")


def convert_cvssp(source: str, *, revision: Optional[str] = None, variant: Optional[str] = None,
                   hash_files: bool = True, progress: Optional[Callable[[str], None]] = None) -> Converted:
    """Convert a cvssp folder or Hub repo id in memory (nothing is written).

    variant: ``"fp16"`` to read the ``*.fp16.*`` weight files.
    hash_files: record each source weight file's SHA-256 in ``source["files"]``.
    progress: called with each component's name as it starts.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; supported: fp16 (or none)")
    folder, info = resolve_source(str(source), revision, variant)
    config = read_folder_config(folder, name=info.get("repo_id", folder.name))
    tokenizer = read_tokenizer(folder)
    tensors, files = {}, {}
    for comp in COMPONENTS:
        if progress:
            progress(comp)
        path = find_weight_file(folder, comp, variant)
        if hash_files or info["kind"] == "hub":
            digest = sha256_file(path)
            files[str(path.relative_to(folder))] = digest
            if info["kind"] == "hub":
                verify_hub_blob(path, digest)
        tensors[comp] = convert_component(folder, comp, config, variant)
    info = dict(info, variant=variant, files=files)
    return Converted(config=config, tokenizer=tokenizer, tensors=tensors, source=info)
