"""Zero-shot editing: style transfer, inpainting, super-resolution (tiny, and full-size s-full-v2).

Besides the checks that hold by construction (strength 0 short-cuts to the round trip; the kept region
is assigned after the last step), these would catch real bugs: strength 0 and 1 on every sampler (a
sampler plan whose start index is off runs a step at strength 0, or skips one at 1), and where on the
mel the masked edits act, in seconds and Hz (a wrong axis, orientation, scale or Hz-to-band mapping
of a mask). The compat="original" edits are tested against the original code in test_edit_original.py.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from torch import nn

from audioldm_core import AudioLDM
from audioldm_core.audio import SAMPLE_RATE, mel_filterbank, mel_for_vae
from audioldm_core.edit import encode_audio, freq_mask
from audioldm_core.errors import InputError, SourceNotFoundError
from audioldm_core.samplers import SAMPLERS

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


STEPS = 4


def _t2a_like(pipe, w, prompt, seed, sampler):
    """Text-to-audio of the edit's latent length from the same generator state."""
    x0, _ = encode_audio(pipe, w)
    seconds = x0.shape[2] * pipe.vae_scale_factor / 100
    return pipe(prompt, audio_length_in_s=seconds, generator=_g(seed), sampler=sampler, num_inference_steps=STEPS,
                progress=False).audios[:, :len(w)]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_strength_zero_is_the_round_trip_and_one_is_text_to_audio(tiny, sampler):
    """For every sampler: strength 0 runs no step (the VAE round trip, whatever the seed), strength 1
    runs them all from the same noise as text-to-audio. A plan whose start index is off by one (as
    PNDM's once was: strength 0 still ran one UNet call from t=1) fails here."""
    w = _tone(1.0)
    kw = dict(sampler=sampler, num_inference_steps=STEPS, progress=False)
    x0, n = encode_audio(tiny, w)
    rt = tiny.decode(x0, n).numpy()
    for seed in (1, 2):
        s0 = tiny.transfer(w, "rain", 0.0, generator=_g(seed), **kw).audios
        err = float(np.abs(s0 - rt).max())
        assert err == 0.0, f"{sampler}: strength 0 differs from the VAE round trip by {err:.3e} (seed {seed})"
    s1 = tiny.transfer(w, "rain", 1.0, generator=_g(3), **kw).audios
    t2a = _t2a_like(tiny, w, "rain", 3, sampler)
    err = float(np.abs(s1 - t2a).max())
    assert err == 0.0, f"{sampler}: strength 1 differs from text-to-audio by {err:.3e}"
    # contrast: a strength just above 0 runs one step and moves the output
    one_step = 1 / STEPS
    moved = float(np.abs(tiny.transfer(w, "rain", one_step, generator=_g(1), **kw).audios - rt).max())
    assert moved > 1e-3, f"{sampler}: strength {one_step} moved the output by only {moved:.3e}"


class BlockVAE(nn.Module):
    """A VAE stand-in whose decoded mel is local in time and frequency, so the tests can see where on
    the mel an edit acted (the tiny model's decoder mixes every band and frame: its attention and
    receptive field cover the whole 16-bin latent). encode: (B, 1, T, 64) log-mel -> the mean over
    each factor x factor block, in every channel (B, 8, T/f, 64/f), logvar 0; decode: channel mean,
    each latent cell repeated over its block (B, 1, T, 64)."""

    def __init__(self, factor: int, channels: int):
        super().__init__()
        self.factor, self.channels = factor, channels
        self.unit = nn.Parameter(torch.ones(()))  # the pipeline reads the VAE's dtype from a parameter

    def encode(self, mel):
        z = nn.functional.avg_pool2d(mel, self.factor).repeat(1, self.channels, 1, 1)
        return z, torch.zeros_like(z)

    def decode(self, z, chunk_frames=None):
        return z.mean(1, keepdim=True).repeat_interleave(self.factor, 2).repeat_interleave(self.factor, 3)


@pytest.fixture(scope="module")
def local_vae(tiny):
    """The tiny pipeline with :class:`BlockVAE` (UNet, text encoder and vocoder are tiny's)."""
    return AudioLDM(tiny.config, tiny.tokenizer, tiny.clap, tiny.unet,
                    BlockVAE(tiny.vae_scale_factor, tiny.config.unet.in_channels), tiny.vocoder)


