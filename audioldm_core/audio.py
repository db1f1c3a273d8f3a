"""Audio in and out: reading any soundfile-readable file, the original AudioLDM front-end (mean
removal, peak 0.5, log-mel with our own Slaney filterbank: no librosa at run time), and atomic
writing of generated waveforms."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .files import atomic_write
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
# The original: audioldm 0.1.1 audio/tools.py (read_wav_file, normalize_wav, pad_wav, wav_to_fbank,
# _pad_spec), audio/stft.py (STFT.transform, TacotronSTFT.mel_spectrogram) and
# audio/audio_processing.py (dynamic_range_compression).

N_FFT = 1024
HOP = 160
N_MELS = 64
FMIN, FMAX = 0.0, 8000.0
LOG_FLOOR = 1e-5


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`load_audio` found: the file's rate, channels and length (frames per channel), and
    whether it downmixed (more than one channel) and resampled (rate != target)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    downmixed: bool
    resampled: bool

    @property
    def duration(self) -> float:
        """Length of the file in seconds."""
        return self.frames / self.sample_rate


def load_audio(path: Union[str, os.PathLike], *, target_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, AudioInfo]:
    """Read any file soundfile can (wav, flac, ogg, ...; 8/16/24/32-bit int or float; any rate).

    Returns (waveform (samples,) float32 at ``target_rate``, :class:`AudioInfo`). Integer samples
    are scaled to [-1, 1) as soundfile does (int / 2^(bits-1)). Multi-channel audio is downmixed by
    averaging the channels (the original AudioLDM ``read_wav_file`` keeps channel 0 instead);
    ``info.downmixed`` says it happened. Resampling uses soxr's high-quality ("HQ") filter (the
    original uses torchaudio's sinc resampler); the output has round(frames * target_rate / rate)
    samples. Raises :class:`SourceNotFoundError` for a missing path and :class:`InputError` for an
    unreadable or corrupt file, one with no samples, or one with NaN/Inf samples.
    """
    import soundfile as sf

    if isinstance(target_rate, bool) or not isinstance(target_rate, (int, np.integer)) or target_rate <= 0:
        raise InputError(f"target_rate must be a positive integer in Hz, got {target_rate!r}")
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"audio file {p} does not exist")
    if not p.is_file():
        raise InputError(f"audio path {p} is not a file")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError on bad files
        raise InputError(f"cannot read audio file {p} (supported: what libsndfile reads, e.g. wav, flac, "
                         f"ogg): {e}") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise InputError(f"audio file {p} has no samples")
    if not np.isfinite(data).all():
        raise InputError(f"audio file {p} contains NaN or Inf samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    resampled = rate != target_rate
    if resampled:
        import soxr

        mono = soxr.resample(mono, rate, int(target_rate), quality="HQ")
    info = AudioInfo(path=str(p), sample_rate=int(rate), channels=int(data.shape[1]), frames=int(data.shape[0]),
                     downmixed=data.shape[1] > 1, resampled=resampled)
    return np.ascontiguousarray(mono, dtype=np.float32), info


def _check_waveform(waveform, what: str = "waveform") -> None:
    if waveform.ndim != 1 or waveform.shape[0] == 0:
        raise InputError(f"{what} must be a non-empty 1-D array of samples, got shape {tuple(waveform.shape)}")


def normalize_wav(w: np.ndarray) -> np.ndarray:
    """The original's ``normalize_wav`` (audioldm audio/tools.py), in its float32 order: (samples,)
    float32 -> mean removed, then divided by (max|w| + 1e-8) and scaled by 0.5."""
    w = w - np.mean(w)
    w = w / (np.max(np.abs(w)) + 1e-8)
    return w * 0.5


def preprocess(waveform: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """The original AudioLDM normalisation: (samples,) -> (samples,) float32 with mean 0 and peak 0.5.

    As ``read_wav_file`` does it on torchaudio's float32 samples, in float32 and the same order:
    ``normalize_wav`` (w - mean(w), then w / (max|w| + 1e-8) * 0.5), then ``w / max|w|`` and
    ``0.5 * w`` (an exact peak of 0.5). The original's zero padding to a target length (``pad_wav``)
    happens in :func:`log_mel` (``target_frames``); padding does not change the peak.
    Raises :class:`InputError` for an empty, non-finite or constant (silent) waveform, which the
    original turns into NaN.
    """
    w = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    w = w.astype(np.float32)  # copies: the caller's array is never modified
    _check_waveform(w)
    if not np.isfinite(w).all():
        raise InputError("waveform contains NaN or Inf")
    w = normalize_wav(w)
    # audioldm audio/tools.py read_wav_file, after pad_wav
    peak = np.max(np.abs(w))
    if peak == 0:
        raise InputError("the audio is silent (all samples equal); nothing to encode")
    w = w / peak
    return (0.5 * w).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), logarithmic
    above (27 mels per factor 6.4)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: Optional[float] = FMAX) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) float32 triangular filters on the Slaney mel scale with Slaney area
    normalisation (each filter scaled by 2 / its bandwidth in Hz): ``librosa.filters.mel`` with its
    defaults (htk=False, norm="slaney"), including where it rounds to float32, so the result is
    bit-identical. ``fmax=None`` means sample_rate / 2."""
    for name, v in (("sample_rate", sample_rate), ("n_fft", n_fft), ("n_mels", n_mels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax:
        raise InputError(f"need 0 <= fmin < fmax, got fmin={fmin!r}, fmax={fmax!r}")
    # librosa filters.mel (Slaney 1998, Auditory Toolbox mel scale)
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)).astype(np.float32)  # librosa stores into float32 here
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _stft_basis() -> torch.Tensor:
    """(2 * 513, 1, 1024) float32: the real and imaginary rows of the DFT matrix, each multiplied
    by a periodic Hann window, as the original ``STFT.__init__`` builds its convolution kernel."""
    # audioldm audio/stft.py STFT.__init__: fourier_basis, get_window("hann", 1024, fftbins=True)
    dft = np.fft.fft(np.eye(N_FFT))
    cut = N_FFT // 2 + 1
    basis = np.vstack([np.real(dft[:cut]), np.imag(dft[:cut])])[:, None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    return torch.from_numpy(basis).float() * torch.from_numpy(window).float()


@functools.lru_cache(maxsize=None)
def _mel_basis() -> torch.Tensor:
    return torch.from_numpy(mel_filterbank())


def log_mel(waveform: Union[np.ndarray, torch.Tensor], target_frames: Optional[int] = None) -> torch.Tensor:
    """The original AudioLDM log-mel of a preprocessed waveform: (samples,) -> (T, 64) float32 torch
    tensor (on the waveform's device when given a tensor, else CPU).

    ``TacotronSTFT.mel_spectrogram``: samples clipped to [-1, 1]; reflect padding of 512 on both
    sides; STFT with n_fft 1024, hop 160 and a periodic Hann window of 1024; magnitude; 64 Slaney
    mel bins over 0-8000 Hz; natural log of max(x, 1e-5). Without ``target_frames``,
    T = samples // 160 + 1 (every STFT frame).

    ``target_frames`` reproduces ``wav_to_fbank(..., target_length)``: a waveform shorter than
    target_frames * 160 samples is zero-padded to that length first (``pad_wav``); a longer one is
    not cut (the original's ``pad_wav`` slices the batch axis, so the whole waveform goes through
    the STFT); then the first ``target_frames`` frames are kept (``_pad_spec``).

    The STFT is the original's float32 convolution with the windowed DFT basis, not ``torch.stft``:
    the FFT rounds differently, and in bands near the 1e-5 floor (a sine, a low-passed input) that
    moves the log-mel by up to ~5e-3 against the original.
    """
    if isinstance(waveform, torch.Tensor):
        w = waveform.detach().to(torch.float32)
    else:
        w = torch.from_numpy(np.asarray(waveform, dtype=np.float32).copy())
    _check_waveform(w)
    if target_frames is not None:
        if isinstance(target_frames, bool) or not isinstance(target_frames, (int, np.integer)) or target_frames < 1:
            raise InputError(f"target_frames must be a positive integer, got {target_frames!r}")
        target_frames = int(target_frames)
        if w.shape[0] < target_frames * HOP:  # audioldm audio/tools.py pad_wav
            w = torch.nn.functional.pad(w, (0, target_frames * HOP - w.shape[0]))
    if w.shape[0] <= N_FFT // 2:
        raise InputError(f"waveform too short for the STFT: {w.shape[0]} samples; need more than {N_FFT // 2} "
                         f"(or a target_frames of at least {N_FFT // 2 // HOP + 1})")
    if not torch.isfinite(w).all():
        raise InputError("waveform contains NaN or Inf")
    w = w.clamp(-1, 1)  # audioldm audio/tools.py get_mel_from_wav
    # audioldm audio/stft.py STFT.transform: reflect pad n_fft/2, conv1d with the basis, magnitude
    x = torch.nn.functional.pad(w[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
    spec = torch.nn.functional.conv1d(x, _stft_basis().to(w.device), stride=HOP)[0]
    cut = N_FFT // 2 + 1
    mag = torch.sqrt(spec[:cut] ** 2 + spec[cut:] ** 2)
    # TacotronSTFT.mel_spectrogram + audio_processing.py dynamic_range_compression (C=1)
    mel = torch.matmul(_mel_basis().to(w.device), mag)
    out = torch.log(torch.clamp(mel, min=LOG_FLOOR)).T.contiguous()
    if target_frames is not None:  # audioldm audio/tools.py _pad_spec (n_mels is even: no bin dropped)
        out = out[:target_frames] if out.shape[0] >= target_frames else \
            torch.nn.functional.pad(out, (0, 0, 0, target_frames - out.shape[0]))
    return out


def mel_for_vae(waveform: Union[np.ndarray, torch.Tensor], factor: int = 4, *,
                frames: Optional[int] = None) -> tuple[torch.Tensor, int]:
    """A raw 16 kHz waveform as the VAE's input: :func:`preprocess` then :func:`log_mel`.

    waveform: (samples,) float -> ((1, 1, T, 64) float32 CPU log-mel, covered samples).
    T = ``frames`` if given (must be a positive multiple of ``factor``, the VAE's time
    downsampling), else ceil(samples / 160) rounded up to a multiple of ``factor``. The waveform is
    zero-padded (after mean removal) to T * 160 samples, so every padded frame is the log-mel of
    silence (log 1e-5, from the real STFT, not a constant fill). The second value is
    min(samples, T * 160): trim the T * 160 decoded samples back to it to get the input's length.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor must be a positive integer, got {factor!r}")
    w = preprocess(waveform)
    n = int(w.shape[0])
    if frames is None:
        frames = max(-(-n // HOP), 1)
        frames += (-frames) % factor
    elif isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1 or frames % factor:
        raise InputError(f"frames must be a positive multiple of {factor}, got {frames!r}")
    frames = int(frames)
    return log_mel(w, target_frames=frames)[None, None], min(n, frames * HOP)
