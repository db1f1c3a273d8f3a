"""Building blocks shared by the UNet and the VAE (and anything else that needs them).

Modules are named like their diffusers counterparts so checkpoint keys map to themselves. Every
class takes plain ints; none holds a non-persistent buffer (our strict loader fills every tensor
from the checkpoint, so anything derived is computed in ``forward``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


# Query rows x key columns above which attention runs in query chunks (2^27 fp32 scores = 512 MiB).
ATTN_CHUNK_ELEMENTS = 2**27

# --- dtype policy: what stays in float32 when the model runs in half precision ------------------------
# - Components: with float16 the VAE and the vocoder run in float32 (their activations overflow fp16 on
#   real checkpoints: the NaN/silence reports against diffusers' pipeline); bfloat16 has float32's range
#   and applies to every component. See component_dtype.
# - Ops, whatever the component's dtype: timestep features (timestep_embedding, as diffusers), nearest
#   upsampling of bfloat16 (no kernel on some backends) and the tiled VAE decode's GroupNorm statistics
#   (vae.py), each through float32().
FLOAT32_COMPONENTS_IN_FLOAT16 = ("vae", "vocoder")


def component_dtype(component: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype a component runs in when the pipeline is asked for ``dtype``."""
    return torch.float32 if dtype == torch.float16 and component in FLOAT32_COMPONENTS_IN_FLOAT16 else dtype


def float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 for an op the policy above computes in float32 (a no-op for float32 input)."""
    return x.float()


def timestep_embedding(t: torch.Tensor, dim: int, *, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features (DDPM, Ho et al. 2020; diffusers ``get_timestep_embedding``).

    t: (B,) int or float timesteps -> (B, dim) float32. Frequencies are
    ``exp(-ln(max_period) * i / (dim/2 - freq_shift))``; ``[cos, sin]`` when ``flip_sin_to_cos``.
    """
    if t.ndim != 1:
        raise ValueError(f"timesteps must be 1-D (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = float32(t)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with an optional timestep projection.

    diffusers ``ResnetBlock2D`` with ``time_embedding_norm="default"``, ``output_scale_factor=1``.
    x: (B, in_ch, H, W), temb: (B, temb_ch) or None -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_ch: Optional[int], groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_ch, out_ch) if temb_ch else None
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            if temb is None:
                raise ValueError("this ResnetBlock needs a timestep embedding")
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution halving H and W.

    ``asymmetric_pad=False``: padding 1 on every side (UNet). ``True``: pad right/bottom by one and
    no conv padding (the VAE encoder, diffusers ``Downsample2D(padding=0)``).
    x: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)) (or floor((H-1)/2)+1 for the asymmetric form).
    """

    def __init__(self, channels: int, asymmetric_pad: bool = False):
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 convolution.

    x: (B, C, H, W) -> (B, C, 2H, 2W), or (B, C, *size) when ``size`` is given (the UNet passes the
    skip tensor's size so odd lengths round-trip, as diffusers does).

    An exact 2x upsample runs as one stride-2 transposed convolution with a 4x4 kernel folded from the
    3x3 one (:func:`fold_upsample_kernel`): every output pixel of "nearest 2x, then 3x3 conv" sees a
    2x2 patch of the input, so it costs 16 instead of 36 multiply-adds per input pixel and never
    materialises the 4x larger upsampled tensor. Same function; only float rounding differs (about
    1e-6 relative in fp32). Grids under ``FOLD_MIN_PIXELS`` input pixels keep the plain path, which is
    faster there on CPU.
    """

    FOLD_MIN_PIXELS = 64

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.register_load_state_dict_post_hook(lambda module, _: module.clear_folded())
        self._folded: Optional[torch.Tensor] = None  # derived from conv.weight: not in the state dict

    def folded_weight(self) -> torch.Tensor:
        """The (C_in, C_out, 4, 4) transposed-convolution kernel equal to this layer's 3x3 conv after
        nearest 2x upsampling (:func:`fold_upsample_kernel`).

        Folded on first use after the weights are loaded or moved (``load_state_dict``, ``.to()``
        and every other ``_apply`` clear it), then reused. Recomputed, differentiably, whenever
        autograd needs it, and traced into the graph under ``torch.compile``. A weight changed in
        place by other means needs :meth:`clear_folded`.
        """
        w = self.conv.weight
        if (torch.is_grad_enabled() and w.requires_grad) or torch.compiler.is_compiling():
            return fold_upsample_kernel(w)
        if self._folded is None:
            self._folded = fold_upsample_kernel(w.detach())
        return self._folded

    def clear_folded(self) -> None:
        """Forget the folded kernel; the next forward folds the current weight again."""
        self._folded = None

    def _apply(self, fn, recurse: bool = True):
        self.clear_folded()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (size is None or tuple(size) == (2 * h, 2 * w)) and h * w >= self.FOLD_MIN_PIXELS:
            return F.conv_transpose2d(x, self.folded_weight(), self.conv.bias, stride=2, padding=1)
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling has no bf16 kernel on some backends
            x = float32(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x.to(dtype))


def fold_upsample_kernel(w: torch.Tensor) -> torch.Tensor:
    """3x3 conv weight (C_out, C_in, 3, 3) -> (C_in, C_out, 4, 4) kernel of ``conv_transpose2d(stride=2,
    padding=1)`` computing the same function as nearest 2x upsampling followed by the 3x3 conv (padding 1).

    Per axis, with taps w0, w1, w2 (offsets -1, 0, +1): an even output row 2i sees input rows i-1 (w0)
    and i (w1 + w2); an odd row 2i+1 sees rows i (w0 + w1) and i+1 (w2). The transposed convolution
    places input row i's kernel tap k at output row 2i - 1 + k, so the taps are (w2, w1 + w2, w0 + w1, w0).
    """
    def axis(k: torch.Tensor, dim: int) -> torch.Tensor:
        a, b, c = k.unbind(dim)
        return torch.stack([c, b + c, a + b, a], dim)

    return axis(axis(w, 2), 3).transpose(0, 1).contiguous()


class Attention(nn.Module):
    """Multi-head attention over a sequence, via ``scaled_dot_product_attention``.

    diffusers ``Attention`` without its norms: ``to_q``/``to_k``/``to_v`` projections (bias per
    ``qkv_bias``), ``to_out.0`` output projection with bias.
    x: (B, N, dim), context: (B, M, kv_dim) or None (self-attention) -> (B, N, dim).
    """

    def __init__(self, dim: int, heads: int, kv_dim: Optional[int] = None, qkv_bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide dim {dim}")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        m = context.shape[1]
        if n * m <= ATTN_CHUNK_ELEMENTS:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # long sequences (e.g. a minute of audio in the VAE): bound the score matrix per chunk,
            # whichever SDPA kernel the backend picks, so memory stays linear in length
            rows = max(1, ATTN_CHUNK_ELEMENTS // m)
            out = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + rows], k, v) for i in range(0, n, rows)],
                            dim=2)
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, d))
