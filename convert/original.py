"""Convert an original AudioLDM release checkpoint (``audioldm-*.ckpt``) into our format, in memory.

The six release files (``audioldm-s-full``, ``-s-full-v2``, ``-m-full``, ``-l-full``, ``-s-text-ft``,
``-m-text-ft``; github.com/haoheliu/AudioLDM) are PyTorch Lightning checkpoints of one
``LatentDiffusion`` module. The path is: read the file (``torch.load(weights_only=True)``, with the
known Lightning/OmegaConf wrapper types admitted as inert stand-ins, never executed) -> split the
state dict into the four components -> rename each to the cvssp (diffusers/transformers) names
(:mod:`convert.tables.original`) -> the cvssp tables and the strict remapper, exactly as a cvssp folder.

The configuration is derived from the tensors' shapes plus what the original code fixes by *name*
(``audioldm/utils.py default_audioldm_config``): attention head size 32 channels (64 for ``-l-``
models), RoBERTa-base's text encoder settings, HiFi-GAN's upsample rates.

Where the original and diffusers differ in results (``compat``):

* **attention heads**: the original UNet uses ``channels // 32`` heads per level
  (``channels // 64`` for l-full: ``num_head_channels``); diffusers' cvssp configs say
  ``attention_head_dim: 8``, which diffusers uses as 8 heads at every level. Same weights,
  different outputs. ``compat="original"`` (default) sets ``UNetConfig.num_heads`` to the
  original's per-level count, ``"diffusers"`` to 8 everywhere (what the cvssp repos give).
* **CLAP LayerNorm eps**: the original text branch is ``RobertaModel`` with roberta-base's config
  (``layer_norm_eps=1e-5``); the cvssp text encoder config says ``1e-12``. ``compat`` picks it.

Differences in sampling that no weight or config field carries (the pipeline's business):
DDIM ``eta=1.0`` in the original (diffusers: 0.0); the original's CLAP conditioner keeps its 10%
random replacement of the text embedding by the empty prompt's (``unconditional_prob=0.1``) at
inference; it generates ``n_candidate_gen_per_text=3`` candidates and keeps the best by CLAP
audio-text similarity (needs the audio branch, which we drop); it clips latents to [-10, 10] when
any exceeds 100 before decoding; its output is int16 of the whole 10.24 s mel length.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from audioldm_core.checkpoint import COMPONENTS, expected_shapes
from audioldm_core.clap_file import metadata_for
from audioldm_core.config import (AudioLDMConfig, ClapTextConfig, HiFiGANConfig, ScheduleConfig, UNetConfig,
                                  VAEConfig)
from audioldm_core.errors import CheckpointError, InputError, SourceNotFoundError, name_list
from convert.clap_audio import from_original, original_audio_tensors
from convert.converted import Converted, sha256_file
from convert.cvssp import REPO_ID, download_repo, read_tokenizer
from convert.remap import KeyTable, remap
from convert.tables import cvssp_table
from convert.tables import original as tables

# Model name -> UNet model_channels the original code builds for it (utils.default_audioldm_config).
MODEL_NAMES = {"s-full": 128, "s-full-v2": 128, "m-full": 192, "l-full": 256, "s-text-ft": 128,
               "m-text-ft": 192}
# File stems of the release downloads (utils.get_metadata): cache names and the Zenodo file names.
_STEM_NAMES = {f"audioldm-{n}": n for n in MODEL_NAMES} | {"audioldm-full-l": "l-full",
                                                           "audioldm-full-s-v2": "s-full-v2"}
COMPAT = ("original", "diffusers")
# HiFi-GAN settings the original fixes in code (hifigan/utilities.py HIFIGAN_16K_64); only the
# kernel sizes and channel counts are visible in the weights, so they are checked against these.
_HIFIGAN_RATES = (5, 4, 2, 2, 2)
_HIFIGAN_KERNELS = (16, 16, 8, 4, 4)
_HIFIGAN_DILATIONS = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

# Globals a Lightning checkpoint may pickle besides tensors (callback state, hyper-parameters). They
# are admitted as inert stand-ins (no code of theirs runs); anything else is refused.
_WRAPPER_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
_WRAPPER_NAMES = {"typing.Any", "argparse.Namespace", "collections.defaultdict", "numpy.dtype",
                  "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}


class _Inert:
    """Stand-in for a wrapper object in a Lightning checkpoint: keeps its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("list", []).extend(values)


