"""Audio front-end: file reading, the mel filterbank (vs librosa) and the log-mel (vs the original
AudioLDM code, ``audioldm.audio.stft.TacotronSTFT`` from the ``audioldm`` package)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioldm_core.audio import load_audio, log_mel, mel_filterbank, mel_for_vae, preprocess
from audioldm_core.errors import InputError, SourceNotFoundError


@functools.lru_cache(maxsize=1)
def original_stft():
    """The original TacotronSTFT, imported without the package's __init__ (which needs torchaudio,
    pytorch_lightning, ...) and with adapters for librosa >= 0.10, whose filters.mel and
    util.pad_center take keyword arguments only."""
    import librosa.filters
    import librosa.util

    # installed by the README/CI test command with `pip install --no-deps --target <venv>/audioldm-original`
    target = Path(sys.prefix) / "audioldm-original" / "audioldm"
    spec = importlib.util.find_spec("audioldm")
    root = target if target.is_dir() else Path(spec.submodule_search_locations[0]) if spec else None
    if root is None:
        raise RuntimeError("the original audioldm package is not installed; run the README's test command")
    for name, path in (("audioldm", root), ("audioldm.audio", root / "audio")):
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    real_mel, real_pad = librosa.filters.mel, librosa.util.pad_center
    librosa.filters.mel = lambda sr, n_fft, n_mels, fmin, fmax: real_mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
                                                                         fmin=fmin, fmax=fmax)
    librosa.util.pad_center = lambda data, size, **kw: real_pad(data, size=size, **kw)
    try:
        stft = importlib.import_module("audioldm.audio.stft")
        return stft.TacotronSTFT(1024, 160, 1024, 64, 16000, 0, 8000)
    finally:
        librosa.filters.mel, librosa.util.pad_center = real_mel, real_pad


def original_fbank(waveform: np.ndarray, target_frames: int) -> torch.Tensor:
    """The original read_wav_file + wav_to_fbank after resampling, re-derived in numpy (tools.py
    imports torchaudio at module level): normalize_wav, pad/cut to target*160, re-peak to 0.5,
    clip, TacotronSTFT.mel_spectrogram, transpose, _pad_spec."""
    w = waveform - np.mean(waveform)
    w = w / (np.max(np.abs(w)) + 1e-8) * 0.5
    seg = target_frames * 160
    w = w[:seg] if len(w) >= seg else np.concatenate([w, np.zeros(seg - len(w))])
    w = 0.5 * w / np.max(np.abs(w))
    y = torch.clip(torch.FloatTensor(w).unsqueeze(0), -1, 1)
    mel, _, _ = original_stft().mel_spectrogram(y)
    fb = mel[0].T
    return fb[:target_frames] if fb.shape[0] >= target_frames else torch.nn.functional.pad(
        fb, (0, 0, 0, target_frames - fb.shape[0]))


def test_filterbank_equals_librosa():
    import librosa

    ours = mel_filterbank()
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0, fmax=8000)
    err = float(np.abs(ours - ref).max())
    print(f"\nmel filterbank vs librosa: max abs err {err:.2e} (peak {ref.max():.4f})")
    assert ours.shape == (64, 513) and err < 1e-7


@pytest.mark.parametrize("kind", ["noise", "chirp", "quiet"])
def test_front_end_matches_original_audioldm(kind):
    g = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    w = {"noise": g.standard_normal(len(t)) * 0.3,
         "chirp": np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.2,
         "quiet": g.standard_normal(len(t)) * 1e-4}[kind].astype(np.float32)
    frames = 256
    ref = original_fbank(w.astype(np.float64), frames)
    ours = log_mel(preprocess(w, frames * 160), target_frames=frames)
    err = float((ours - ref).abs().max())
    print(f"\nfront-end vs original AudioLDM ({kind}): max abs err {err:.2e} in log-mel")
    assert ours.shape == (frames, 64) and err <= 1e-5, err


def _write(path, data, rate, subtype, fmt=None):
    sf.write(str(path), data, rate, subtype=subtype, format=fmt)
    return path


_FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")]


@pytest.mark.parametrize("rate,fmt,subtype", [(r, f, s) for r in (8000, 22050, 44100, 48000, 16000)
                                              for f, s in _FORMATS] + [(16000, "WAV", "PCM_U8")])
def test_load_any_format_rate_channels(tmp_path, rate, fmt, subtype):
    secs, f0 = 0.5, 440.0
    t = np.arange(int(rate * secs)) / rate
    tone = (0.4 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    stereo = np.stack([tone, tone * 0.5], axis=1)
    path = _write(tmp_path / f"x.{fmt.lower()}", stereo, rate, subtype, fmt)
    w, info = load_audio(path)
    assert info.channels == 2 and info.downmixed and info.resampled == (rate != 16000)
    assert abs(len(w) - int(16000 * secs)) <= 1
    spectrum = np.abs(np.fft.rfft(w * np.hanning(len(w))))
    peak_hz = np.argmax(spectrum) * 16000 / len(w)
    assert abs(peak_hz - f0) < 5, peak_hz
    assert np.isfinite(w).all() and w.dtype == np.float32


def test_bad_audio_inputs(tmp_path):
    with pytest.raises(SourceNotFoundError):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(InputError, match="cannot read"):
        load_audio(junk)
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000, "PCM_16")
    with pytest.raises(InputError, match="no samples"):
        load_audio(empty)
    nan = _write(tmp_path / "nan.wav", np.full((100, 1), np.nan, np.float32), 16000, "FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load_audio(nan)
    with pytest.raises(InputError):
        log_mel(np.zeros(100, np.float32))


def test_mel_for_vae_pads_to_the_vae_factor():
    mel, n = mel_for_vae(np.sin(np.arange(16000 * 2 + 123) / 10).astype(np.float32))
    assert n == 32123 and mel.shape == (1, 1, 204, 64)  # ceil(32123 / 160) = 201 -> 204
