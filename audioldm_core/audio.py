"""Audio files: atomic writing of generated waveforms (soundfile), and the audio constants."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .checkpoint import atomic_write
from .errors import InputError

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
