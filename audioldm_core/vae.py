"""KL autoencoder between log-mel spectrograms and AudioLDM latents (Rombach et al. 2022, as in
diffusers' ``AutoencoderKL``).

Encoder: conv_in, per level ``layers_per_block`` resnets (+ a stride-2 downsample except at the last
level), mid block (resnet, single-head self-attention, resnet), GroupNorm-SiLU-conv_out to
2 x latent channels, quant_conv -> (mean, logvar). Decoder: post_quant_conv, conv_in, mid block,
per level ``layers_per_block + 1`` resnets (+ nearest 2x upsample except at the last), GroupNorm-SiLU-
conv_out. One ``Level`` class serves both paths; its resampler is data.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig
from .errors import InputError
from .layers import Attention, Downsample, ResnetBlock, Upsample, float32
from .noise import randn_tensor

EPS = 1e-6  # every VAE GroupNorm, as diffusers' AutoencoderKL


class SpatialAttention(nn.Module):
    """GroupNorm then one-head self-attention over all H*W positions, plus the input (diffusers
    ``Attention`` with ``residual_connection=True`` as the VAE mid block uses it).
    x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.attn = Attention(channels, heads=1, qkv_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        return x + self.attn(seq).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution. x: (B, C, H, W) -> same."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, None, groups, EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Level(nn.Module):
    """``n`` resnets then an optional resampler ("down", "up" or None). (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, in_ch: int, out_ch: int, n: int, groups: int, resample: Optional[str]):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, EPS)
                                     for i in range(n))
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(out_ch, asymmetric_pad=True)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(out_ch)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        for m in getattr(self, "downsamplers", ()):
            x = m(x)
        for m in getattr(self, "upsamplers", ()):
            x = m(x)
        return x


class Encoder(nn.Module):
    """(B, in_ch, T, F) -> (B, 2*latent, T/2^(L-1), F/2^(L-1)) moments."""

    def __init__(self, in_ch: int, latent: int, channels: tuple[int, ...], layers: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            Level(channels[max(i - 1, 0)], c, layers, groups, None if i == last else "down")
            for i, c in enumerate(channels))
        self.mid_block = MidBlock(channels[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=EPS)
        self.conv_out = nn.Conv2d(channels[-1], 2 * latent, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down_blocks:
            x = level(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """(B, latent, t, f) -> (B, out_ch, t*2^(L-1), f*2^(L-1))."""

    def __init__(self, latent: int, out_ch: int, channels: tuple[int, ...], layers: int, groups: int):
        super().__init__()
        rev = tuple(reversed(channels))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups)
        last = len(rev) - 1
        self.up_blocks = nn.ModuleList(
            Level(rev[max(i - 1, 0)], c, layers + 1, groups, None if i == last else "up")
            for i, c in enumerate(rev))
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=EPS)
        self.conv_out = nn.Conv2d(channels[0], out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            x = level(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VAE(nn.Module):
    """The AudioLDM autoencoder. ``scaling_factor`` (from the checkpoint config) is what the
    pipeline divides latents by before :meth:`decode`; this module itself works on unscaled latents."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.scaling_factor = cfg.scaling_factor
        self.factor = 2 ** (len(cfg.block_channels) - 1)
        self.encoder = Encoder(cfg.in_channels, cfg.latent_channels, cfg.block_channels, cfg.layers_per_block,
                               cfg.norm_groups)
        self.decoder = Decoder(cfg.latent_channels, cfg.out_channels, cfg.block_channels, cfg.layers_per_block,
                               cfg.norm_groups)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{what} must be a (B, {channels}, T, F) tensor, got {got}")
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise InputError(f"{what} has an empty axis: {tuple(x.shape)}")

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, 1, T, 64) -> posterior (mean, logvar), each (B, 8, T/4, 16); logvar clamped to
        [-30, 20] as diffusers' DiagonalGaussianDistribution."""
        self._check(mel, self.cfg.in_channels, "mel")
        moments = self.quant_conv(self.encoder(mel))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor,
               generator: Union[torch.Generator, Sequence[torch.Generator], None] = None) -> torch.Tensor:
        """Reparameterised posterior sample ``mean + exp(logvar/2) * noise``: mean, logvar (B, 8, t, 16)
        -> (B, 8, t, 16), dtype of ``mean``.

        The noise is drawn as diffusers' ``DiagonalGaussianDistribution.sample`` draws it
        (``randn_tensor``): on the generator's device, then moved; a list of B generators draws one
        batch item from each; a list of one acts as that generator. Same generator state -> same sample.
        """
        if mean.shape != logvar.shape:
            raise InputError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
        noise = randn_tensor(mean.shape, generator, mean.device, mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Unscaled latents z (B, 8, t, 16) -> mel (B, 1, 4t, 64), dtype of z.

        ``chunk_frames=None`` decodes in one pass. An int decodes the same function in time tiles of
        ``chunk_frames`` latent frames (``4 * chunk_frames`` mel frames at the top level), for long audio:
        every GroupNorm uses statistics of the whole length (accumulated tile by tile in float64, in a
        pass of their own) and the mid-block attention attends over the whole length, and each tile
        carries the convolutions' receptive-field margin, so the result equals the one-pass decode up to
        float rounding, never an approximation (tests/test_vae.py). Memory: the largest stored tensors are
        two of the top level's (B, 128, 4t, 64); the last upsampler's output, the largest tensor of a
        one-pass decode, is recomputed per tile instead of stored (one extra upsampler convolution).
        """
        self._check(z, self.cfg.latent_channels, "latents")
        if chunk_frames is None:
            return self.decoder(self.post_quant_conv(z))
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise InputError(f"chunk_frames must be None or an int >= 1 (latent frames per tile), got {chunk_frames!r}")
        return _decode_tiled(self.decoder, self.post_quant_conv(z), chunk_frames)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Round trip through the posterior mean: mel (B, 1, T, 64) -> mel (B, 1, T, 64)."""
        mean, _ = self.encode(mel)
        return self.decode(mean)


# --- exact tiled decode ----------------------------------------------------------------------------
# Every GroupNorm gets statistics of the whole length (one extra pass over its input, accumulated tile
# by tile); every convolution runs on a tile plus its receptive-field margin and keeps only the rows
# that margin makes exact. The mid-block attention runs once over the whole (small) latent grid.


class _GroupStats:
    """Per-(sample, group) mean and M2 over tiles, combined with Chan et al.'s parallel update in float64
    (float32 where the device has no float64), so the result does not depend on the tiling."""

    def __init__(self, batch: int, groups: int, device: torch.device):
        self.groups = groups
        self.acc = torch.float32 if device.type == "mps" else torch.float64
        self.n = 0
        self.mean = torch.zeros(batch, groups, dtype=self.acc, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def add(self, x: torch.Tensor) -> None:
        """x: (B, C, h, W) rows of the normalised tensor, each row added once."""
        g = x.reshape(x.shape[0], self.groups, -1).to(self.acc)
        n_t = g.shape[-1]
        mean_t = g.mean(-1)
        m2_t = (g - mean_t[..., None]).square().sum(-1)
        n = self.n + n_t
        delta = mean_t - self.mean
        self.mean = self.mean + delta * (n_t / n)
        self.m2 = self.m2 + m2_t + delta.square() * (self.n * n_t / n)
        self.n = n

    def finish(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean, 1/sqrt(var + eps)), each (B, groups) float32; biased variance, as GroupNorm."""
        return self.mean.float(), torch.rsqrt(self.m2 / self.n + eps).float()


def _windows(x: torch.Tensor, rows_out: int, tile: int, scale: int, margin: int):
    """Tiles of output rows [a, b) (``rows_out`` rows, ``scale`` output rows per row of x): yields
    (a, b, window of x covering them plus ``margin`` rows of x each side, offset of row a in the
    window's output)."""
    for a in range(0, rows_out, tile):
        b = min(a + tile, rows_out)
        lo = max(a // scale - margin, 0)
        hi = min(-(-b // scale) + margin, x.shape[2])
        yield a, b, x[:, :, lo:hi], a - lo * scale


def _stats(x: torch.Tensor, norm: nn.GroupNorm, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    acc = _GroupStats(x.shape[0], norm.num_groups, x.device)
    for a in range(0, x.shape[2], tile):
        acc.add(x[:, :, a:a + tile])
    return acc.finish(norm.eps)


def _norm_silu(x: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """SiLU(GroupNorm(x)) with given statistics (B, groups); computed in float32, returned in x's dtype."""
    b = x.shape[0]
    y = (float32(x).reshape(b, norm.num_groups, -1) - mean[..., None]) * rstd[..., None]
    y = y.reshape(x.shape) * float32(norm.weight)[:, None, None] + float32(norm.bias)[:, None, None]
    return F.silu(y).to(x.dtype)


def _resnet_tiled(block: ResnetBlock, x: torch.Tensor, tile: int, up: Optional[Upsample] = None) -> torch.Tensor:
    """``block(x)``, or ``block(up(x))`` without storing ``up(x)`` (recomputed per tile), in row tiles.
    x: (B, C, H, W) -> (B, out, H, W) (2H, 2W with ``up``)."""
    scale = 1 if up is None else 2
    rows, cols = x.shape[2] * scale, x.shape[3] * scale
    if up is None:
        st1 = _stats(x, block.norm1, tile)
    else:
        acc = _GroupStats(x.shape[0], block.norm1.num_groups, x.device)
        for a, b, w, o in _windows(x, rows, tile, 2, 1):
            acc.add(up(w)[:, :, o:o + b - a])
        st1 = acc.finish(block.norm1.eps)
    out_ch = block.conv1.out_channels
    h = x.new_empty(x.shape[0], out_ch, rows, cols)
    if up is None and block.conv_shortcut is None:  # identity skip: add into x itself when no autograd
        skip = x.clone() if torch.is_grad_enabled() else x
    else:
        skip = x.new_empty(x.shape[0], out_ch, rows, cols)
    for a, b, w, o in _windows(x, rows, tile, scale, 1 if up is None else 2):
        u = w if up is None else up(w)
        h[:, :, a:b] = block.conv1(_norm_silu(u, block.norm1, *st1))[:, :, o:o + b - a]
        if up is not None or block.conv_shortcut is not None:
            u = u[:, :, o:o + b - a]
            skip[:, :, a:b] = u if block.conv_shortcut is None else block.conv_shortcut(u)
    st2 = _stats(h, block.norm2, tile)
    for a, b, w, o in _windows(h, rows, tile, 1, 1):
        skip[:, :, a:b] += block.conv2(_norm_silu(w, block.norm2, *st2))[:, :, o:o + b - a]
    return skip


def _upsample_tiled(up: Upsample, x: torch.Tensor, tile: int) -> torch.Tensor:
    """``up(x)`` in row tiles of the output. x: (B, C, H, W) -> (B, C, 2H, 2W)."""
    out = x.new_empty(x.shape[0], up.conv.out_channels, 2 * x.shape[2], 2 * x.shape[3])
    for a, b, w, o in _windows(x, out.shape[2], tile, 2, 1):
        out[:, :, a:b] = up(w)[:, :, o:o + b - a]
    return out


def _decode_tiled(dec: Decoder, z: torch.Tensor, chunk: int) -> torch.Tensor:
    """``dec(z)`` in time tiles of ``chunk`` latent frames; z: (B, latent, t, f) after post_quant_conv."""
    x = _resnet_tiled(dec.mid_block.resnets[0], dec.conv_in(z), chunk)
    x = dec.mid_block.attentions[0](x)  # global: every position attends to the whole length
    x = _resnet_tiled(dec.mid_block.resnets[1], x, chunk)
    ups = [i for i, level in enumerate(dec.up_blocks) if hasattr(level, "upsamplers")]
    res, pending = 1, None  # the last upsampler's output is the largest tensor: recompute, don't store
    for i, level in enumerate(dec.up_blocks):
        for j, block in enumerate(level.resnets):
            x = _resnet_tiled(block, x, chunk * res, up=pending if j == 0 else None)
            pending = None
        for up in getattr(level, "upsamplers", ()):
            res *= 2
            if i == ups[-1] and i + 1 < len(dec.up_blocks):
                pending = up
            else:
                x = _upsample_tiled(up, x, chunk * res)
    tile = chunk * res
    mean, rstd = _stats(x, dec.conv_norm_out, tile)
    out = x.new_empty(x.shape[0], dec.conv_out.out_channels, x.shape[2], x.shape[3])
    for a, b, w, o in _windows(x, x.shape[2], tile, 1, 1):
        out[:, :, a:b] = dec.conv_out(_norm_silu(w, dec.conv_norm_out, mean, rstd))[:, :, o:o + b - a]
    return out