def _edited_mel(pipe, edit, w, **kw):
    """(input's log-mel (T, 64) as the VAE sees it, its round trip, the edit's decoded mel)."""
    last = {}
    edit(w, callback=lambda i, t, x: last.update(x=x), generator=_g(4), num_inference_steps=STEPS, progress=False,
         **kw)
    mel, _ = mel_for_vae(w, pipe.vae_scale_factor)
    x0, _ = encode_audio(pipe, w)
    scale = pipe.config.vae.scaling_factor
    return mel[0, 0], pipe.vae.decode(x0 / scale)[0, 0], pipe.vae.decode(last["x"] / scale)[0, 0]


@pytest.mark.parametrize("cutoff", [2000.0, 4000.0])
def test_super_resolution_regenerates_the_bands_above_the_cutoff(local_vae, cutoff):
    """On the decoded mel, in Hz: every mel band wholly below (cutoff - one latent block) keeps the
    input's round trip exactly; every band wholly above the cutoff changes. The input is band-limited
    at the cutoff, so its mel above it is near the floor and the edit must lift it."""
    t = np.arange(32000) / 16000
    w = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (300, 900, cutoff * 0.6, cutoff * 0.9)).astype(np.float32)
    mel, rt, out = _edited_mel(local_vae, lambda *a, **k: local_vae.super_resolve(*a, "", cutoff_hz=cutoff, **k), w)
    fb = mel_filterbank()
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    top = np.array([freqs[np.nonzero(row)[0].max()] for row in fb])
    bottom = np.array([freqs[np.nonzero(row)[0].min()] for row in fb])
    block = local_vae.vae_scale_factor
    below = np.nonzero(top <= cutoff)[0]
    below = below[below < len(below) - block]  # one latent block of slack: a block straddling the cutoff is regenerated
    above = np.nonzero(bottom >= cutoff)[0]
    assert len(below) >= 8 and len(above) >= 8
    kept_err = float((out[:, below] - rt[:, below]).abs().max())
    assert kept_err == 0.0, f"cutoff {cutoff} Hz: bands below changed by up to {kept_err:.3e}"
    change = (out[:, above] - rt[:, above]).abs().mean(0)  # per band, mean over frames
    assert float(change.min()) > 0.1, f"cutoff {cutoff} Hz: some band above kept (mean change {change.min():.3e})"
    lift = float(out[:, above].mean() - mel[:, above].mean())
    assert abs(lift) > 0.1, f"the bands above {cutoff} Hz stayed at the input's level (moved {lift:.3e})"


def test_inpainting_regenerates_the_range_and_keeps_the_rest(local_vae, tiny):
    """On the decoded mel, in seconds: frames outside [start, end) (with one latent block of slack at
    each edge) keep the round trip exactly; every frame inside changes. And on the tiny model itself:
    the latents outside stay the encoded ones, every latent frame inside differs from them."""
    w = _tone(2.0)
    start, end = 0.52, 1.2
    mel, rt, out = _edited_mel(local_vae, lambda *a, **k: local_vae.inpaint(*a, "a dog barks", start, end, **k), w)
    fps = SAMPLE_RATE / 160  # mel frames per second
    block = local_vae.vae_scale_factor
    frames = np.arange(mel.shape[0])
    inside = (frames >= start * fps) & (frames < end * fps)
    outside = (frames < start * fps - block) | (frames >= end * fps + block)
    assert inside.sum() >= 60 and outside.sum() >= 100
    kept_err = float((out[outside] - rt[outside]).abs().max())
    assert kept_err == 0.0, f"frames outside {start}-{end} s changed by up to {kept_err:.3e}"
    change = (out[inside] - rt[inside]).abs().mean(1)
    assert float(change.min()) > 0.1, f"some frame inside {start}-{end} s kept (mean change {change.min():.3e})"
    # the tiny model's own latents
    last = {}
    tiny.inpaint(w, "a dog barks", start, end, generator=_g(4), num_inference_steps=STEPS, progress=False,
                 callback=lambda i, t, x: last.update(x=x))
    x0, _ = encode_audio(tiny, w)
    per_s = fps / tiny.vae_scale_factor
    region = torch.zeros(x0.shape[2], dtype=torch.bool)
    region[int(np.floor(start * per_s)):int(np.ceil(end * per_s))] = True
    assert torch.equal(last["x"][:, :, ~region], x0[:, :, ~region])
    diff = (last["x"] - x0).abs().amax(dim=(0, 1, 3))[region]
    assert float(diff.min()) > 1e-2, f"a latent frame inside the range kept the input (change {diff.min():.3e})"


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


