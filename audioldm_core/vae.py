"""KL autoencoder between log-mel spectrograms and AudioLDM latents (Rombach et al. 2022, as in
diffusers' ``AutoencoderKL``).

Encoder: conv_in, per level ``layers_per_block`` resnets (+ a stride-2 downsample except at the last
level), mid block (resnet, single-head self-attention, resnet), GroupNorm-SiLU-conv_out to
2 x latent channels, quant_conv -> (mean, logvar). Decoder: post_quant_conv, conv_in, mid block,
per level ``layers_per_block + 1`` resnets (+ nearest 2x upsample except at the last), GroupNorm-SiLU-
conv_out. One ``Level`` class serves both paths; its resampler is data.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig
from .errors import InputError
from .layers import Attention, Downsample, ResnetBlock, Upsample

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
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Reparameterised posterior sample ``mean + exp(logvar/2) * noise``; the noise is drawn on the
        generator's device exactly as diffusers' ``DiagonalGaussianDistribution.sample`` draws it."""
        gdev = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=gdev, dtype=mean.dtype).to(mean.device)
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor, chunk_frames: Optional[int] = None, overlap: int = 16) -> torch.Tensor:
        """Unscaled latents z (B, 8, t, 16) -> mel (B, 1, 4t, 64).

        chunk_frames: decode ``chunk_frames`` latent frames at a time (with ``overlap`` frames of
        context on each side, cross-faded), bounding activation memory for long audio. This is an
        approximation, not exact: the mid-block attention and every GroupNorm see only the chunk
        (tests measure the difference). ``None`` decodes in one pass (memory still linear in length:
        attention runs through scaled_dot_product_attention).
        """
        self._check(z, self.cfg.latent_channels, "latents")
        if chunk_frames is None or z.shape[2] <= chunk_frames:
            return self.decoder(self.post_quant_conv(z))
        if chunk_frames < 1 or overlap < 0:
            raise InputError(f"chunk_frames must be >= 1 and overlap >= 0, got {chunk_frames}, {overlap}")
        t, f = z.shape[2], self.factor
        out = None
        weight = None
        start = 0
        while start < t:
            end = min(start + chunk_frames, t)
            lo, hi = max(start - overlap, 0), min(end + overlap, t)
            piece = self.decoder(self.post_quant_conv(z[:, :, lo:hi]))
            if out is None:
                out = piece.new_zeros(piece.shape[0], piece.shape[1], t * f, piece.shape[3])
                weight = piece.new_zeros(1, 1, t * f, 1)
            # triangular weights over the chunk's own frames plus its overlap, so neighbours cross-fade
            n = (hi - lo) * f
            ramp = torch.minimum(torch.arange(n, device=z.device) + 1.0,
                                 torch.arange(n, 0, -1, device=z.device).to(torch.float32))
            w = ramp.clamp(max=float(overlap * f + 1) if overlap else float(n)).to(piece.dtype).view(1, 1, n, 1)
            out[:, :, lo * f:hi * f] += piece * w
            weight[:, :, lo * f:hi * f] += w
            start = end
        return out / weight

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Round trip through the posterior mean: mel (B, 1, T, 64) -> mel (B, 1, T, 64)."""
        mean, _ = self.encode(mel)
        return self.decode(mean)