def _is_wrapper(name: str) -> bool:
    return name in _WRAPPER_NAMES or name.startswith(_WRAPPER_PREFIXES) or name.startswith("numpy.dtypes.")


def _torch_load(path: Path, **kw: Any) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True, **kw)
    except RuntimeError as e:
        if "mmap" not in str(e):  # a legacy (non-zip) file cannot be memory-mapped
            raise
        return torch.load(path, map_location="cpu", weights_only=True, **kw)


def read_lightning_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning ``.ckpt`` (or a plain ``torch.save`` state dict).

    Read with ``torch.load(weights_only=True)``. When the file also pickles Lightning or OmegaConf
    objects (callback states, hyper-parameters), those globals, and only those, are admitted as
    inert stand-ins; a file naming any other global is refused with the list of names.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"{path} is not a file")
    try:
        obj = _torch_load(path)
    except Exception as first:  # UnpicklingError for a refused global; anything else: damaged file
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            needed = None
        if not needed:
            raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint: "
                                  f"{type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''}") from None
        refused = sorted(n for n in needed if not _is_wrapper(n))
        if refused:
            raise CheckpointError(f"{path} pickles objects other than tensors and the known Lightning wrapper "
                                  f"types; refusing to load it (it could run code): {name_list(refused)}")
        with torch.serialization.safe_globals([(_Inert, n) for n in needed]):
            try:
                obj = _torch_load(path)
            except Exception as e:
                raise CheckpointError(f"{path} could not be read even with the Lightning wrapper types "
                                      f"admitted: {type(e).__name__}: {e}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} holds no state dict of tensors (expected a Lightning checkpoint "
                              f"with 'state_dict', or a flat name -> tensor dict)")
    return state


# --- splitting and renaming ---------------------------------------------------------------------

