"""Audio front-end: file reading (every soundfile format/bit depth/rate/channel count we promise),
the mel filterbank (vs librosa) and the whole front-end (vs the original AudioLDM code: the
``audioldm`` 0.1.1 package's ``audio/stft.py`` TacotronSTFT and ``audio/tools.py`` wav_to_fbank)."""

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

from audioldm_core.audio import HOP, load_audio, log_mel, mel_filterbank, mel_for_vae, preprocess
from audioldm_core.errors import AudioLDMError, InputError, SourceNotFoundError
from conftest import require


# --- The original AudioLDM code ---------------------------------------------------------------------

def _original_root() -> Path:
    # installed by the README/CI test command with `pip install --no-deps --target <venv>/audioldm-original`
    target = Path(sys.prefix) / "audioldm-original" / "audioldm"
    if target.is_dir():
        return target
    spec = importlib.util.find_spec("audioldm")
    if spec is None or not spec.submodule_search_locations:
        require("original", "the original audioldm package is not installed in .venv/audioldm-original")
    return Path(spec.submodule_search_locations[0])


def _original_packages() -> None:
    """Register ``audioldm`` and ``audioldm.audio`` as bare namespace modules, so their submodules
    import without the package ``__init__`` files (which need pytorch_lightning, torchaudio, ...)."""
    root = _original_root()
    for name, path in (("audioldm", root), ("audioldm.audio", root / "audio")):
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod


@functools.lru_cache(maxsize=1)
def original_stft():
    """The original ``TacotronSTFT(1024, 160, 1024, 64, 16000, 0, 8000)`` (as audioldm's
    ``default_audioldm_config`` builds it), with call adapters for librosa >= 0.10, whose
    ``filters.mel`` and ``util.pad_center`` take keyword arguments only (same computation)."""
    import librosa.filters
    import librosa.util

    _original_packages()
    real_mel, real_pad = librosa.filters.mel, librosa.util.pad_center
    librosa.filters.mel = lambda sr, n_fft, n_mels, fmin, fmax: real_mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
                                                                         fmin=fmin, fmax=fmax)
    librosa.util.pad_center = lambda data, size, **kw: real_pad(data, size=size, **kw)
    try:
        stft = importlib.import_module("audioldm.audio.stft")
        return stft.TacotronSTFT(1024, 160, 1024, 64, 16000, 0, 8000)
    finally:
        librosa.filters.mel, librosa.util.pad_center = real_mel, real_pad


def _stub_load(filename):
    data, rate = sf.read(str(filename), dtype="float32", always_2d=True)  # torchaudio.load: (C, N) float32
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def _stub_resample(waveform, orig_freq, new_freq):
    if orig_freq != new_freq:  # the parity files are 16 kHz: torchaudio's resample is then the identity
        raise AssertionError("the torchaudio stub only handles 16 kHz files")
    return waveform


@functools.lru_cache(maxsize=1)
def original_tools():
    """The original ``audio/tools.py`` itself. It imports torchaudio (not installable here without
    pulling a second torch) only for ``torchaudio.load`` and ``torchaudio.functional.resample`` in
    ``read_wav_file``; a stub stands in for both (soundfile's float32 samples, identity at 16 kHz)
    while the module imports, and is removed from ``sys.modules`` again afterwards."""
    original_stft()
    stub = types.ModuleType("torchaudio")
    stub.load = _stub_load
    stub.functional = types.SimpleNamespace(resample=_stub_resample)
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = stub
    try:
        return importlib.import_module("audioldm.audio.tools")
    finally:
        if saved is None:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = saved


# --- Filterbank and front-end parity ----------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(sr=16000, n_fft=1024, n_mels=64, fmin=0, fmax=8000),
                                dict(sr=22050, n_fft=2048, n_mels=80, fmin=0, fmax=None),
                                dict(sr=44100, n_fft=512, n_mels=40, fmin=20, fmax=16000)])
