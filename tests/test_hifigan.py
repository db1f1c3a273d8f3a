"""HiFi-GAN vocoder: ours vs transformers' SpeechT5HifiGan on the same converted random weights."""

from __future__ import annotations

import gc

import pytest
import torch

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.errors import CheckpointError, InputError
from conftest import rel_err
from contrast import assert_separates, scaled_weight
from convert.cvssp import convert_component
from convert.cvssp import read_folder_config
from convert.remap import remap
from convert.tables import cvssp_table
from audioldm_core.checkpoint import expected_shapes

TOL = 1e-5


def _pair(folder):
    from transformers import SpeechT5HifiGan

    cfg = read_folder_config(folder)
    ours = load_state_strict(empty_component("vocoder", cfg), convert_component(folder, "vocoder", cfg), "vocoder")
    ref = SpeechT5HifiGan.from_pretrained(str(folder / "vocoder")).eval()
    with torch.no_grad():  # warm-up: a process's first conv call on this CPU may take another kernel path
        warm = torch.zeros(1, 7, 64)
        ours(warm), ref(warm)
    return ours, ref, cfg


def _check(ours, ref, batch, frames, label, chunk=None):
    mel = torch.randn(batch, frames, 64, generator=torch.Generator().manual_seed(frames)) * 2 - 4
    with torch.no_grad():
        o, r = ours(mel), ref(mel)
        tiled = ours(mel, chunk_frames=chunk) if chunk else None
    err, rel = rel_err(o, r)
    msg = f"{label} batch {batch} {frames} frames: max abs {err:.2e}, rel {rel:.2e}, peak {r.abs().max():.3f}"
    if chunk:
        terr, trel = rel_err(tiled, r)
        msg += f"; in tiles of {chunk}: abs {terr:.2e} rel {trel:.2e}"
        rel = max(rel, trel)
    print("\n" + msg)
    assert rel <= TOL, msg


def _contrast(ours, ref, label, frames=100):
    """The tolerance separates right from wrong: against the reference computed on another mel (seed) or
    with its input convolution's weight scaled by 1.01, our waveform is >= 100x the tolerance away.
    (The vocoder has no prompt.)"""
    g = torch.Generator().manual_seed(frames)
    mel, mel2 = (torch.randn(1, frames, 64, generator=g) * 2 - 4 for _ in range(2))
    with torch.no_grad():
        o = ours(mel)
        right = rel_err(o, ref(mel))[1]
        wrong = {"other seed (mel)": rel_err(o, ref(mel2))[1]}
        with scaled_weight(ref, "conv_pre.weight"):
            wrong["conv_pre.weight x 1.01"] = rel_err(o, ref(mel))[1]
    assert_separates(f"vocoder {label} {frames} frames", TOL, right, wrong, " (relative)")


def test_tiny_tolerance_separates_right_from_wrong(cvssp_folder):
    ours, ref, _ = _pair(cvssp_folder("tiny"))
    _contrast(ours, ref, "tiny")


@pytest.mark.parametrize("batch,frames", [(1, 100), (3, 100), (1, 1024), (3, 1024)])
def test_tiny_parity(cvssp_folder, batch, frames):
    ours, ref, _ = _pair(cvssp_folder("tiny"))  # tiny has normalize_before=True (mean/scale used)
    _check(ours, ref, batch, frames, "tiny")


def test_unbatched_input(cvssp_folder):
    ours, ref, _ = _pair(cvssp_folder("tiny"))
    mel = torch.randn(50, 64)
    with torch.no_grad():
        assert rel_err(ours(mel), ref(mel))[1] <= TOL
        assert ours(mel).shape == (50 * 160 + 32,)


