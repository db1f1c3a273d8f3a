"""HiFi-GAN generator (Kong et al. 2020), in the layout of transformers' ``SpeechT5HifiGan``.

64-bin log-mel frames -> 16 kHz waveform: conv_pre, then per upsampling stage a LeakyReLU, a
transposed convolution and the mean of the multi-receptive-field residual blocks, then LeakyReLU
(slope 0.01, as the reference), conv_post and tanh. Weight norm, where a source carries it, is folded
at conversion time (``convert/tables/vocoder.py``), so this module holds plain convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import HiFiGANConfig
from .errors import InputError


class ResBlock(nn.Module):
    """Residual block of dilated convolutions (HiFi-GAN "ResBlock1"; transformers
    ``HifiGanResidualBlock``). x: (B, C, N) -> (B, C, N)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], slope: float):
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                              padding=(kernel_size * d - d) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
                                    for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            h = c1(F.leaky_relu(x, self.slope))
            x = x + c2(F.leaky_relu(h, self.slope))
        return x


class HiFiGAN(nn.Module):
    """The vocoder: mel (B, T, n_mels) or (T, n_mels) -> waveform (B, T*hop) or (T*hop,), float.

    ``mean`` and ``scale`` (n_mels,) are always present, as in the source checkpoints; they are
    applied only when ``normalize_before``.
    """

    def __init__(self, cfg: HiFiGANConfig):
        super().__init__()
        self.n_mels = cfg.model_in_dim
        self.slope = cfg.leaky_relu_slope
        self.normalize_before = cfg.normalize_before
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        ch = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.model_in_dim, ch, 7, padding=3)
        self.upsampler = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, stride=r, padding=(k - r) // 2)
            for i, (r, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList(
            ResBlock(ch // 2 ** (i + 1), k, tuple(d), cfg.leaky_relu_slope)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 1, 7, padding=3)
        self.register_buffer("mean", torch.zeros(cfg.model_in_dim))
        self.register_buffer("scale", torch.ones(cfg.model_in_dim))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, T, n_mels) or (T, n_mels) log-mel -> (B, samples) or (samples,) in [-1, 1]."""
        if not isinstance(mel, torch.Tensor) or mel.ndim not in (2, 3) or mel.shape[-1] != self.n_mels:
            got = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise InputError(f"vocoder input must be a (B, T, {self.n_mels}) or (T, {self.n_mels}) mel, got {got}")
        if mel.shape[-2] == 0:
            raise InputError("vocoder input has an empty time axis (0 frames)")
        batched = mel.ndim == 3
        x = mel if batched else mel[None]
        if self.normalize_before:
            x = (x - self.mean) / self.scale
        x = self.conv_pre(x.transpose(1, 2))
        for i, up in enumerate(self.upsampler):
            x = up(F.leaky_relu(x, self.slope))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / self.num_kernels
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as the reference
        wav = x[:, 0]
        return wav if batched else wav[0]