def test_filterbank_equals_librosa(kw):
    import librosa

    ours = mel_filterbank(kw["sr"], kw["n_fft"], kw["n_mels"], kw["fmin"], kw["fmax"])
    ref = librosa.filters.mel(**kw)
    err = float(np.abs(ours - ref).max())
    print(f"\nmel filterbank {kw} vs librosa: max abs err {err:.2e} (peak {ref.max():.4f})")
    assert ours.shape == ref.shape == (kw["n_mels"], kw["n_fft"] // 2 + 1) and ours.dtype == np.float32
    assert err <= 1e-7, err  # measured: 0 (bit-identical)
    if kw["sr"] == 16000:
        np.testing.assert_array_equal(ours, original_stft().mel_basis.numpy())


def test_stft_basis_equals_original():
    from audioldm_core.audio import _stft_basis

    assert torch.equal(_stft_basis(), original_stft().stft_fn.forward_basis)


def _signal(kind: str, n: int) -> np.ndarray:
    g = np.random.default_rng(abs(hash(kind)) % 2**32)
    t = np.arange(n) / 16000
    if kind == "lowpass4k":
        spec = np.fft.rfft(g.standard_normal(n))
        spec[len(spec) // 2:] = 0
        return (np.fft.irfft(spec, n) * 3).astype(np.float32)
    return {"noise": g.standard_normal(n) * 0.3,
            "chirp": np.sin(2 * np.pi * (200 + 1500 * t) * t) * 0.8 + 0.2,  # DC offset: mean removal
            "quiet": g.standard_normal(n) * 1e-4,
            "sine": 0.9 * np.sin(2 * np.pi * 440 * t),
            "clicks": (np.arange(n) % 4000 == 0) * 0.7}[kind].astype(np.float32)


FRAMES = 256  # target length: 2.56 s


@pytest.mark.parametrize("kind", ["noise", "chirp", "quiet", "lowpass4k", "sine", "clicks"])
@pytest.mark.parametrize("seconds", [2.0, 2.56, 3.0], ids=["pad", "exact", "cut"])
def test_front_end_matches_original_audioldm(tmp_path, kind, seconds):
    """File -> (256, 64) log-mel: ours (load_audio + preprocess + log_mel(target_frames)) against the
    original ``wav_to_fbank(file, 256, TacotronSTFT)``, on inputs shorter than, equal to and longer
    than the target (the longer one with its peak in the part past the target, which the original
    still normalises by)."""
    w = _signal(kind, int(16000 * seconds))
    if seconds > FRAMES * HOP / 16000:
        w[-200] = 1.5 * np.abs(w).max() + 0.1
    path = tmp_path / "in.wav"
    sf.write(str(path), w, 16000, subtype="FLOAT")
    ref, _, _ = original_tools().wav_to_fbank(str(path), target_length=FRAMES, fn_STFT=original_stft())
    ours = log_mel(preprocess(load_audio(path)[0]), target_frames=FRAMES)
    err = float((ours - ref).abs().max())
    print(f"\nfront-end vs original wav_to_fbank ({kind}, {seconds} s -> {FRAMES} frames): "
          f"max abs err {err:.2e} in log-mel (range {float(ref.min()):.2f}..{float(ref.max()):.2f})")
    assert ours.shape == ref.shape == (FRAMES, 64) and ours.dtype == torch.float32
    assert err <= 1e-5, err


@pytest.mark.parametrize("kind", ["chirp", "lowpass4k"])
def test_log_mel_without_target_matches_original_get_mel_from_wav(kind):
    w = preprocess(_signal(kind, 16000 + 77))
    ref, _, _ = original_tools().get_mel_from_wav(w, original_stft())  # (64, T) numpy
    ours = log_mel(w)
    err = float(np.abs(ours.numpy().T - ref).max())
    print(f"\nlog_mel vs original get_mel_from_wav ({kind}): max abs err {err:.2e}")
    assert ours.shape == (len(w) // HOP + 1, 64) and err <= 1e-5, err
    assert torch.equal(log_mel(torch.from_numpy(w).double()), ours)  # tensors (any float dtype) too


def test_preprocess_is_the_original_normalisation():
    tools = original_tools()
    w = _signal("chirp", 20000)
    ref = tools.normalize_wav(w)
    ref = 0.5 * (ref / np.max(np.abs(ref)))
    ours = preprocess(w)
    np.testing.assert_array_equal(ours, ref.astype(np.float32))
    assert abs(float(ours.mean())) < 1e-6 and np.abs(ours).max() == np.float32(0.5)
    assert w[0] == _signal("chirp", 20000)[0]  # the input is not modified


# --- Reading files ----------------------------------------------------------------------------------

_FORMATS = [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
            ("FLAC", "PCM_S8"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS")]


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("fmt,subtype", _FORMATS, ids=[f"{f}-{s}" for f, s in _FORMATS])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_load_any_format_rate_channels(tmp_path, rate, fmt, subtype, channels):
    secs, f0 = 0.5, 440.0
    n = int(rate * secs)
    tone = np.sin(2 * np.pi * f0 * np.arange(n) / rate)
    data = np.stack([0.4 * tone, 0.2 * tone], axis=1)[:, :channels].astype(np.float32)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), data, rate, subtype=subtype, format=fmt)
    w, info = load_audio(path)
    assert w.dtype == np.float32 and w.ndim == 1 and np.isfinite(w).all()
    assert (info.sample_rate, info.channels, info.frames) == (rate, channels, n)
    assert info.downmixed == (channels > 1) and info.resampled == (rate != 16000)
    assert abs(len(w) - n * 16000 / rate) <= 1, len(w)
    spectrum = np.abs(np.fft.rfft(w * np.hanning(len(w)), 16 * len(w)))
    peak_hz = np.argmax(spectrum) * 16000 / (16 * len(w))
    assert abs(peak_hz - f0) < 1, peak_hz  # the frequency survives resampling
    amp = 0.4 if channels == 1 else 0.3  # stereo: the mean of 0.4 and 0.2 (channel 0 alone would be 0.4)
    mid = w[len(w) // 4: 3 * len(w) // 4]
    assert abs(np.sqrt(2 * np.mean(mid ** 2)) - amp) < 0.02 * amp + 0.004, np.sqrt(2 * np.mean(mid ** 2))
    if subtype in ("PCM_24", "PCM_32", "FLOAT"):  # lossless, fine quantisation: the exact resampled tone
        t = np.arange(len(w)) / 16000
        expect = amp * np.sin(2 * np.pi * f0 * t)
        err = float(np.abs(w - expect)[len(w) // 8: -len(w) // 8].max())
        assert err < 1e-3, err
    if rate == 16000:
        np.testing.assert_array_equal(w, sf.read(str(path), dtype="float32", always_2d=True)[0].mean(
            axis=1, dtype=np.float32))


def test_load_audio_other_target_rate(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(str(path), np.zeros(4410, np.float32) + 0.1, 44100)
    w, info = load_audio(path, target_rate=22050)
    assert len(w) == 2205 and info.resampled and abs(info.duration - 0.1) < 1e-9


# --- Bad input: one clear error each ----------------------------------------------------------------

def _bad_files(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    (tmp_path / "junk.ogg").write_bytes(b"OggS" + bytes(200))
    sf.write(str(tmp_path / "full.wav"), np.zeros(1000, np.float32), 16000)
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    sf.write(str(tmp_path / "empty.flac"), np.zeros((0, 2), np.float32), 16000, subtype="PCM_16")
    nan = np.zeros((1000, 2), np.float32)
    nan[500, 1] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "inf.wav"), np.full(1000, np.inf, np.float32), 16000, subtype="FLOAT")


@pytest.mark.parametrize("name,error,match", [
    ("missing.wav", SourceNotFoundError, "does not exist"),
    ("folder.wav", InputError, "not a file"),
    ("junk.wav", InputError, "cannot read"),
    ("junk.ogg", InputError, "cannot read"),
    ("truncated.wav", InputError, "cannot read|no samples"),
    ("empty.wav", InputError, "no samples"),
    ("empty.flac", InputError, "cannot read|no samples"),  # libsndfile cannot reopen an empty FLAC
    ("nan.wav", InputError, "NaN or Inf"),
    ("inf.wav", InputError, "NaN or Inf"),
])
def test_bad_audio_files(tmp_path, name, error, match):
    _bad_files(tmp_path)
    with pytest.raises(error, match=match) as e:
        load_audio(tmp_path / name)
    assert isinstance(e.value, AudioLDMError) and str(tmp_path / name) in str(e.value)


@pytest.mark.parametrize("call,match", [
    (lambda: load_audio("x.wav", target_rate=0), "target_rate"),
    (lambda: preprocess(np.full(1000, 0.3, np.float32)), "silent"),
    (lambda: preprocess(np.zeros(0, np.float32)), "non-empty 1-D"),
    (lambda: preprocess(np.zeros((2, 1000), np.float32)), "non-empty 1-D"),
    (lambda: preprocess(np.array([0.1, np.nan] * 500, np.float32)), "NaN or Inf"),
    (lambda: log_mel(np.zeros(512, np.float32)), "too short"),
    (lambda: log_mel(np.zeros(1000, np.float32), target_frames=0), "target_frames"),
    (lambda: log_mel(np.array([np.inf] * 1000, np.float32)), "NaN or Inf"),
    (lambda: mel_for_vae(np.random.default_rng(0).standard_normal(8000), frames=10), "multiple of 4"),
    (lambda: mel_for_vae(np.random.default_rng(0).standard_normal(8000), 0), "factor"),
    (lambda: mel_filterbank(fmin=9000), "fmin < fmax"),
])
def test_bad_arguments(call, match):
    with pytest.raises(InputError, match=match):
        call()


# --- The VAE's input --------------------------------------------------------------------------------

def test_mel_for_vae_pads_to_the_vae_factor():
    w = _signal("chirp", 16000 * 2 + 123)
    mel, n = mel_for_vae(w)
    assert n == 32123 and mel.shape == (1, 1, 204, 64) and mel.dtype == torch.float32  # ceil(32123/160)=201 -> 204
    assert torch.equal(mel[0, 0], log_mel(preprocess(w), target_frames=204))
    # the padding is silence through the real STFT: frames whose window lies past the input are at the log floor
    long, _ = mel_for_vae(w, frames=220)
    assert torch.equal(long[0, 0, 205:], torch.full((15, 64), float(np.log(np.float32(1e-5)))))
    mel8, n8 = mel_for_vae(w, 8)
    assert mel8.shape == (1, 1, 208, 64) and n8 == 32123
    cut, n_cut = mel_for_vae(w, frames=100)  # an explicit length shorter than the input
    assert cut.shape == (1, 1, 100, 64) and n_cut == 16000
    assert torch.equal(cut[0, 0, :96], mel[0, 0, :96])
    short, n_short = mel_for_vae(_signal("noise", 200))  # shorter than one STFT window: padded first
    assert short.shape == (1, 1, 4, 64) and n_short == 200


def test_audio_output_extensions_are_the_written_formats():
    """The output-path check (audioldm_core.files) accepts exactly the formats write_audio writes."""
    from audioldm_core.audio import FORMATS
    from audioldm_core.files import OUTPUT_KINDS

    assert set(OUTPUT_KINDS["audio"][1]) == {f".{f}" for f in FORMATS}
