"""The AudioLDM UNet (Liu et al. 2023; diffusers ``UNet2DConditionModel`` with AudioLDM's config).

Not a general UNet: the conditioning is the L2-normalised CLAP embedding (B, 512), linearly
projected and *concatenated* to the sinusoidal timestep embedding (``class_embed_type=
"simple_projection"``, ``class_embeddings_concat=True``); there are no text states, so each
transformer block's second attention attends to its own input. Topology is data: ``attn_levels``
says which levels have transformer blocks; one :class:`DownLevel` / :class:`UpLevel` class serves
every level.

Heads: diffusers' config field ``attention_head_dim`` is used as the *number of heads* (a misnomer
it keeps for compatibility); our ``UNetConfig.num_heads`` holds that number, so head size is
``channels // num_heads``. The original AudioLDM code used ``channels // 32`` heads instead.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .errors import InputError
from .layers import Attention, Downsample, ResnetBlock, Upsample, timestep_embedding


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): proj to 2*hidden, ``a * gelu(b)``. (…, dim) -> (…, hidden)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU then a linear back to ``dim`` (named ``net.0``/``net.2`` like diffusers)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, a second self-attention (AudioLDM passes no text states), GEGLU
    feed-forward, each residual (diffusers ``BasicTransformerBlock``). (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x))
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 conv in, one :class:`TransformerBlock` over the H*W positions, 1x1 conv out,
    plus the input (diffusers ``Transformer2DModel``, continuous input, conv projections).
    x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            seq = block(seq)
        seq = seq.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj_out(seq) + x


class DownLevel(nn.Module):
    """``n`` resnets (each followed by a transformer when ``attn``), then an optional stride-2
    downsample. Returns the output and every intermediate state the up path will concatenate."""

    def __init__(self, in_ch: int, out_ch: int, n: int, temb: int, groups: int, eps: float, attn: bool,
                 heads: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch, temb, groups, eps)
                                     for i in range(n))
        if attn:
            self.attentions = nn.ModuleList(SpatialTransformer(out_ch, heads, groups) for _ in range(n))
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample(out_ch)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        attns = getattr(self, "attentions", None)
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if attns is not None:
                x = attns[i](x)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpLevel(nn.Module):
    """``n`` resnets, each on [x, skip] concatenated (and a transformer when ``attn``), then an
    optional nearest 2x upsample to the size of the next skip (so odd lengths round-trip)."""

    def __init__(self, in_ch: int, out_ch: int, prev_ch: int, n: int, temb: int, groups: int, eps: float,
                 attn: bool, heads: int, upsample: bool):
        super().__init__()
        # diffusers UpBlock2D: resnet j sees the previous output (prev_ch for j=0, else out_ch) plus a
        # skip of out_ch channels, except the last one, whose skip comes from the level's input side.
        self.resnets = nn.ModuleList(
            ResnetBlock((prev_ch if j == 0 else out_ch) + (in_ch if j == n - 1 else out_ch), out_ch, temb, groups, eps)
            for j in range(n))
        if attn:
            self.attentions = nn.ModuleList(SpatialTransformer(out_ch, heads, groups) for _ in range(n))
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(out_ch)])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor,
                size: Optional[tuple[int, int]]) -> torch.Tensor:
        attns = getattr(self, "attentions", None)
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if attns is not None:
                x = attns[i](x)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, size)
        return x


class MidBlock(nn.Module):
    """resnet -> transformer -> resnet at the lowest resolution. (B, C, H, W) -> same."""

    def __init__(self, ch: int, temb: int, groups: int, eps: float, heads: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, temb, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(ch, heads, groups)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class TimestepMLP(nn.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers ``TimestepEmbedding``). (B, in) -> (B, out)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet(nn.Module):
    """Noise predictor: x (B, C, T, F) latents, t timesteps, class_emb (B, 512) -> (B, C, T, F)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.block_channels
        g, eps, n = cfg.norm_groups, cfg.norm_eps, cfg.layers_per_block
        time_dim = ch[0] * 4
        temb = 2 * time_dim  # the class embedding is concatenated to the time embedding
        self.time_embedding = TimestepMLP(ch[0], time_dim)
        self.class_embedding = nn.Linear(cfg.class_embed_dim, time_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        last = len(ch) - 1
        self.down_blocks = nn.ModuleList(
            DownLevel(ch[max(i - 1, 0)], ch[i], n, temb, g, eps, cfg.attn_levels[i], cfg.num_heads[i], i < last)
            for i in range(len(ch)))
        self.mid_block = MidBlock(ch[-1], temb, g, eps, cfg.num_heads[-1])
        self.up_blocks = nn.ModuleList()
        for i in range(len(ch)):
            lvl = last - i  # the down level this up level mirrors
            self.up_blocks.append(UpLevel(ch[max(lvl - 1, 0)], ch[lvl], ch[min(lvl + 1, last)], n + 1, temb, g, eps,
                                          cfg.attn_levels[lvl], cfg.num_heads[lvl], i < last))
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def _check(self, x: torch.Tensor, class_emb: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"latents must be (B, {self.cfg.in_channels}, T, F), got {got}")
        if not isinstance(class_emb, torch.Tensor) or class_emb.ndim != 2 \
                or class_emb.shape[1] != self.cfg.class_embed_dim:
            got = tuple(class_emb.shape) if isinstance(class_emb, torch.Tensor) else type(class_emb).__name__
            raise InputError(f"class_emb must be (B, {self.cfg.class_embed_dim}) CLAP embeddings, got {got}")
        if class_emb.shape[0] != x.shape[0]:
            raise InputError(f"batch mismatch: {x.shape[0]} latents but {class_emb.shape[0]} embeddings")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):  # no graph break when compiled
            raise InputError("latents contain NaN or Inf")

    def forward(self, x: torch.Tensor, t: Union[torch.Tensor, int, float], class_emb: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, F) latents (any T, F); t: (B,) or scalar timestep(s), int or float;
        class_emb: (B, class_embed_dim) -> predicted noise (B, out_channels, T, F) in x's dtype."""
        self._check(x, class_emb)
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t[None]
        if t.ndim != 1 or t.shape[0] not in (1, b):
            raise InputError(f"timesteps must be a scalar or (B,) = ({b},), got shape {tuple(t.shape)}")
        t = t.expand(b)
        t_emb = timestep_embedding(t, self.cfg.block_channels[0], flip_sin_to_cos=True, freq_shift=0).to(x.dtype)
        temb = torch.cat([self.time_embedding(t_emb), self.class_embedding(class_emb).to(x.dtype)], dim=-1)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down_blocks:
            h, s = level(h, temb)
            skips.extend(s)
        h = self.mid_block(h, temb)
        for up in self.up_blocks:
            n = len(up.resnets)
            level_skips, skips = skips[-n:], skips[:-n]
            size = tuple(skips[-1].shape[2:]) if skips else None
            h = up(h, level_skips, temb, size)
        return self.conv_out(F.silu(self.conv_norm_out(h)))
