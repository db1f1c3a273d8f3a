"""HiFi-GAN vocoder: ours vs transformers' SpeechT5HifiGan on the same converted random weights."""

from __future__ import annotations

import gc

import pytest
import torch

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.errors import CheckpointError, InputError
from conftest import rel_err
from convert.core import convert_component
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


def _check(ours, ref, batch, frames, label):
    mel = torch.randn(batch, frames, 64, generator=torch.Generator().manual_seed(frames)) * 2 - 4
    with torch.no_grad():
        o, r = ours(mel), ref(mel)
    err, rel = rel_err(o, r)
    msg = f"{label} batch {batch} {frames} frames: max abs {err:.2e}, rel {rel:.2e}, peak {r.abs().max():.3f}"
    print("\n" + msg)
    assert rel <= TOL, msg


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
    """A source with weight_g/weight_v (or parametrizations.weight.original0/1) converts to the same
    weights as the plain one."""
    ours, ref, cfg = _pair(cvssp_folder("tiny"))
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    normed, j = {}, 0
    for k, v in state.items():
        if k.endswith(".weight") and v.ndim == 3:
            g = v.norm(dim=(1, 2), keepdim=True)
            prefix = k[: -len(".weight")]
            j += 1
            if j % 2:
                normed[prefix + ".weight_g"], normed[prefix + ".weight_v"] = g, v
            else:
                normed[prefix + ".parametrizations.weight.original0"] = g
                normed[prefix + ".parametrizations.weight.original1"] = v
        else:
            normed[k] = v
    a = remap(normed, cvssp_table("vocoder"), expected_shapes("vocoder", cfg), "vocoder")
    for k, v in ours.state_dict().items():
        assert torch.allclose(a[k], v, rtol=1e-6, atol=1e-7), k
    lone = {k: v for k, v in normed.items() if not k.endswith(".weight_v")}
    with pytest.raises(CheckpointError, match="weight_g"):
        remap(lone, cvssp_table("vocoder"), expected_shapes("vocoder", cfg), "vocoder")


@pytest.mark.parametrize("bad,match", [(torch.zeros(1, 10, 80), "64"), (torch.zeros(2, 1, 10, 64), "64"),
                                       (torch.zeros(1, 0, 64), "empty")])
def test_bad_input(cvssp_folder, bad, match):
    ours, _, _ = _pair(cvssp_folder("tiny"))
    with pytest.raises(InputError, match=match):
        ours(bad)


@pytest.mark.fullsize
def test_full_size_parity(cvssp_folder):
    ours, ref, _ = _pair(cvssp_folder("s-full-v2"))
    for batch, frames in [(1, 100), (3, 100), (1, 1024), (3, 1024)]:
        _check(ours, ref, batch, frames, "full size")
    del ours, ref
    gc.collect()
