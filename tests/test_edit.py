"""Zero-shot editing: style transfer, inpainting, super-resolution (tiny, and full-size s-full-v2)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioldm_core import AudioLDM
from audioldm_core.edit import encode_audio, freq_mask
from audioldm_core.errors import InputError, SourceNotFoundError

REPO = Path(__file__).resolve().parent.parent


def _tone(seconds=2.0, cutoff=None):
    t = np.arange(int(16000 * seconds)) / 16000
    w = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    if cutoff is None:
        w = w + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return AudioLDM.from_pretrained("tiny")


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _edit_checks(pipe, label):
    w = _tone(2.03)
    kw = dict(num_inference_steps=4, progress=False)
    # lengths, determinism
    a = pipe.transfer(w, "rain", 0.6, generator=_g(1), **kw).audios
    b = pipe.transfer(w, "rain", 0.6, generator=_g(1), **kw).audios
    assert a.shape == (1, len(w)) and np.array_equal(a, b)
    # strength 0 = VAE round trip of the input
    x0, n = encode_audio(pipe, w)
    rt = pipe.decode(x0, n).numpy()
    s0 = pipe.transfer(w, "rain", 0.0, generator=_g(1), **kw).audios
    assert np.array_equal(s0, rt), f"{label}: strength 0 is not the VAE round trip"
    # strength 1 = text-to-audio from the same noise
    s1 = pipe.transfer(w, "rain", 1.0, generator=_g(2), **kw).audios
    frames = x0.shape[2] * pipe.vae_scale_factor
    t2a = pipe("rain", audio_length_in_s=frames / 100, generator=_g(2), **kw).audios[:, :len(w)]
    err = float(np.abs(s1 - t2a).max())
    assert err == 0.0, f"{label}: strength 1 differs from text-to-audio by {err:.2e}"
    # inpainting: kept latents exactly the encoded ones after the last step
    last = {}
    out = pipe.inpaint(w, "a dog barks", 0.5, 1.2, generator=_g(3), callback=lambda i, t, x: last.update(x=x), **kw)
    keep = torch.ones(x0.shape[2], dtype=torch.bool)
    keep[int(0.5 * 25):int(np.ceil(1.2 * 25))] = False
    assert out.audios.shape == (1, len(w))
    assert torch.equal(last["x"][:, :, keep], x0[:, :, keep]), f"{label}: kept region changed"
    assert not torch.equal(last["x"][:, :, ~keep], x0[:, :, ~keep])
    # super-resolution: bands below the cutoff are the input's latents
    last.clear()
    sr = pipe.super_resolve(w, "", cutoff_hz=4000, generator=_g(4), callback=lambda i, t, x: last.update(x=x), **kw)
    m = freq_mask(x0.shape[3], 4000, pipe.vae_scale_factor)[0, 0, 0].bool()
    assert 0 < int(m.sum()) < x0.shape[3]
    assert torch.equal(last["x"][..., m], x0[..., m]) and sr.audios.shape == (1, len(w))
    print(f"\n{label}: transfer/inpaint/super-resolution checks passed (strength 1 vs t2a err {err:.1e})")


def test_tiny_edits(tiny):
    _edit_checks(tiny, "tiny")


@pytest.mark.parametrize("sampler", ["pndm", "euler", "dpmsolver++", "heun"])
def test_edits_run_on_other_samplers(tiny, sampler):
    w = _tone(1.0)
    out = tiny.transfer(w, "rain", 0.5, generator=_g(), sampler=sampler, num_inference_steps=4, progress=False)
    assert out.audios.shape == (1, len(w)) and np.isfinite(out.audios).all()
    last = {}
    tiny.inpaint(w, "x", 0.2, 0.5, generator=_g(), sampler=sampler, num_inference_steps=4, progress=False,
                 callback=lambda i, t, x: last.update(x=x))
    x0, _ = encode_audio(tiny, w)
    assert torch.equal(last["x"][:, :, :5], x0[:, :, :5])


def test_detected_cutoff(tiny, tmp_path):
    from audioldm_core.edit import detect_cutoff

    t = np.arange(32000) / 16000
    w = sum(np.sin(2 * np.pi * f * t) for f in (300, 900, 2500, 3800)).astype(np.float32) * 0.2
    c = detect_cutoff(w)
    assert 3700 < c < 4300, c
    out = tiny.super_resolve(w, num_inference_steps=2, progress=False)
    assert out.audios.shape == (1, len(w))


@pytest.mark.parametrize("call,exc,match", [
    (lambda p, w, f: p.transfer(f / "missing.wav", "x"), SourceNotFoundError, "does not exist"),
    (lambda p, w, f: p.transfer(np.zeros(0, np.float32), "x"), InputError, "non-empty"),
    (lambda p, w, f: p.transfer(w, "x", strength=1.5), InputError, "strength"),
    (lambda p, w, f: p.transfer(w, "x", strength=-0.1), InputError, "strength"),
    (lambda p, w, f: p.inpaint(w, "x", 1.0, 0.5), InputError, "before end"),
    (lambda p, w, f: p.inpaint(w, "x", 0.5, 9.0), InputError, "outside the audio"),
    (lambda p, w, f: p.super_resolve(w, "", cutoff_hz=9000), InputError, "cutoff_hz"),
    (lambda p, w, f: p.super_resolve(w, "", cutoff_hz=0), InputError, "cutoff_hz"),
    (lambda p, w, f: p.transfer(np.zeros(16000, np.float32), "x"), InputError, "silent"),
])
def test_bad_edit_input(tiny, tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tiny, _tone(1.0), tmp_path)


def test_cli_edits_and_bad_input(tmp_path):
    src = tmp_path / "in.wav"
    samples_44k = int(1.5 * 44100)
    sf.write(str(src), np.stack([_tone(1.5 * 44100 / 16000)] * 2, axis=1), 44100)  # stereo, 44.1 kHz, 1.5 s
    base = [sys.executable, "-m", "audioldm_core.cli"]
    common = ["--model", "tiny", "--steps", "2", "--seed", "1", "--no-progress"]
    for cmd, extra, name in (("transfer", ["rain", "--strength", "0.4"], "t.wav"),
                             ("inpaint", ["dog", "--start", "0.2", "--end", "0.6"], "i.wav"),
                             ("superres", ["--cutoff", "3000"], "s.flac")):
        out = tmp_path / name
        r = subprocess.run(base + [cmd, str(src), *extra, "-o", str(out), *common], capture_output=True, text=True,
                           cwd=REPO)
        assert r.returncode == 0, r.stderr
        data, rate = sf.read(str(out))
        assert rate == 16000 and abs(len(data) - samples_44k * 16000 / 44100) <= 2
        assert "downmixed" in r.stderr
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    for args in (["transfer", str(tmp_path / "none.wav"), "x"], ["transfer", str(bad), "x"],
                 ["inpaint", str(src), "x", "--start", "1", "--end", "0.5"],
                 ["transfer", str(src), "x", "--strength", "2"], ["superres", str(src), "--cutoff", "9000"]):
        out = tmp_path / "never.wav"
        r = subprocess.run(base + args + ["-o", str(out), *common], capture_output=True, text=True, cwd=REPO)
        errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
        assert r.returncode == 2 and len(errors) == 1, (args, r.stderr)
        assert not out.exists()


@pytest.mark.fullsize
def test_full_size_edits(cvssp_folder, converted_file):
    pipe = AudioLDM.from_pretrained(converted_file("s-full-v2"))
    _edit_checks(pipe, "s-full-v2")
    del pipe
    gc.collect()
