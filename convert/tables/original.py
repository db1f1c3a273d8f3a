"""Key tables: the original AudioLDM Lightning checkpoint -> the cvssp (diffusers/transformers) names.

An original ``.ckpt`` (``audioldm-s-full.ckpt`` etc., github.com/haoheliu/AudioLDM) holds one
``LatentDiffusion`` state dict. Its top-level prefixes split it into our four components:

==========================================  ==========  ==========================================
original prefix                             component   original module
==========================================  ==========  ==========================================
``model.diffusion_model.``                  unet        ``latent_diffusion/openaimodel.UNetModel``
``model_ema.`` (dots removed, see below)    unet        ``latent_diffusion/ema.LitEma``
``first_stage_model.vocoder.``              vocoder     ``hifigan/models.Generator``
``first_stage_model.``                      vae         ``variational_autoencoder/autoencoder.py``
``cond_stage_model.model.text_branch.``     clap        transformers ``RobertaModel`` (roberta-base)
``cond_stage_model.model.text_projection.`` clap        ``nn.Sequential(Linear, ReLU, Linear)``
==========================================  ==========  ==========================================

Each table here renames one component's original keys to the names the cvssp repos use (the names
diffusers' ``scripts/convert_original_audioldm_to_diffusers.py`` produces); the cvssp tables in the
sibling modules then take them to ours. The UNet and VAE tables depend on the topology (block
indices are flat in the original), so they are built from the shapes by functions, not constants.
"""

from __future__ import annotations

import re

import torch

from convert.remap import KeyTable

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VOCODER_PREFIX = "first_stage_model.vocoder."
VAE_PREFIX = "first_stage_model."
CLAP_PREFIX = "cond_stage_model.model."

# Top-level keys of the LatentDiffusion state dict that belong to no component we keep: the DDPM
# schedule buffers (ddpm.py register_schedule; derived from the schedule config, which
# ``betas`` is checked against), the learnt-logvar parameter, the LitEma counters, the latent scale
# (``scale_factor``, read into the VAE config), the CLAP audio branch (taken separately as the optional
# ``clap_audio`` component by convert/clap_audio.py, or dropped) and training-only heads.
UNUSED_TOP = (
    r"(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod"
    r"|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod"
    r"|posterior_variance|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2"
    r"|lvlb_weights|logvar|scale_factor)",
    r"model_ema\.(decay|num_updates)",
    r"cond_stage_model\.model\.(audio_branch|audio_projection|audio_transform|text_transform)\..+",
    r"cond_stage_model\.model\.(logit_scale_a|logit_scale_t|attn_mask)",
)

# --- UNet (openaimodel.UNetModel -> diffusers UNet2DConditionModel) -----------------------------

# openaimodel.ResBlock sub-modules -> diffusers ResnetBlock2D
_RESNET = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
           ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))


def _resnet(src: str, dst: str) -> list[tuple[str, str]]:
    return [(re.escape(f"{src}.{a}.") + r"(weight|bias)", f"{dst}.{b}.\\1") for a, b in _RESNET]


def _subtree(src: str, dst: str) -> list[tuple[str, str]]:
    # SpatialTransformer: every name below it (norm, proj_in, transformer_blocks.0.attn1.to_q, ff.net.0.proj,
    # proj_out) is already the diffusers Transformer2DModel name.
    return [(re.escape(f"{src}.") + r"(.+)", f"{dst}.\\1")]


def unet_table(levels: int, layers: int, attn_levels: tuple[bool, ...]) -> KeyTable:
    """Original UNet keys (without ``model.diffusion_model.``) -> diffusers names.

    The original numbers its blocks flat: ``input_blocks.0`` is conv_in, then per level ``layers``
    blocks of (ResBlock[, SpatialTransformer]) and, except at the last level, one Downsample;
    ``middle_block`` is (ResBlock, SpatialTransformer, ResBlock); ``output_blocks`` runs the levels
    in reverse with ``layers + 1`` blocks each, the last also holding the Upsample.
    """
    r: list[tuple[str, str]] = [
        (r"time_embed\.0\.(weight|bias)", r"time_embedding.linear_1.\1"),
        (r"time_embed\.2\.(weight|bias)", r"time_embedding.linear_2.\1"),
        (r"film_emb\.(weight|bias)", r"class_embedding.\1"),
        (r"input_blocks\.0\.0\.(weight|bias)", r"conv_in.\1"),
        (r"out\.0\.(weight|bias)", r"conv_norm_out.\1"),
        (r"out\.2\.(weight|bias)", r"conv_out.\1"),
    ]
    k = 1
    for lvl in range(levels):
        for j in range(layers):
            r += _resnet(f"input_blocks.{k}.0", f"down_blocks.{lvl}.resnets.{j}")
            if attn_levels[lvl]:
                r += _subtree(f"input_blocks.{k}.1", f"down_blocks.{lvl}.attentions.{j}")
            k += 1
        if lvl < levels - 1:
            r.append((rf"input_blocks\.{k}\.0\.op\.(weight|bias)", rf"down_blocks.{lvl}.downsamplers.0.conv.\1"))
            k += 1
    r += _resnet("middle_block.0", "mid_block.resnets.0")
    r += _subtree("middle_block.1", "mid_block.attentions.0")
    r += _resnet("middle_block.2", "mid_block.resnets.1")
    k = 0
    for i in range(levels):
        lvl = levels - 1 - i
        for j in range(layers + 1):
            r += _resnet(f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}")
            if attn_levels[lvl]:
                r += _subtree(f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}")
            if j == layers and i < levels - 1:
                at = 2 if attn_levels[lvl] else 1
                r.append((rf"output_blocks\.{k}\.{at}\.conv\.(weight|bias)", rf"up_blocks.{i}.upsamplers.0.conv.\1"))
            k += 1
    return KeyTable(renames=tuple(r))