def test_weight_norm_is_folded(cvssp_folder):
    """A source saved with weight norm still applied converts to the weights it stands for: torch's
    ``parametrizations.weight.original0/1`` (what ``apply_weight_norm`` saves today) and the legacy
    ``weight_g``/``weight_v`` pairs, with magnitudes that differ from ||v|| so the fold is exercised."""
    _, ref, cfg = _pair(cvssp_folder("tiny"))
    ref.apply_weight_norm()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("original0"):  # g: (out, 1, 1), or (in, 1, 1) for the transposed convs
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    assert sum(k.endswith("original0") for k in state) > 10, sorted(state)[:5]
    legacy, j = {}, 0
    for k, v in state.items():  # every second pair under the legacy names
        if k.endswith((".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            j += 1
            if (j + 1) // 2 % 2:
                prefix = k.split(".parametrizations.")[0]
                k = prefix + (".weight_g" if k.endswith("0") else ".weight_v")
        legacy[k] = v
    assert any(k.endswith(".weight_g") for k in legacy) and any(k.endswith("original0") for k in legacy)
    mel = torch.randn(2, 40, 64, generator=g) * 2 - 4
    with torch.no_grad():
        r = ref(mel)
    for label, src in (("parametrizations", state), ("mixed legacy/parametrizations", legacy)):
        ours = load_state_strict(empty_component("vocoder", cfg),
                                 remap(src, cvssp_table("vocoder"), expected_shapes("vocoder", cfg), "vocoder"),
                                 "vocoder")
        with torch.no_grad():
            err, rel = rel_err(ours(mel), r)
            for name, m in ref.named_modules():  # the folded weights are the ones weight norm computes
                if hasattr(m, "parametrizations"):
                    assert rel_err(ours.get_parameter(name + ".weight"), m.weight)[1] <= 1e-6, name
        print(f"\nweight-normed source ({label}) vs SpeechT5HifiGan with weight norm: abs {err:.2e} rel {rel:.2e}")
        assert rel <= TOL, (label, err, rel)
    lone = {k: v for k, v in legacy.items() if not k.endswith(".weight_v")}
    with pytest.raises(CheckpointError, match="weight_g"):
        remap(lone, cvssp_table("vocoder"), expected_shapes("vocoder", cfg), "vocoder")


@pytest.mark.parametrize("frames,chunk", [(60, 1), (150, 17), (300, 64), (40, 100)])
def test_chunked_vocoding_is_exact(cvssp_folder, frames, chunk):
    """Tiles with the full receptive-field margin give the one-pass waveform up to float rounding; half
    the margin does not (so the test can tell)."""
    ours, ref, _ = _pair(cvssp_folder("tiny"))
    mel = torch.randn(2, frames, 64, generator=torch.Generator().manual_seed(frames)) * 2 - 4
    with torch.no_grad():
        full, tiled, r = ours(mel), ours(mel, chunk_frames=chunk), ref(mel)
        margin = ours.margin
        ours.margin = margin // 2
        short = ours(mel, chunk_frames=chunk)
        ours.margin = margin
    (a, rel), (_, rel_ref), (_, rel_short) = rel_err(tiled, full), rel_err(tiled, r), rel_err(short, full)
    msg = (f"tiny vocoder, {frames} frames in tiles of {chunk} (margin {margin}): "
           f"vs one pass abs {a:.2e} rel {rel:.2e}, vs SpeechT5HifiGan rel {rel_ref:.2e}; with half the margin rel {rel_short:.2e}")
    print("\n" + msg)
    assert rel <= TOL and rel_ref <= TOL, msg
    assert chunk >= frames or rel_short > 100 * max(rel, 1e-7), msg


@pytest.mark.parametrize("bad,match", [(torch.zeros(1, 10, 80), "64"), (torch.zeros(2, 1, 10, 64), "64"),
                                       (torch.zeros(1, 0, 64), "empty")])
def test_bad_input(cvssp_folder, bad, match):
    ours, _, _ = _pair(cvssp_folder("tiny"))
    with pytest.raises(InputError, match=match):
        ours(bad)
    for chunk in (0, 1.5, True):
        with pytest.raises(InputError, match="chunk_frames"):
            ours(torch.zeros(1, 10, 64), chunk_frames=chunk)


@pytest.mark.fullsize
def test_full_size_parity(cvssp_folder):
    ours, ref, _ = _pair(cvssp_folder("s-full-v2"))
    for batch, frames in [(1, 100), (3, 100), (1, 1024), (3, 1024)]:
        _check(ours, ref, batch, frames, "full size", chunk=256 if (batch, frames) == (1, 1024) else None)
    _contrast(ours, ref, "full size")
    del ours, ref
    gc.collect()


def test_in_place_steps_keep_inputs_and_gradients(cvssp_folder):
    """The vocoder's in-place activations and residual adds touch only tensors it made: the input mel
    and a ResBlock's input stay as they were, and gradients equal the reference's."""
    from audioldm_core.hifigan import ResBlock

    ours, ref, _ = _pair(cvssp_folder("tiny"))
    mel = torch.randn(2, 30, 64, generator=torch.Generator().manual_seed(3))
    block = ours.resblocks[0]
    x = torch.randn(1, block.convs1[0].in_channels, 50)
    x_before = x.clone()
    with torch.no_grad():
        y = block(x)
    assert torch.equal(x, x_before) and y.data_ptr() != x.data_ptr()
    a, b = mel.clone().requires_grad_(), mel.clone().requires_grad_()
    ours(a).square().sum().backward()
    ref(b).square().sum().backward()
    assert torch.equal(a.detach(), mel)
    err, rel = rel_err(a.grad, b.grad)
    assert rel <= TOL, f"input gradient vs reference: max abs {err:.2e}, rel {rel:.2e}"
    with pytest.raises(ValueError, match="at least one dilation"):
        ResBlock(4, 3, (), 0.1)