def test_cli_edits_and_bad_input(tmp_path, capsys):
    """The first command through the installed entry point (a subprocess), the rest in-process
    through the same ``main``."""
    from audioldm_core.cli import main

    src = tmp_path / "in.wav"
    samples_44k = int(1.5 * 44100)
    sf.write(str(src), np.stack([_tone(1.5 * 44100 / 16000)] * 2, axis=1), 44100)  # stereo, 44.1 kHz, 1.5 s
    common = ["--model", "tiny", "--steps", "2", "--seed", "1", "--no-progress"]
    for k, (cmd, extra, name) in enumerate((("transfer", ["rain", "--strength", "0.4"], "t.wav"),
                                            ("inpaint", ["dog", "--start", "0.2", "--end", "0.6"], "i.wav"),
                                            ("superres", ["--cutoff", "3000"], "s.flac"))):
        out = tmp_path / name
        argv = [cmd, str(src), *extra, "-o", str(out), *common]
        if k == 0:
            r = subprocess.run([sys.executable, "-m", "audioldm_core.cli", *argv], capture_output=True, text=True,
                               cwd=REPO)
            code, err = r.returncode, r.stderr
        else:
            code, err = main(argv), capsys.readouterr().err
        assert code == 0, err
        data, rate = sf.read(str(out))
        assert rate == 16000 and abs(len(data) - samples_44k * 16000 / 44100) <= 2
        assert "downmixed" in err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk")
    for args in (["transfer", str(tmp_path / "none.wav"), "x"], ["transfer", str(bad), "x"],
                 ["inpaint", str(src), "x", "--start", "1", "--end", "0.5"],
                 ["transfer", str(src), "x", "--strength", "2"], ["superres", str(src), "--cutoff", "9000"]):
        out = tmp_path / "never.wav"
        code = main(args + ["-o", str(out), *common])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if "error" in ln]
        assert code == 2 and len(errors) == 1, (args, err)
        assert not out.exists()


@pytest.mark.fullsize
def test_full_size_edits(cvssp_folder, converted_file):
    pipe = AudioLDM.from_pretrained(converted_file("s-full-v2"))
    _edit_checks(pipe, "s-full-v2")
    del pipe
    gc.collect()


def test_inpaint_range_may_end_at_the_end_of_a_non_16k_file(tmp_path, capsys):
    """A 22.05 kHz file of 46548 frames lasts 2.1110204081632653 s; after resampling it is 33777
    samples (2.1110625 s rounded down to whole samples elsewhere). A range ending exactly at the file's
    end is inside it, from Python and from the CLI; one sample period later is outside."""
    import soundfile as sf

    from audioldm_core.cli import main

    path = tmp_path / "in22k.wav"
    sf.write(path, 0.3 * np.sin(np.arange(46548) / 22050 * 2 * np.pi * 440).astype(np.float32), 22050)
    end = 46548 / 22050
    assert end == 2.1110204081632653
    pipe = AudioLDM.from_pretrained("tiny")
    out = pipe.inpaint(str(path), "x", 1.5, end, num_inference_steps=1, progress=False)
    assert out.audios.shape[1] > 0
    with pytest.raises(InputError, match="outside the audio"):
        pipe.inpaint(str(path), "x", 1.5, end + 1 / 22050, num_inference_steps=1, progress=False)
    args = ["inpaint", str(path), "x", "--start", "1.5", "--end", repr(end), "--model", "tiny", "--steps", "1",
            "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "out.wav")]) == 0
    assert main([*args[:6], repr(end + 1 / 22050), *args[7:], "-o", str(tmp_path / "late.wav")]) == 2
    assert "outside the audio" in capsys.readouterr().err
    assert not (tmp_path / "late.wav").exists()
