"""Log-mel spectrogram pictures (PNG) of 16 kHz audio, for the CLI (``--spectrogram``, ``audioldm
plot``) and the web app.

The picture is the model's own view of the sound: the log-mel of :func:`audioldm_core.audio.log_mel`
(64 Slaney mel bands over 0-8000 Hz, hop 160 samples = 10 ms, natural log floored at 1e-5), drawn
with time in seconds on x and frequency in Hz on y (ticks at the mel bands' frequencies), one image
row per mel band, lowest band at the bottom. The waveform is drawn as it is (no normalisation), so
levels compare between pictures; the colour scale spans [log 1e-5, max(picture max, log 1e-5 + 1)].

Layout is fixed (:data:`FIG_SIZE`, :data:`DPI`, :data:`AXES_RECT` in figure fractions), so a pixel
row of a one-panel picture maps to a mel band: :func:`band_of_row`.

matplotlib is the optional extra ``[ui]``; it is imported only here, and its absence is one error
naming the extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .audio import FMAX, FMIN, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, _hz_to_mel, _mel_to_hz, log_mel
from .checkpoint import atomic_write
from .errors import InputError, MissingExtraError

FIG_SIZE = (8.0, 3.2)  # inches, one panel; side by side doubles the width
DPI = 100
AXES_RECT = (0.09, 0.16, 0.78, 0.70)  # left, bottom, width, height of the image axes (figure fractions)
CMAP = "magma"  # luminance rises monotonically with the value
FREQ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000)


def _figure_class():
    """matplotlib's ``Figure`` (no pyplot: no global figure registry, no backend switch)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("drawing spectrograms needs matplotlib: pip install 'audioldm-core[ui]'") from None
    return Figure


def band_centres() -> np.ndarray:
    """(64,) float64: the centre frequency in Hz of each mel band of the picture (row 0 = lowest)."""
    return _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))[1:-1]