def split_components(state: dict[str, torch.Tensor], use_ema: Optional[bool]) -> tuple[dict, dict, bool]:
    """Split a LatentDiffusion state dict into ``{component: {original name: tensor}}``.

    Returns (parts, top-level extras such as ``scale_factor``/``betas``, whether EMA weights were
    used). Keys that belong to nothing we know raise :class:`CheckpointError`.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {c: {} for c in COMPONENTS}
    extras, ema, unknown = {}, {}, []
    unused = KeyTable(unused=tables.UNUSED_TOP)
    for key, value in state.items():
        if key.startswith(tables.UNET_PREFIX):
            parts["unet"][key[len(tables.UNET_PREFIX):]] = value
        elif key.startswith(tables.VOCODER_PREFIX):
            parts["vocoder"][key[len(tables.VOCODER_PREFIX):]] = value
        elif key.startswith(tables.VAE_PREFIX):
            parts["vae"][key[len(tables.VAE_PREFIX):]] = value
        elif key.startswith(tables.CLAP_PREFIX) and not unused.is_unused(key):
            parts["clap"][key[len(tables.CLAP_PREFIX):]] = value
        elif unused.is_unused(key):
            if key in ("scale_factor", "betas"):
                extras[key] = value
        elif key.startswith(tables.EMA_PREFIX):
            ema[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"original checkpoint: keys of no known AudioLDM component: {name_list(unknown)}")
    if use_ema is None:
        use_ema = bool(ema)
    if use_ema:
        if not ema:
            raise CheckpointError("EMA weights were requested but the checkpoint has no model_ema.* tensors")
        by_ema = {tables.ema_key(k): k for k in parts["unet"]}
        if len(by_ema) != len(parts["unet"]):
            raise CheckpointError("UNet parameter names collide once their dots are removed; cannot match EMA weights")
        missing = sorted(set(by_ema) - set(ema))
        stray = sorted(set(ema) - set(by_ema))
        if missing or stray:
            raise CheckpointError(f"the EMA weights do not match the UNet: {len(missing)} UNet weight(s) without "
                                  f"EMA ({name_list(missing)}); {len(stray)} EMA tensor(s) of no UNet weight "
                                  f"({name_list(stray)})")
        for ek, k in by_ema.items():
            if ema[ek].shape != parts["unet"][k].shape:
                raise CheckpointError(f"EMA tensor {ek} has shape {tuple(ema[ek].shape)}; the UNet weight "
                                      f"{k} has {tuple(parts['unet'][k].shape)}")
            parts["unet"][k] = ema[ek]
    return parts, extras, use_ema


# --- configuration from shapes -----------------------------------------------------------------

def _need(state: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key in state:
        return state[key]
    for alt in (key.replace(".weight", ".weight_v"), key.replace(".weight", ".parametrizations.weight.original1")):
        if alt in state:
            return state[alt]
    raise CheckpointError(f"original checkpoint: {what} tensor {key} is missing")


def _indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def model_name_for(path: Path, model_name: Optional[str], model_channels: int) -> tuple[str, int]:
    """(model name or file stem, attention head size of the original code for it)."""
    if model_name is not None:
        name = model_name[len("audioldm-"):] if model_name.startswith("audioldm-") else model_name
        if name not in MODEL_NAMES:
            raise InputError(f"unknown original model name {model_name!r}; choose one of "
                             f"{', '.join(MODEL_NAMES)} (or leave it out to infer it from the weights)")
        if MODEL_NAMES[name] != model_channels:
            raise CheckpointError(f"model name {name!r} means a UNet of {MODEL_NAMES[name]} base channels, "
                                  f"but the checkpoint has {model_channels}: wrong --model-name?")
    else:
        name = _STEM_NAMES.get(Path(path).stem)
        if name is not None and MODEL_NAMES[name] != model_channels:
            name = None  # the file was renamed: trust the weights
        if name is None:
            name = Path(path).stem
    # utils.default_audioldm_config: num_head_channels 64 for "-l-" models, else 32. Without a name,
    # the l models are the only ones with 256 base channels.
    large = name.startswith("l-") if name in MODEL_NAMES else model_channels == 256
    return name, 64 if large else 32


def unet_config(state: dict[str, torch.Tensor], head_channels: int, compat: str) -> UNetConfig:
    """UNetConfig from original openaimodel.UNetModel weights (FiLM by concatenation)."""
    levels = len(_indices(state, r"input_blocks\.(\d+)\.0\.op\.weight$")) + 1
    n_in = len(_indices(state, r"input_blocks\.(\d+)\."))
    layers = n_in // levels - 1
    if n_in != levels * (layers + 1) or layers < 1:
        raise CheckpointError(f"original UNet: {n_in} input blocks do not fit {levels} levels")
    mc = _need(state, "time_embed.0.weight", "UNet").shape[1]
    time_dim = _need(state, "time_embed.0.weight", "UNet").shape[0]
    film = _need(state, "film_emb.weight", "UNet (FiLM conditioning)")
    if _need(state, "input_blocks.1.0.emb_layers.1.weight", "UNet").shape[1] != 2 * time_dim:
        raise CheckpointError("original UNet adds the FiLM embedding to the time embedding "
                              "(extra_film_use_concat=False); only the concatenating variant AudioLDM released is supported")
    if any(".transformer_blocks.1." in k for k in state):
        raise CheckpointError("original UNet has transformer_depth > 1; AudioLDM uses 1")
    channels, attn = [], []
    for lvl in range(levels):
        k = 1 + lvl * (layers + 1)
        channels.append(_need(state, f"input_blocks.{k}.0.out_layers.3.weight", "UNet").shape[0])
        attn.append(f"input_blocks.{k}.1.proj_in.weight" in state)
    if channels[0] != mc:
        raise CheckpointError(f"original UNet: first level has {channels[0]} channels, time embedding {mc}")
    for c in channels:
        if compat == "original" and c % head_channels:
            raise CheckpointError(f"original UNet: {c} channels are not a multiple of the head size {head_channels}")
    heads = tuple(c // head_channels if compat == "original" else 8 for c in channels)
    return UNetConfig(in_channels=_need(state, "input_blocks.0.0.weight", "UNet").shape[1],
                      out_channels=_need(state, "out.2.weight", "UNet").shape[0],
                      block_channels=tuple(channels), attn_levels=tuple(attn), num_heads=heads,
                      layers_per_block=layers, norm_groups=32, norm_eps=1e-5, class_embed_dim=film.shape[1])


def vae_config(state: dict[str, torch.Tensor], scale_factor: Optional[torch.Tensor]) -> VAEConfig:
    """VAEConfig from the original first-stage (AutoencoderKL) weights and the ``scale_factor`` buffer."""
    levels = _indices(state, r"encoder\.down\.(\d+)\.")
    if not levels:
        raise CheckpointError("original checkpoint has no first_stage_model.encoder.down.* (VAE) tensors")
    layers = len(_indices(state, r"encoder\.down\.0\.block\.(\d+)\."))
    channels = tuple(_need(state, f"encoder.down.{i}.block.0.conv1.weight", "VAE").shape[0] for i in levels)
    if scale_factor is None:
        raise CheckpointError("original checkpoint has no scale_factor buffer (scale_by_std): the latent "
                              "scaling factor is unknown")
    latent = _need(state, "post_quant_conv.weight", "VAE").shape[0]
    return VAEConfig(in_channels=_need(state, "encoder.conv_in.weight", "VAE").shape[1],
                     out_channels=_need(state, "decoder.conv_out.weight", "VAE").shape[0],
                     latent_channels=latent, block_channels=channels, layers_per_block=layers, norm_groups=32,
                     scaling_factor=float(scale_factor.float().item()))


def vocoder_config(state: dict[str, torch.Tensor]) -> HiFiGANConfig:
    """HiFiGANConfig from the original Generator weights; rates/dilations are the original's constants."""
    pre = _need(state, "conv_pre.weight", "vocoder")
    ups = _indices(state, r"ups\.(\d+)\.")
    kernels = tuple(_need(state, f"ups.{i}.weight", "vocoder").shape[2] for i in ups)
    if kernels != _HIFIGAN_KERNELS:
        raise CheckpointError(f"original vocoder upsample kernels {kernels} differ from AudioLDM's "
                              f"{_HIFIGAN_KERNELS}; its upsample rates cannot be inferred")
    n_res = len(_indices(state, r"resblocks\.(\d+)\."))
    per = n_res // len(ups)
    res_kernels = tuple(_need(state, f"resblocks.{j}.convs1.0.weight", "vocoder").shape[2] for j in range(per))
    return HiFiGANConfig(model_in_dim=pre.shape[1], sampling_rate=16000, upsample_initial_channel=pre.shape[0],
                         upsample_rates=_HIFIGAN_RATES, upsample_kernel_sizes=kernels,
                         resblock_kernel_sizes=res_kernels, resblock_dilation_sizes=_HIFIGAN_DILATIONS,
                         leaky_relu_slope=0.1, normalize_before=False)


