"""Key tables: the CLAP audio tower (HTS-AT + projection) -> audioldm_core names.

``TRANSFORMERS``: transformers ``ClapAudioModelWithProjection`` / the audio half of ``ClapModel``
(``laion/clap-htsat-unfused``). Our modules mirror its names, so only derived buffers are dropped:
the relative position index (rebuilt from the window size) and BatchNorm's step counter.

``ORIGINAL``: the original AudioLDM ``.ckpt`` (``cond_stage_model.model.`` stripped), open_clip's
``CLAP.audio_branch`` (``htsat.py`` ``HTSAT_Swin_Transformer``) and ``CLAP.audio_projection``
(``nn.Sequential(Linear, ReLU, Linear)``) -> the transformers names, so ``TRANSFORMERS`` then
applies. The fused ``attn.qkv`` Linear is split into query/key/value rows (in that order, as
``WindowAttention.forward`` reshapes it to (3, heads, head_dim)). Dropped: the frozen torchlibrosa
STFT/mel tensors (rebuilt in ``audioldm_core/clap_frontend.py``), the shifted-window masks, the
relative position index, the AudioSet classification head (``tscam_conv``, ``head``) which CLAP
does not use, and BatchNorm's step counter.
"""

from __future__ import annotations

import re

import torch

from convert.remap import KeyTable

ENC = "audio_model.audio_encoder."

TRANSFORMERS = KeyTable(unused=(
    re.escape(ENC) + r"layers\.\d+\.blocks\.\d+\.attention\.self\.relative_position_index",
    re.escape(ENC) + r"batch_norm\.num_batches_tracked",
))


def _split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"(audio_branch\.layers\.\d+\.blocks\.\d+\.attn)\.qkv\.(weight|bias)", k)
        if m is None:
            out[k] = v
            continue
        for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
            out[f"{m.group(1)}.{name}.{m.group(2)}"] = part.contiguous()
    return out


_BLOCK = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_BLOCK_TO = ENC + r"layers.\1.blocks.\2."

ORIGINAL = KeyTable(
    renames=(
        (r"audio_branch\.bn0\.(weight|bias|running_mean|running_var)", ENC + r"batch_norm.\1"),
        (r"audio_branch\.patch_embed\.(proj|norm)\.(weight|bias)", ENC + r"patch_embed.\1.\2"),
        (_BLOCK + r"norm1\.(weight|bias)", _BLOCK_TO + r"layernorm_before.\3"),
        (_BLOCK + r"attn\.relative_position_bias_table", _BLOCK_TO + r"attention.self.relative_position_bias_table"),
        (_BLOCK + r"attn\.(query|key|value)\.(weight|bias)", _BLOCK_TO + r"attention.self.\3.\4"),
        (_BLOCK + r"attn\.proj\.(weight|bias)", _BLOCK_TO + r"attention.output.dense.\3"),
        (_BLOCK + r"norm2\.(weight|bias)", _BLOCK_TO + r"layernorm_after.\3"),
        (_BLOCK + r"mlp\.fc1\.(weight|bias)", _BLOCK_TO + r"intermediate.dense.\3"),
        (_BLOCK + r"mlp\.fc2\.(weight|bias)", _BLOCK_TO + r"output.dense.\3"),
        (r"audio_branch\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
         ENC + r"layers.\1.downsample.\2.\3"),
        (r"audio_branch\.norm\.(weight|bias)", ENC + r"norm.\1"),
        (r"audio_projection\.0\.(weight|bias)", r"audio_projection.linear1.\1"),
        (r"audio_projection\.2\.(weight|bias)", r"audio_projection.linear2.\1"),
    ),
    unused=(
        r"audio_branch\.bn0\.num_batches_tracked",
        r"audio_branch\.(spectrogram_extractor|logmel_extractor)\..+",
        _BLOCK + r"attn\.relative_position_index",
        _BLOCK + r"attn_mask",
        r"audio_branch\.(tscam_conv|head)\.(weight|bias)",
    ),
    prepare=_split_qkv,
)
