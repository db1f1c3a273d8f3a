"""HiFi-GAN generator (Kong et al. 2020), in the layout of transformers' ``SpeechT5HifiGan``.

64-bin log-mel frames -> 16 kHz waveform: conv_pre, then per upsampling stage a LeakyReLU, a
transposed convolution and the mean of the multi-receptive-field residual blocks, then LeakyReLU
(slope 0.01, as the reference), conv_post and tanh. Weight norm, where a source carries it, is folded
at conversion time (``convert/tables/vocoder.py``), so this module holds plain convolutions.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

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
        if not dilations:
            raise ValueError(f"a ResBlock needs at least one dilation, got {dilations!r}")
        self.slope = slope
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                              padding=(kernel_size * d - d) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
                                    for _ in dilations)

    def forward(self, x: torch.Tensor, x_act: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, C, N) -> a new (B, C, N) tensor (``x`` is not modified). ``x_act``: ``leaky_relu(x)``
        when the caller has it already (the blocks of one upsampling stage share their input).

        The activation of each first conv's output and the residual add run in place on tensors this
        block just made: the same arithmetic as the reference, with two fewer full-size allocations
        per dilation (the vocoder's tensors are tens of MB: each allocation costs page faults)."""
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            a = x_act if i == 0 and x_act is not None else F.leaky_relu(x, self.slope)
            h = c2(F.leaky_relu_(c1(a), self.slope))
            x = h.add_(x)
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
        self.hop = math.prod(cfg.upsample_rates)
        self.margin = _receptive_margin(cfg)

    def forward(self, mel: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """mel: (B, T, n_mels) or (T, n_mels) log-mel -> (B, samples) or (samples,) in [-1, 1], dtype of
        mel; samples = T * hop + a few (SpeechT5HifiGan's length: 160 T + 32 for AudioLDM).

        chunk_frames: vocode ``chunk_frames`` mel frames at a time, each with ``self.margin`` frames of
        context on either side (the network's whole receptive field: it has no global operation), and
        keep only the tile's own samples. The result equals the one-pass output up to float rounding
        (tests/test_hifigan.py); peak activation memory scales with ``chunk_frames + 2 * margin`` instead
        of T, for ``2 * margin / chunk_frames`` more compute.
        """
        if not isinstance(mel, torch.Tensor) or mel.ndim not in (2, 3) or mel.shape[-1] != self.n_mels:
            got = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
            raise InputError(f"vocoder input must be a (B, T, {self.n_mels}) or (T, {self.n_mels}) mel, got {got}")
        if mel.shape[-2] == 0:
            raise InputError("vocoder input has an empty time axis (0 frames)")
        if chunk_frames is not None and (isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int)
                                         or chunk_frames < 1):
            raise InputError(f"chunk_frames must be None or an int >= 1 (mel frames per tile), got {chunk_frames!r}")
        batched = mel.ndim == 3
        x = mel if batched else mel[None]
        frames = x.shape[1]
        if chunk_frames is None or chunk_frames >= frames:
            wav = self._vocode(x)
        else:
            pieces = []
            for a in range(0, frames, chunk_frames):
                b = min(a + chunk_frames, frames)
                lo, hi = max(a - self.margin, 0), min(b + self.margin, frames)
                y = self._vocode(x[:, lo:hi])
                start = (a - lo) * self.hop  # shift-equivariance: local sample 0 is global sample lo * hop
                pieces.append(y[:, start:start + (b - a) * self.hop] if b < frames else y[:, start:])
            wav = torch.cat(pieces, dim=1)
        return wav if batched else wav[0]

    def _vocode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, n_mels) -> (B, samples), one pass."""
        if self.normalize_before:
            x = (x - self.mean) / self.scale
        x = self.conv_pre(x.transpose(1, 2))
        for i, up in enumerate(self.upsampler):
            x = up(F.leaky_relu_(x, self.slope))  # x is always a tensor made here: in place is safe
            x_act = F.leaky_relu(x, self.slope)  # shared by the stage's blocks
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            acc = blocks[0](x, x_act)  # a new tensor: accumulate in place
            for block in blocks[1:]:
                acc.add_(block(x, x_act))
            x = acc.div_(self.num_kernels)
        x = torch.tanh(self.conv_post(F.leaky_relu_(x)))  # default slope 0.01 here, as the reference
        return x[:, 0]


def _receptive_margin(cfg: HiFiGANConfig) -> int:
    """Mel frames of context either side that determine an output sample: each layer's one-sided reach
    in its own input samples, divided by that layer's samples per mel frame, summed, rounded up."""
    reach = Fraction(3)  # conv_pre, kernel 7
    rate = 1
    for r, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
        reach += Fraction(-(-k // r) + 1, rate)  # transposed conv: an output sees inputs within ceil(k/r)+1
        rate *= r
        reach += Fraction(max(sum((kk - 1) // 2 * d + (kk - 1) // 2 for d in dil)
                              for kk, dil in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)), rate)
    reach += Fraction(3, rate)  # conv_post, kernel 7
    return math.ceil(reach) + 1