def clap_config(state: dict[str, torch.Tensor], compat: str) -> ClapTextConfig:
    """ClapTextConfig from the original CLAP text branch (RobertaModel) + text projection weights."""
    words = _need(state, "text_branch.embeddings.word_embeddings.weight", "CLAP text")
    hidden = words.shape[1]
    if hidden % 64:
        raise CheckpointError(f"CLAP text hidden size {hidden} is not a multiple of RoBERTa's head size 64")
    return ClapTextConfig(
        vocab_size=words.shape[0], hidden_size=hidden,
        num_layers=len(_indices(state, r"text_branch\.encoder\.layer\.(\d+)\.")), num_heads=hidden // 64,
        intermediate_size=_need(state, "text_branch.encoder.layer.0.intermediate.dense.weight", "CLAP text").shape[0],
        max_positions=_need(state, "text_branch.embeddings.position_embeddings.weight", "CLAP text").shape[0],
        type_vocab_size=_need(state, "text_branch.embeddings.token_type_embeddings.weight", "CLAP text").shape[0],
        pad_token_id=1, layer_norm_eps=1e-5 if compat == "original" else 1e-12,
        projection_dim=_need(state, "text_projection.2.weight", "CLAP text").shape[0])


def schedule_config(betas: Optional[torch.Tensor]) -> ScheduleConfig:
    """AudioLDM's training schedule (ldm "linear" = diffusers "scaled_linear", 0.0015-0.0195, 1000
    steps), checked against the checkpoint's ``betas`` buffer; a file whose betas differ keeps them."""
    base = ScheduleConfig()
    if betas is None:
        return base
    b = betas.double().flatten()
    n = b.numel()
    ref = torch.linspace(math.sqrt(base.beta_start), math.sqrt(base.beta_end), n, dtype=torch.float64) ** 2
    if (b - ref).abs().max().item() <= 1e-6 * ref.max().item():
        return ScheduleConfig(num_train_timesteps=n)
    return ScheduleConfig(num_train_timesteps=n, trained_betas=tuple(b.tolist()))