def mel_image(waveform: np.ndarray) -> np.ndarray:
    """(samples,) 16 kHz float waveform -> (64, T) float32 log-mel, row 0 = lowest band,
    T = samples // 160 + 1. A waveform of 512 samples or fewer is zero-padded to 513 first."""
    w = np.asarray(waveform, dtype=np.float32)
    if w.ndim != 1 or w.size == 0:
        raise InputError(f"audio must be a non-empty 1-D array of samples, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError("audio contains NaN or Inf")
    if w.size <= N_FFT // 2:
        w = np.pad(w, (0, N_FFT // 2 + 1 - w.size))
    return log_mel(w).numpy().T.copy()


def _draw(ax, mel: np.ndarray, seconds: float, vmax: float):
    low = float(np.log(LOG_FLOOR))
    im = ax.imshow(mel, origin="lower", aspect="auto", cmap=CMAP, vmin=low, vmax=vmax, interpolation="nearest",
                   extent=(0.0, seconds, 0.0, float(N_MELS)))
    centres = band_centres()
    ticks = [float(np.interp(f, centres, np.arange(N_MELS))) + 0.5 for f in FREQ_TICKS if f <= centres[-1]]
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{f:g}" if f < 1000 else f"{f / 1000:g}k" for f in FREQ_TICKS if f <= centres[-1]])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    return im


def _title(prompt: Optional[str], seed: Optional[int], extra: Optional[str] = None, limit: int = 90) -> str:
    parts = []
    if prompt:
        parts.append(repr(prompt if len(prompt) <= limit else prompt[:limit - 1] + "…"))
    if seed is not None:
        parts.append(f"seed {seed}")
    if extra:
        parts.append(extra)
    return ", ".join(parts)


def _vmax(*mels: np.ndarray) -> float:
    return max(float(np.log(LOG_FLOOR)) + 1.0, *(float(m.max()) for m in mels))


def _save(fig, path: Union[str, os.PathLike]) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"spectrogram pictures are PNG files; got {path.name!r} (use a .png name)")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def write_spectrogram(path: Union[str, os.PathLike], waveform: np.ndarray, *, prompt: Optional[str] = None,
                      seed: Optional[int] = None, title: Optional[str] = None) -> Path:
    """Write one waveform's log-mel as a PNG (atomically). waveform: (samples,) float at 16 kHz.

    The title is ``title`` if given, else the prompt (quoted) and the seed."""
    Figure = _figure_class()
    mel = mel_image(waveform)
    fig = Figure(figsize=FIG_SIZE, dpi=DPI)
    ax = fig.add_axes(AXES_RECT)
    im = _draw(ax, mel, len(waveform) / SAMPLE_RATE, _vmax(mel))
    ax.set_title(title if title is not None else _title(prompt, seed), fontsize=9)
    cax = fig.add_axes((AXES_RECT[0] + AXES_RECT[2] + 0.015, AXES_RECT[1], 0.015, AXES_RECT[3]))
    fig.colorbar(im, cax=cax).set_label("log mel", fontsize=8)
    return _save(fig, path)


def write_comparison(path: Union[str, os.PathLike], before: np.ndarray, after: np.ndarray, *,
                     prompt: Optional[str] = None, seed: Optional[int] = None, mode: str = "",
                     region_s: Optional[Sequence[float]] = None, cutoff_hz: Optional[float] = None) -> Path:
    """Write the input (left) and the edited output (right) side by side, on one colour scale.

    region_s: (start, end) seconds of an inpainted range, shaded on both panels.
    cutoff_hz: a super-resolution cutoff, drawn as a line on both panels (bands above it were
    regenerated). The title names ``mode``, the prompt and the seed."""
    Figure = _figure_class()
    mels = [mel_image(before), mel_image(after)]
    vmax = _vmax(*mels)
    fig = Figure(figsize=(FIG_SIZE[0] * 2, FIG_SIZE[1]), dpi=DPI)
    left, bottom, width, height = AXES_RECT
    for k, (mel, w, name) in enumerate(zip(mels, (before, after), ("input", "output"))):
        ax = fig.add_axes((left / 2 + k * 0.5, bottom, width / 2 - 0.02, height))
        seconds = len(w) / SAMPLE_RATE
        _draw(ax, mel, seconds, vmax)
        ax.set_title(name, fontsize=9)
        if region_s is not None:
            a, b = float(region_s[0]), float(region_s[1])
            ax.axvspan(max(a, 0.0), min(b, seconds), facecolor="none", edgecolor="cyan", hatch="//", linewidth=1.5)
        if cutoff_hz is not None:
            row = float(np.interp(cutoff_hz, band_centres(), np.arange(N_MELS))) + 0.5
            ax.axhline(row, color="cyan", linewidth=1.5, linestyle="--")
    extra = mode + (f" {region_s[0]:g}-{region_s[1]:g} s" if region_s is not None else "") + \
        (f" above {cutoff_hz:.0f} Hz" if cutoff_hz is not None else "")
    fig.suptitle(_title(prompt, seed, extra.strip() or None), fontsize=9)
    return _save(fig, path)


def write_region_preview(path: Union[str, os.PathLike], waveform: np.ndarray, start_s: float, end_s: float,
                         title: Optional[str] = None) -> Path:
    """The input's log-mel with ``[start_s, end_s)`` shaded: what an inpainting will regenerate."""
    Figure = _figure_class()
    mel = mel_image(waveform)
    seconds = len(waveform) / SAMPLE_RATE
    fig = Figure(figsize=FIG_SIZE, dpi=DPI)
    ax = fig.add_axes(AXES_RECT)
    _draw(ax, mel, seconds, _vmax(mel))
    ax.axvspan(max(start_s, 0.0), min(end_s, seconds), facecolor="none", edgecolor="cyan", hatch="//", linewidth=1.5)
    ax.set_title(title if title is not None else f"regenerated: {start_s:g}-{end_s:g} s", fontsize=9)
    return _save(fig, path)


def stack_pictures(path: Union[str, os.PathLike], pictures: Sequence[Union[str, os.PathLike]]) -> Path:
    """Write the PNGs ``pictures`` (same width) one above the other as one PNG (atomically)."""
    _figure_class()
    import matplotlib.image as mpimg

    rows = [mpimg.imread(str(p), format="png") for p in pictures]
    if not rows or len({r.shape[1:] for r in rows}) != 1:
        raise InputError("stack_pictures needs one or more pictures of the same width and channels")
    path = Path(path)
    atomic_write(path, lambda tmp: mpimg.imsave(tmp, np.concatenate(rows, axis=0), format="png"))
    return path


def band_of_row(row: int, image_height: int) -> int:
    """The mel band (0 = lowest) drawn at pixel row ``row`` (0 = top) of a one-panel picture of
    ``image_height`` pixels written by :func:`write_spectrogram`."""
    top = (1.0 - AXES_RECT[1] - AXES_RECT[3]) * image_height
    rows = AXES_RECT[3] * image_height
    frac = (row + 0.5 - top) / rows  # 0 at the top edge of the axes
    if not 0 <= frac < 1:
        raise InputError(f"pixel row {row} is outside the spectrogram axes")
    return int((1.0 - frac) * N_MELS)


def axes_rows(image_height: int) -> tuple[int, int]:
    """(first, last + 1) pixel rows of the image axes in a one-panel picture ``image_height`` high."""
    top = (1.0 - AXES_RECT[1] - AXES_RECT[3]) * image_height
    return int(np.ceil(top)), int(np.floor(top + AXES_RECT[3] * image_height))


def axes_cols(image_width: int) -> tuple[int, int]:
    """(first, last + 1) pixel columns of the image axes in a one-panel picture ``image_width`` wide."""
    return int(np.ceil(AXES_RECT[0] * image_width)), int(np.floor((AXES_RECT[0] + AXES_RECT[2]) * image_width))
