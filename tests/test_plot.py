"""Spectrogram pictures: a sine lands in its mel band's pixel rows; the CLI's --spectrogram and plot."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from audioldm_core.audio import SAMPLE_RATE, mel_filterbank, write_audio
from audioldm_core.errors import MissingExtraError

try:
    import matplotlib  # noqa: F401
except ImportError:  # pragma: no cover - the [ui] extra is in the test extra
    matplotlib = None


@pytest.fixture(autouse=True)
def _needs_matplotlib():
    if matplotlib is None:
        from conftest import require

        require("ui", "matplotlib (the [ui] extra) is missing")


def _sine(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _read_png(path):
    import matplotlib.image as mpimg

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return mpimg.imread(path)[..., :3]


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 6000.0])
def test_sine_peak_lands_in_its_mel_row(tmp_path, freq):
    from audioldm_core import plot

    expect = int(np.argmax(mel_filterbank()[:, int(round(freq * 1024 / SAMPLE_RATE))]))
    mel = plot.mel_image(_sine(freq))
    assert mel.shape == (64, SAMPLE_RATE // 160 + 1)
    assert int(mel.mean(axis=1).argmax()) == expect
    png = plot.write_spectrogram(tmp_path / "s.png", _sine(freq), prompt="a sine", seed=3)
    img = _read_png(png)
    h, w = img.shape[:2]
    r0, r1 = plot.axes_rows(h)
    c0, c1 = plot.axes_cols(w)
    lum = img[r0:r1, c0:c1].mean(axis=(1, 2))  # magma: brighter = larger
    row = r0 + int(np.argmax(lum))
    assert plot.band_of_row(row, h) == expect, f"{freq} Hz drawn in band {plot.band_of_row(row, h)}, expected {expect}"
    # contrast: the four test tones fall in four different bands, each band spanning a few pixel rows
    assert (r1 - r0) / 64 >= 3


def test_bands_are_distinct_for_the_test_tones():
    from audioldm_core import plot

    bands = {int(plot.mel_image(_sine(f)).mean(axis=1).argmax()) for f in (440.0, 1000.0, 3000.0, 6000.0)}
    assert len(bands) == 4


def test_comparison_and_preview_are_pngs(tmp_path):
    from audioldm_core import plot

    a, b = _sine(1000.0, 2.0), _sine(3000.0, 2.0)
    img = _read_png(plot.write_comparison(tmp_path / "c.png", a, b, prompt="p", seed=1, mode="inpaint",
                                          region_s=(0.5, 1.0)))
    assert img.shape[1] == 2 * _read_png(plot.write_spectrogram(tmp_path / "s.png", a)).shape[1]
    _read_png(plot.write_comparison(tmp_path / "r.png", a, b, mode="superres", cutoff_hz=4000.0))
    _read_png(plot.write_region_preview(tmp_path / "p.png", a, 0.2, 0.4))


def test_not_png_name_and_short_audio(tmp_path):
    from audioldm_core import plot
    from audioldm_core.errors import InputError

    with pytest.raises(InputError, match="PNG"):
        plot.write_spectrogram(tmp_path / "s.jpg", _sine(440.0))
    assert not (tmp_path / "s.jpg").exists()
    _read_png(plot.write_spectrogram(tmp_path / "short.png", _sine(440.0, 0.01)))


def test_missing_matplotlib_names_the_extra(monkeypatch):
    from audioldm_core import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"audioldm-core\[ui\]"):
        plot._figure_class()


def test_cli_spectrogram_and_plot(tmp_path, capsys):
    from audioldm_core.cli import main

    out = tmp_path / "g.wav"
    assert main(["generate", "a dog", "--model", "tiny", "--seconds", "1", "--steps", "2", "--seed", "5",
                 "-o", str(out), "--spectrogram", "--no-progress"]) == 0
    assert _read_png(tmp_path / "g.png").std() > 0.05
    assert main(["inpaint", str(out), "cat", "--start", "0.2", "--end", "0.6", "--model", "tiny", "--steps", "2",
                 "--seed", "1", "-o", str(tmp_path / "i.flac"), "--spectrogram", "--no-progress"]) == 0
    assert _read_png(tmp_path / "i.png").shape[1] == 1600  # side by side
    write_audio(tmp_path / "sine.wav", _sine(1000.0))
    assert main(["plot", str(tmp_path / "sine.wav")]) == 0
    _read_png(tmp_path / "sine.png")
    assert main(["plot", str(tmp_path / "sine.wav"), "-o", str(tmp_path / "x.jpg")]) == 2
    assert main(["plot", str(tmp_path / "missing.wav")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_missing_matplotlib_fails_before_work(tmp_path, monkeypatch, capsys):
    from audioldm_core.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["generate", "x", "--model", "tiny", "--seconds", "1", "--steps", "1", "-o",
                 str(tmp_path / "g.wav"), "--spectrogram", "--no-progress"]) == 2
    assert "audioldm-core[ui]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_serve_refuses_share(capsys):
    from audioldm_core.cli import main

    assert main(["serve", "--share"]) == 2
    assert "--share is not supported" in capsys.readouterr().err