def read_tokenizer_dir(source: Any) -> dict[str, Any]:
    """A RoBERTa BPE vocabulary from a folder holding vocab.json + merges.txt (or tokenizer.json),
    from a cvssp folder holding tokenizer/, or from a Hub repo id (only its ``tokenizer/`` files are
    downloaded; cached; ``HF_HUB_OFFLINE`` honoured)."""
    folder = Path(str(source)).expanduser()
    if not folder.is_dir():
        if folder.exists() or not REPO_ID.match(str(source)):
            raise SourceNotFoundError(f"tokenizer {source}: neither a folder nor a Hub repo id (e.g. "
                                      f"cvssp/audioldm-s-full-v2)")
        folder, _ = download_repo(str(source), patterns=["tokenizer/*"])
    if (folder / "tokenizer").is_dir():
        return read_tokenizer(folder)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer").symlink_to(folder.resolve(), target_is_directory=True)
        return read_tokenizer(Path(tmp))


def convert_state(state: dict[str, torch.Tensor], *, file_name: str = "", model_name: Optional[str] = None,
                  compat: str = "original", use_ema: Optional[bool] = None,
                  progress: Optional[Callable[[str], None]] = None
                  ) -> tuple[AudioLDMConfig, dict[str, dict[str, torch.Tensor]], bool]:
    """An original LatentDiffusion state dict -> (our config, our state dict per component, whether
    the EMA weights were used). ``file_name`` helps infer the model name (see :func:`convert_original`).
    Works on meta tensors too (shapes only). progress: called with each component's name."""
    if compat not in COMPAT:
        raise InputError(f"unknown compat {compat!r}; choose one of {', '.join(COMPAT)}")
    parts, extras, ema = split_components(state, use_ema)
    mc = _need(parts["unet"], "time_embed.0.weight", "UNet").shape[1]
    name, head_channels = model_name_for(Path(file_name or "checkpoint"), model_name, mc)
    clap = clap_config(parts["clap"], compat)
    config = AudioLDMConfig(name=name, clap=clap, unet=unet_config(parts["unet"], head_channels, compat),
                            vae=vae_config(parts["vae"], extras.get("scale_factor")),
                            vocoder=vocoder_config(parts["vocoder"]), schedule=schedule_config(extras.get("betas")),
                            model_max_length=min(512, clap.max_positions - clap.pad_token_id - 1))
    u = config.unet
    stage1 = {"unet": tables.unet_table(len(u.block_channels), u.layers_per_block, u.attn_levels),
              "vae": tables.vae_table(len(config.vae.block_channels)), "vocoder": tables.VOCODER,
              "clap": tables.CLAP}
    tensors = {}
    for comp in COMPONENTS:
        if progress:
            progress(comp)
        named = remap(parts.pop(comp), stage1[comp], None, f"original {comp}")  # names only: cvssp's next
        if comp == "vocoder":  # the original never normalises its input: identity mean/scale
            like = next(iter(named.values()))
            named.setdefault("mean", torch.zeros(config.vocoder.model_in_dim, device=like.device))
            named.setdefault("scale", torch.ones(config.vocoder.model_in_dim, device=like.device))
        tensors[comp] = remap(named, cvssp_table(comp), expected_shapes(comp, config),
                              f"{comp} (original {file_name or 'checkpoint'})")
    return config, tensors, ema


