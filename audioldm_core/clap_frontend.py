"""The CLAP audio front-end of the original AudioLDM, in torch: 16 kHz waveform -> 48 kHz
(Hann-windowed sinc resampling) -> exactly 10 s (repeat-padding or truncation) -> log-mel in dB
(STFT 1024 / hop 480, 64 Slaney mel bins over 50-14000 Hz), the input of :class:`htsat.HTSAT`.

Sources: ``audioldm/clap/encoders.py`` (``torchaudio.functional.resample(batch, 16000, 48000)``
with its defaults), ``clap/training/data.py`` ``get_audio_features(..., 480000,
data_filling="repeatpad")``, and ``clap/open_clip/htsat.py``, which computes the log-mel inside the
model with torchlibrosa (``Spectrogram`` + ``LogmelFilterBank(ref=1, amin=1e-10, top_db=None)``).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .audio import mel_filterbank
from .errors import InputError

CLAP_RATE = 48000
CLAP_SAMPLES = 480000  # 10 s at 48 kHz
CLAP_N_FFT = 1024
CLAP_HOP = 480
CLAP_MELS = 64
CLAP_FMIN, CLAP_FMAX = 50.0, 14000.0
CLAP_AMIN = 1e-10
MIN_SAMPLES_16K = 160  # 10 ms: anything shorter is refused as too short to describe


def sinc_kernel(orig: int, new: int, width: int = 6, rolloff: float = 0.99,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """Polyphase Hann-windowed sinc filters for resampling by new/orig (both already divided by
    their gcd): ((new, 1, 2 * half + orig) kernel, half). Phase j holds the taps of output sample
    m * new + j over input samples m * orig - half ... m * orig + half + orig - 1.

    The ideal interpolator h(t) = sinc(pi * f_c * t) with cut-off f_c = rolloff * min(orig, new)
    (in units where the input rate is ``orig``), windowed by cos^2(pi t f_c / (2 width)) over
    |t f_c| <= width zero crossings and scaled by f_c / orig: the defaults of
    ``torchaudio.functional.resample`` (lowpass_filter_width 6, rolloff 0.99, "sinc_interp_hann"),
    computed in ``dtype`` as it does for a waveform of that dtype.
    """
    cutoff = min(orig, new) * rolloff
    half = math.ceil(width * orig / cutoff)
    taps = torch.arange(-half, half + orig, dtype=dtype) / orig  # input sample times
    t = taps[None, :] - torch.arange(new, dtype=dtype)[:, None] / new  # (new, taps): tap time - output time
    t = (t * cutoff).clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=dtype), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig))[:, None, :], half


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling (see :func:`sinc_kernel`). waveform (..., n) float -> (..., ceil(n *
    new / orig)), zero-padded at both ends as the source does. Same rate: returned unchanged."""
    if orig_rate == new_rate:
        return waveform
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernel, half = sinc_kernel(orig, new, dtype=waveform.dtype)
    shape = waveform.shape
    x = F.pad(waveform.reshape(-1, 1, shape[-1]), (half, half + orig))
    y = F.conv1d(x, kernel.to(waveform.device), stride=orig)  # (N, new, frames): phase-major
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, :math.ceil(new * shape[-1] / orig)]
    return y.reshape(*shape[:-1], -1)


def fit_clip(waveform: torch.Tensor, length: int = CLAP_SAMPLES, offset: int = 0) -> torch.Tensor:
    """(n,) -> (length,): shorter input repeated whole floor(length / n) times then zero-padded
    (``repeatpad``); longer input cut to ``length`` samples from ``offset`` (the source draws the
    offset at random, ``np.random.randint(0, n - length + 1)``; here the caller chooses, 0 = the
    first 10 s). Equal length: unchanged."""
    n = waveform.shape[-1]
    if n > length:
        if not 0 <= offset <= n - length:
            raise InputError(f"offset must be in [0, {n - length}] for {n} samples, got {offset}")
        return waveform[offset:offset + length]
    if n < length:
        waveform = F.pad(waveform.repeat(length // n), (0, length - (length // n) * n))
    return waveform


@functools.lru_cache(maxsize=None)
def _bases() -> tuple[torch.Tensor, torch.Tensor]:
    """(2 * 513, 1, 1024) windowed DFT rows (real, imaginary; periodic Hann) and (513, 64) mel
    filters, float32, as torchlibrosa builds its STFT convolution and ``melW``."""
    n = CLAP_N_FFT
    k = np.arange(n // 2 + 1)[:, None] * np.arange(n)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    dft = np.exp(-2j * np.pi * k / n) * window[None, :]
    basis = np.concatenate([dft.real, dft.imag])[:, None, :]
    mel = mel_filterbank(CLAP_RATE, n, CLAP_MELS, CLAP_FMIN, CLAP_FMAX)
    return torch.from_numpy(basis).float(), torch.from_numpy(mel.T.copy())


def log_mel_48k(waveform: torch.Tensor) -> torch.Tensor:
    """(B, n) 48 kHz -> (B, n // 480 + 1, 64) float32 log-mel in dB: reflect padding of 512, power
    spectrum from the float32 windowed-DFT convolution, mel, 10 * log10(max(x, 1e-10))."""
    basis, mel = (b.to(waveform.device) for b in _bases())
    x = F.pad(waveform.float()[:, None], (CLAP_N_FFT // 2, CLAP_N_FFT // 2), mode="reflect")
    spec = F.conv1d(x, basis, stride=CLAP_HOP)  # (B, 1026, T)
    cut = CLAP_N_FFT // 2 + 1
    power = (spec[:, :cut] ** 2 + spec[:, cut:] ** 2).transpose(1, 2)  # (B, T, 513)
    return 10.0 * torch.log10(torch.clamp(power @ mel, min=CLAP_AMIN))


def clap_mel(waveforms: Union[torch.Tensor, np.ndarray, Sequence], sample_rate: int = 16000,
             offset: int = 0) -> torch.Tensor:
    """16 kHz waveforms -> (B, 1001, 64) HTS-AT input. ``waveforms``: one (n,) array, a (B, n)
    batch, or a list of (n_i,) arrays of any lengths. Each is resampled to 48 kHz, fitted to 10 s
    (:func:`fit_clip` with ``offset`` in 48 kHz samples) and turned into a log-mel. Raises
    :class:`InputError` for an empty, too short (< 10 ms), silent or non-finite waveform."""
    if isinstance(waveforms, (torch.Tensor, np.ndarray)):
        w = torch.as_tensor(waveforms)
        rows = [w] if w.ndim == 1 else list(w) if w.ndim == 2 else None
        if rows is None:
            raise InputError(f"waveforms must be (n,) or (B, n); got shape {tuple(w.shape)}")
    else:
        rows = [torch.as_tensor(np.asarray(r) if not isinstance(r, torch.Tensor) else r) for r in waveforms]
    if not rows:
        raise InputError("no waveforms given")
    out = []
    for i, r in enumerate(rows):
        r = r.float()
        if r.ndim != 1 or r.shape[0] < MIN_SAMPLES_16K * sample_rate // 16000:
            raise InputError(f"waveform {i} must be 1-D with at least 10 ms of samples; got shape {tuple(r.shape)}")
        if not torch.isfinite(r).all():
            raise InputError(f"waveform {i} contains NaN or Inf")
        if not (r != 0).any():
            raise InputError(f"waveform {i} is silent (all zeros); CLAP cannot describe it")
        out.append(fit_clip(resample(r, sample_rate, CLAP_RATE), CLAP_SAMPLES, offset))
    return log_mel_48k(torch.stack(out))