def ema_key(unet_key: str) -> str:
    """The LitEma buffer holding the EMA of ``model.diffusion_model.<unet_key>``.

    LitEma (latent_diffusion/ema.py) registers one buffer per parameter of ``model`` (the
    DiffusionWrapper), named by the parameter name with its dots removed:
    ``diffusion_model.input_blocks.0.0.weight`` -> ``model_ema.diffusion_modelinput_blocks00weight``.
    """
    return EMA_PREFIX + ("diffusion_model." + unet_key).replace(".", "")


# --- VAE (variational_autoencoder/modules.py Encoder/Decoder -> diffusers AutoencoderKL) ----------

_VAE_RESNET = r"(norm1|conv1|norm2|conv2)\.(weight|bias)"


def _attn_conv_to_linear(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original mid-block attention uses 1x1 convs (C, C, 1, 1); diffusers uses Linear (C, C)."""
    out = {}
    for k, v in state.items():
        if re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight", k) and v.ndim == 4:
            v = v[:, :, 0, 0]
        out[k] = v
    return out


def vae_table(levels: int) -> KeyTable:
    """Original first-stage keys (without ``first_stage_model.``, vocoder excluded) -> diffusers names.

    The decoder's ``up.{i}`` counts from the lowest resolution's *last* index: ``up.{levels-1}`` runs
    first, so it is diffusers' ``up_blocks.0``.
    """
    r: list[tuple[str, str]] = []
    for side in ("encoder", "decoder"):
        r += [
            (rf"{side}\.mid\.block_1\.{_VAE_RESNET}", rf"{side}.mid_block.resnets.0.\1.\2"),
            (rf"{side}\.mid\.block_2\.{_VAE_RESNET}", rf"{side}.mid_block.resnets.1.\1.\2"),
            (rf"{side}\.mid\.attn_1\.norm\.(weight|bias)", rf"{side}.mid_block.attentions.0.group_norm.\1"),
            (rf"{side}\.mid\.attn_1\.q\.(weight|bias)", rf"{side}.mid_block.attentions.0.to_q.\1"),
            (rf"{side}\.mid\.attn_1\.k\.(weight|bias)", rf"{side}.mid_block.attentions.0.to_k.\1"),
            (rf"{side}\.mid\.attn_1\.v\.(weight|bias)", rf"{side}.mid_block.attentions.0.to_v.\1"),
            (rf"{side}\.mid\.attn_1\.proj_out\.(weight|bias)", rf"{side}.mid_block.attentions.0.to_out.0.\1"),
            (rf"{side}\.norm_out\.(weight|bias)", rf"{side}.conv_norm_out.\1"),
        ]
    r += [
        (rf"encoder\.down\.(\d+)\.block\.(\d+)\.{_VAE_RESNET}", r"encoder.down_blocks.\1.resnets.\2.\3.\4"),
        (r"encoder\.down\.(\d+)\.block\.(\d+)\.nin_shortcut\.(weight|bias)",
         r"encoder.down_blocks.\1.resnets.\2.conv_shortcut.\3"),
        (r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", r"encoder.down_blocks.\1.downsamplers.0.conv.\2"),
    ]
    for i in range(levels):
        j = levels - 1 - i
        r += [
            (rf"decoder\.up\.{i}\.block\.(\d+)\.{_VAE_RESNET}", rf"decoder.up_blocks.{j}.resnets.\1.\2.\3"),
            (rf"decoder\.up\.{i}\.block\.(\d+)\.nin_shortcut\.(weight|bias)",
             rf"decoder.up_blocks.{j}.resnets.\1.conv_shortcut.\2"),
            (rf"decoder\.up\.{i}\.upsample\.conv\.(weight|bias)", rf"decoder.up_blocks.{j}.upsamplers.0.conv.\1"),
        ]
    return KeyTable(renames=tuple(r), prepare=_attn_conv_to_linear)


# --- Vocoder (hifigan/models.Generator -> transformers SpeechT5HifiGan) -----------------------------
# Only the upsampler's name differs; weight norm (if the file still has it) is folded by the cvssp
# vocoder table. The original has no ``mean``/``scale`` (it never normalises its input): the
# converter adds the identity values, as diffusers' conversion script does.
VOCODER = KeyTable(renames=((r"ups\.(\d+)\.(.+)", r"upsampler.\1.\2"),))

# --- CLAP text tower (open_clip CLAP, text_branch = RobertaModel) -> ClapTextModelWithProjection ---
CLAP = KeyTable(renames=(
    (r"text_branch\.(.+)", r"text_model.\1"),
    (r"text_projection\.0\.(weight|bias)", r"text_projection.linear1.\1"),
    (r"text_projection\.2\.(weight|bias)", r"text_projection.linear2.\1"),
))