def convert_original(ckpt_path: Any, *, model_name: Optional[str] = None, tokenizer_dir: Any = None,
                     compat: str = "original", use_ema: Optional[bool] = None, hash_files: bool = True,
                     progress: Optional[Callable[[str], None]] = None, clap_audio: bool = True) -> Converted:
    """Convert an original AudioLDM ``.ckpt`` in memory.

    model_name: one of ``s-full, s-full-v2, m-full, l-full, s-text-ft, m-text-ft`` (an ``audioldm-``
        prefix is accepted); ``None`` infers it from the file name or the UNet width.
    tokenizer_dir: required. The checkpoints carry no tokenizer (the original code loads roberta-base's
        at run time): a folder with roberta-base's ``vocab.json`` + ``merges.txt`` (e.g. the
        ``tokenizer/`` folder of any cvssp/audioldm* repo), a cvssp folder, or a Hub repo id such as
        ``cvssp/audioldm-s-full-v2`` (only its tokenizer files are fetched).
    compat: ``"original"`` reproduces the original code (per-level heads = channels / head size,
        CLAP LayerNorm eps 1e-5); ``"diffusers"`` gives the config diffusers' conversion gives
        (8 heads, eps 1e-12). See the module docstring.
    use_ema: take the EMA UNet weights (``model_ema.*``); ``None`` = when present (as the original
        code samples inside ``ema_scope`` and the cvssp repos were converted).
    clap_audio: keep the CLAP audio tower (``cond_stage_model.model.audio_branch/audio_projection``)
        as the optional component ``clap_audio`` (:mod:`convert.clap_audio`); False drops it.
    Returns a :class:`~convert.converted.Converted`; raises :class:`CheckpointError` on any unknown,
    missing or mis-shaped tensor.
    """
    if compat not in COMPAT:
        raise InputError(f"unknown compat {compat!r}; choose one of {', '.join(COMPAT)}")
    if tokenizer_dir is None:
        raise InputError("an original AudioLDM checkpoint carries no tokenizer (the original code downloads "
                         "roberta-base's at run time): pass tokenizer_dir= (CLI: --tokenizer DIR), a folder with "
                         "roberta-base's vocab.json and merges.txt, e.g. the tokenizer/ folder of a cvssp/audioldm repo")
    path = Path(ckpt_path).expanduser()
    tokenizer = read_tokenizer_dir(tokenizer_dir)
    state = read_lightning_checkpoint(path)
    config, tensors, ema = convert_state(state, file_name=path.name,
                                         model_name=model_name, compat=compat, use_ema=use_ema, progress=progress)
    extra_metadata = {}
    audio = original_audio_tensors(state) if clap_audio else {}
    if audio:
        audio_config, tensors["clap_audio"] = from_original(audio, f"clap_audio (original {path.name})")
        extra_metadata = metadata_for(audio_config)
    source = {"kind": "original", "path": str(path.resolve()), "model_name": config.name, "compat": compat, "ema": ema,
              "files": {path.name: sha256_file(path)} if hash_files else {}}
    return Converted(config=config, tokenizer=tokenizer, tensors=tensors, source=source, extra_metadata=extra_metadata)
