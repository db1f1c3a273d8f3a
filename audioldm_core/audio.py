"""Audio in and out: reading any soundfile-readable file, the original AudioLDM front-end (mean
removal, peak 0.5, log-mel with our own Slaney filterbank: no librosa at run time), and atomic
writing of generated waveforms."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .checkpoint import atomic_write
from .errors import InputError, SourceNotFoundError

SAMPLE_RATE = 16000
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


def format_for(path: Union[str, os.PathLike], fmt: Union[str, None] = None) -> str:
    """The output format: ``fmt`` if given, else the file extension (``.wav`` or ``.flac``)."""
    if fmt is None:
        fmt = Path(path).suffix.lower().lstrip(".") or "wav"
    if fmt not in FORMATS:
        raise InputError(f"unsupported audio format {fmt!r}; supported: {', '.join(FORMATS)}")
    return fmt


def write_audio(path: Union[str, os.PathLike], audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                fmt: Union[str, None] = None) -> Path:
    """Write a mono waveform (samples,) float in [-1, 1] as 16-bit WAV or FLAC, atomically.

    Values outside [-1, 1] are clipped. The file appears complete or not at all (temp file + rename).
    """
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"audio must be a non-empty 1-D array of samples, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise InputError("audio contains NaN or Inf; refusing to write it")
    kind, subtype = FORMATS[format_for(path, fmt)]
    audio = np.clip(audio, -1.0, 1.0)
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: sf.write(tmp, audio, sample_rate, format=kind, subtype=subtype))
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    return path


# --- Reading and the original AudioLDM front-end -------------------------------------------------------

N_FFT = 1024
HOP = 160
N_MELS = 64
FMIN, FMAX = 0.0, 8000.0
LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`load_audio` found: the file's rate, channels and length, and what it did."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    downmixed: bool
    resampled: bool


def load_audio(path: Union[str, os.PathLike], target_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioInfo]:
    """Read any file soundfile can (wav, flac, ogg; 8/16/24/32-bit int or float; any rate).

    Returns (waveform (samples,) float32 at ``target_rate``, info). Multi-channel audio is
    downmixed by averaging the channels (the original AudioLDM code keeps channel 0 instead);
    resampling uses soxr's high-quality filter. Raises :class:`SourceNotFoundError` for a missing
    file and :class:`InputError` for an unreadable, empty or non-finite one.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(f"audio file {p} does not exist")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError on bad files
        raise InputError(f"cannot read audio file {p}: {e}") from None
    if data.shape[0] == 0:
        raise InputError(f"audio file {p} has no samples")
    if not np.isfinite(data).all():
        raise InputError(f"audio file {p} contains NaN or Inf samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    resampled = rate != target_rate
    if resampled:
        import soxr

        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
    info = AudioInfo(path=str(p), sample_rate=int(rate), channels=int(data.shape[1]), frames=int(data.shape[0]),
                     downmixed=data.shape[1] > 1, resampled=resampled)
    return np.ascontiguousarray(mono, dtype=np.float32), info


def preprocess(waveform: np.ndarray, num_samples: Optional[int] = None) -> np.ndarray:
    """The original AudioLDM normalisation (``audio/tools.py``: ``normalize_wav``, ``pad_wav``, then
    peak 0.5 again): remove the mean, scale to a peak of 0.5 (``/ (max|w| + 1e-8)``), zero-pad or
    cut to ``num_samples`` (default: keep the length), re-scale to a peak of exactly 0.5.
    Computed in float64 as the original's numpy code; (samples,) -> (num_samples,) float32."""
    w = np.asarray(waveform, dtype=np.float64)
    w = w - w.mean()
    w = w / (np.abs(w).max() + 1e-8) * 0.5
    if num_samples is not None:
        w = w[:num_samples] if len(w) >= num_samples else np.concatenate([w, np.zeros(num_samples - len(w))])
    peak = np.abs(w).max()
    if peak == 0:
        raise InputError("the audio is silent (all samples equal); nothing to encode")
    return (0.5 * (w / peak)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (Auditory Toolbox)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) float32 triangular filters on the Slaney mel scale with Slaney area
    normalisation (each filter scaled by 2 / bandwidth in Hz), as ``librosa.filters.mel`` defaults."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _stft_basis() -> torch.Tensor:
    """(2 * 513, 1, 1024) float32: the real and imaginary rows of the DFT, each multiplied by a
    periodic Hann window, as the original AudioLDM ``STFT`` builds its convolution kernel."""
    eye = np.fft.fft(np.eye(N_FFT))
    cut = N_FFT // 2 + 1
    basis = np.vstack([np.real(eye[:cut]), np.imag(eye[:cut])])[:, None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # scipy get_window("hann", fftbins=True)
    return torch.from_numpy(basis).float() * torch.from_numpy(window).float()


def log_mel(waveform: Union[np.ndarray, torch.Tensor], target_frames: Optional[int] = None) -> torch.Tensor:
    """The original AudioLDM log-mel: (samples,) in [-1, 1] -> (T, 64) float32 torch tensor.

    STFT with n_fft 1024, hop 160, a periodic Hann window of 1024 and reflect padding of 512 on
    both sides, magnitude, 64 Slaney mel bins over 0-8000 Hz, natural log of max(x, 1e-5);
    T = samples // 160 + 1. The STFT is computed as the original does it (a float32 convolution with
    the windowed DFT basis), so values near the 1e-5 floor round the same way. ``target_frames``
    zero-pads or cuts the frames to that count, as the original ``_pad_spec`` does.
    """
    w = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).clamp(-1, 1)
    if w.ndim != 1 or w.numel() == 0:
        raise InputError(f"waveform must be a non-empty 1-D array, got shape {tuple(w.shape)}")
    if w.numel() <= N_FFT // 2:
        raise InputError(f"waveform too short for the STFT: {w.numel()} samples, need more than {N_FFT // 2}")
    x = torch.nn.functional.pad(w[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
    spec = torch.nn.functional.conv1d(x, _stft_basis(), stride=HOP)[0]
    cut = N_FFT // 2 + 1
    mag = torch.sqrt(spec[:cut] ** 2 + spec[cut:] ** 2)
    mel = torch.from_numpy(mel_filterbank()) @ mag
    out = torch.log(mel.clamp(min=LOG_FLOOR)).T.contiguous()
    if target_frames is not None:
        if target_frames < 1:
            raise InputError(f"target_frames must be positive, got {target_frames}")
        out = out[:target_frames] if out.shape[0] >= target_frames else \
            torch.cat([out, out.new_zeros(target_frames - out.shape[0], out.shape[1])])
    return out


def mel_for_vae(waveform: np.ndarray, factor: int = 4) -> tuple[torch.Tensor, int]:
    """A waveform as the VAE's input: (1, 1, T, 64) with T = ceil(samples / 160) rounded up to a
    multiple of ``factor``, so the decoded audio covers every input sample (frames past the STFT's
    are zero log-mel, as the original's ``_pad_spec`` pads); returns it with the waveform's sample
    count, to trim the decoded audio back to the input length."""
    frames = max(-(-len(waveform) // HOP), 1)
    frames += (-frames) % factor
    return log_mel(preprocess(waveform, frames * HOP), target_frames=frames)[None, None], len(waveform)
