"""CLAP audio tower: HTS-AT (Chen et al. 2022, "HTS-AT: a hierarchical token-semantic audio
transformer"), a Swin transformer (Liu et al. 2021) over a log-mel folded into a square image, mean
pooling and a two-layer projection, as transformers' ``ClapAudioModelWithProjection`` (unfused) and
the original ``audioldm/clap/open_clip/htsat.py`` ``HTSAT_Swin_Transformer`` + ``CLAP.audio_projection``.

Module names mirror the transformers checkpoint (``audio_model.audio_encoder.layers.N.blocks.M.
attention.self.query``) so its keys map to themselves; ``convert/tables/clap_audio.py`` renames the
original's. The classification head of the original (``tscam_conv``, ``head``) is not built: CLAP
uses only the pooled embedding.

Topology is data: :class:`ClapAudioConfig` gives the widths, depths and heads; :class:`HTSAT`
derives each stage's grid, window and shift from them and passes ints to the stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .clap import Projection
from .errors import ConfigError, InputError


@dataclass(frozen=True)
class ClapAudioConfig:
    """HTS-AT size. HTSAT-tiny (s-full, s-full-v2, l-full): embed 96, depths (2, 2, 6, 2);
    HTSAT-base (m-full): embed 128, depths (2, 2, 12, 2). The pooled width is
    ``embed_dim * 2 ** (len(depths) - 1)`` (768 / 1024), projected to ``projection_dim``."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    spec_size: int = 256
    patch_size: int = 4
    mel_bins: int = 64
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    projection_dim: int = 512

    @property
    def hidden_size(self) -> int:
        """Width of the pooled feature (the last stage's)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def max_frames(self) -> int:
        """Mel frames the image holds: spec_size * (spec_size // mel_bins)."""
        return self.spec_size * (self.spec_size // self.mel_bins)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClapAudioConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown clap_audio config field(s): {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(names))}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) int64: for token pair (i, j) of a window, the row of the bias table holding their
    offset (dy, dx), as ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` (Swin, Liu et al. 2021, eq. 4)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, w*w)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), offsets shifted to >= 0
    return rel[0] * (2 * window - 1) + rel[1]


def windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, w*w, C), windows in row-major order."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def unwindow(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`windows`: (B, nW, w*w, C) -> (B, H, W, C)."""
    b, _, _, c = x.shape
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def shift_mask(res: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask of the shifted windows (Swin sec. 3.2): after the cyclic shift a
    window may hold tokens of up to 4 regions that were not adjacent; pairs from different regions
    get -100 (the source's value), others 0."""
    region = torch.zeros(res, dtype=torch.long)
    region[res - window:] += 1
    region[res - shift:] += 1
    label = (region[:, None] * 3 + region[None, :]).float()  # (H, W) region of each token
    lw = windows(label[None, :, :, None], window)[0, :, :, 0]  # (nW, N)
    diff = lw[:, None, :] - lw[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowSelfAttention(nn.Module):
    """Multi-head self-attention inside each window with a learnt relative position bias.
    x (B, nW, N, D) with N = window**2, mask (nW, N, N) additive or None -> (B, nW, N, D)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, nw, n, d = x.shape
        q, k, v = (p(x).view(b, nw, n, self.heads, -1).transpose(2, 3) for p in (self.query, self.key, self.value))
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (h, N, N)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, h, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, nW, h, N, d/h)
        return out.transpose(2, 3).reshape(b, nw, n, d)


class Dense(nn.Module):
    """``attention.output``: one Linear under the name ``dense``. (..., D) -> (..., D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class WindowAttention(nn.Module):
    """``attention.self`` + ``attention.output`` (the output projection)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.self = WindowSelfAttention(dim, heads, window)
        self.output = Dense(dim)


class Linear(nn.Module):
    """A Linear under the name ``dense`` (transformers' ``intermediate`` / ``output``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dense = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class SwinBlock(nn.Module):
    """Pre-LN Swin block: (shifted) window attention, then an MLP with exact GELU, both residual.
    x (B, res*res, D) -> (B, res*res, D). ``shift`` > 0 rolls the grid by -shift first (SW-MSA)."""

    def __init__(self, dim: int, heads: int, hidden: int, res: int, window: int, shift: int, eps: float):
        super().__init__()
        self.res, self.window, self.shift = res, window, shift
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.attention = WindowAttention(dim, heads, window)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.intermediate = Linear(dim, hidden)
        self.output = Linear(hidden, dim)
        mask = shift_mask(res, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        r, w, s = self.res, self.window, self.shift
        h = self.layernorm_before(x).view(b, r, r, d)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        att = self.attention.self(windows(h, w), self.attn_mask)
        h = unwindow(self.attention.output(att), w, r, r)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + h.reshape(b, n, d)
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, Linear 4D -> 2D
    without bias. x (B, res*res, D) -> (B, (res/2)**2, 2D)."""

    def __init__(self, dim: int, res: int, eps: float):
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        g = x.view(b, self.res, self.res, d)
        g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(g.reshape(b, -1, 4 * d)))


class Stage(nn.Module):
    """``depth`` Swin blocks (every second one shifted) on a res x res grid, then optional patch
    merging. (B, res*res, D) -> (B, res*res, D) or (B, (res/2)**2, 2D)."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, res: int, window: int, shift: int,
                 merge: bool, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, hidden, res, window, shift if i % 2 else 0, eps) for i in range(depth))
        self.downsample = PatchMerging(dim, res, eps) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> D channels, then LayerNorm. (B, 1, S, S) -> (B, (S/p)**2, D)."""

    def __init__(self, dim: int, patch: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class MelNorm(nn.Module):
    """Inference batch norm over the mel bins (the source's ``BatchNorm2d(64)`` on the transposed
    mel): (mel - running_mean) / sqrt(running_var + eps) * weight + bias. (B, T, M) -> (B, T, M)."""

    def __init__(self, bins: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(bins))
        self.bias = nn.Parameter(torch.zeros(bins))
        self.register_buffer("running_mean", torch.zeros(bins))
        self.register_buffer("running_var", torch.ones(bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x.transpose(1, 2), self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps).transpose(1, 2)


class Encoder(nn.Module):
    """HTS-AT body: mel norm, mel -> image, patch embed, stages, final LayerNorm.
    Takes the topology as plain ints and tuples; :class:`HTSAT` derives them from the config."""

    def __init__(self, mel_bins: int, spec_size: int, patch: int, dims: tuple[int, ...], depths: tuple[int, ...],
                 heads: tuple[int, ...], grids: tuple[int, ...], wins: tuple[int, ...], mlp_ratio: float,
                 ln_eps: float, bn_eps: float):
        super().__init__()
        self.spec_size, self.freq_ratio = spec_size, spec_size // mel_bins
        self.batch_norm = MelNorm(mel_bins, bn_eps)
        self.patch_embed = PatchEmbed(dims[0], patch, ln_eps)
        last = len(depths) - 1
        self.layers = nn.ModuleList(
            Stage(dims[i], depths[i], heads[i], int(dims[i] * mlp_ratio), grids[i], wins[i],
                  wins[i] // 2 if grids[i] > wins[i] else 0, i < last, ln_eps)
            for i in range(len(depths)))
        self.norm = nn.LayerNorm(dims[-1], eps=ln_eps)

    def to_image(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) normalised mel -> (B, 1, S, S): bicubic (align_corners) stretch of the time axis
        to S * r frames (r = S // M), then the r consecutive time chunks stacked along the
        frequency axis (``reshape_wav2img``)."""
        b, t, m = mel.shape
        target = self.spec_size * self.freq_ratio
        x = mel[:, None]
        if t < target:
            x = F.interpolate(x, (target, m), mode="bicubic", align_corners=True)
        r = self.freq_ratio
        x = x.view(b, r, target // r, m).transpose(2, 3)  # (B, r, M, S)
        return x.reshape(b, 1, r * m, target // r)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, M) log-mel in dB -> (B, D_last) mean of the final tokens."""
        x = self.patch_embed(self.to_image(self.batch_norm(mel)))
        for stage in self.layers:
            x = stage(x)
        # the source's grouped reshape before AdaptiveAvgPool1d only reorders tokens: a plain mean
        return self.norm(x).mean(dim=1)


class AudioModel(nn.Module):
    """``audio_model``: holds the encoder under transformers' name."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.audio_encoder = encoder


class HTSAT(nn.Module):
    """CLAP audio tower: log-mel (B, T, mel_bins) with T <= ``cfg.max_frames`` (1001 frames for
    10 s at 48 kHz, hop 480) -> (B, projection_dim) L2-normalised embedding."""

    def __init__(self, cfg: ClapAudioConfig):
        super().__init__()
        n = len(cfg.depths)
        if len(cfg.num_heads) != n or n < 1:
            raise ConfigError(f"depths {cfg.depths} and num_heads {cfg.num_heads} must be non-empty and "
                              f"of equal length")
        if cfg.spec_size % cfg.mel_bins or cfg.spec_size % (cfg.patch_size * 2 ** (n - 1)):
            raise ConfigError(f"spec_size {cfg.spec_size} must be a multiple of mel_bins {cfg.mel_bins} and of "
                              f"patch_size * 2**(stages - 1) = {cfg.patch_size * 2 ** (n - 1)}")
        grids = tuple(cfg.spec_size // cfg.patch_size // 2 ** i for i in range(n))
        # a grid no larger than the window is one unshifted window (Swin's rule)
        wins = tuple(min(cfg.window_size, g) for g in grids)
        if any(g % w for g, w in zip(grids, wins)):
            raise ConfigError(f"stage grids {grids} must be multiples of window_size {cfg.window_size}")
        if any(w != cfg.window_size for w in wins):
            raise ConfigError(f"stage grids {grids} must not be smaller than window_size {cfg.window_size}")
        dims = tuple(cfg.embed_dim * 2 ** i for i in range(n))
        self.cfg = cfg
        self.audio_model = AudioModel(Encoder(cfg.mel_bins, cfg.spec_size, cfg.patch_size, dims, cfg.depths,
                                              cfg.num_heads, grids, wins, cfg.mlp_ratio, cfg.layer_norm_eps,
                                              cfg.batch_norm_eps))
        self.audio_projection = Projection(cfg.hidden_size, cfg.projection_dim)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, mel_bins) -> (B, hidden_size) pooled features before the projection."""
        c = self.cfg
        if mel.ndim != 3 or mel.shape[2] != c.mel_bins or not 1 < mel.shape[1] <= c.max_frames:
            raise InputError(f"mel must be (B, T, {c.mel_bins}) with 1 < T <= {c.max_frames}; "
                             f"got {tuple(mel.shape)}")
        return self.audio_model.audio_encoder(mel)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, mel_bins) -> (B, projection_dim) unit-norm CLAP audio embedding."""
        return F.normalize(self.audio_projection(self.features(mel)), dim=-1)
