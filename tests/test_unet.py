"""UNet: ours vs diffusers' UNet2DConditionModel on the same converted random weights."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.errors import InputError
from conftest import rel_err
from contrast import assert_separates, scaled_weight
from convert.cvssp import convert_component
from convert.cvssp import read_folder_config
from reference import FULL_SIZE

TOL = 1e-5  # max abs err / max abs reference, fp32


def _pair(folder):
    from diffusers import UNet2DConditionModel

    cfg = read_folder_config(folder)
    ours = load_state_strict(empty_component("unet", cfg), convert_component(folder, "unet", cfg), "unet")
    ref = UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval()
    return ours, ref, cfg


def _inputs(cfg, frames, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, frames, 16, generator=g)
    emb = torch.nn.functional.normalize(torch.randn(batch, cfg.unet.class_embed_dim, generator=g), dim=-1)
    return x, emb


def _check(ours, ref, cfg, frames, t, label, batch=2):
    x, emb = _inputs(cfg, frames, batch=batch)
    with torch.no_grad():
        o = ours(x, t, emb)
        r = ref(x, t, encoder_hidden_states=None, class_labels=emb).sample
    err, rel = rel_err(o, r)
    msg = f"{label} T={frames} t={t if not torch.is_tensor(t) else t.tolist()}: max abs {err:.2e}, rel {rel:.2e}"
    print("\n" + msg)
    assert rel <= TOL, msg
    return rel


# The weight scaled by 1.01 in the contrasts: the input convolution, which every output depends on.
CONTRAST_WEIGHT = "conv_in.weight"


def _contrast(ours, ref, cfg, label, frames=128, t=500):
    """The tolerance separates right from wrong: against the reference computed with another class
    embedding (prompt), other latents (seed) or one weight scaled by 1.01, our output is >= 100x the
    tolerance away."""
    x, emb = _inputs(cfg, frames)
    x2, emb2 = _inputs(cfg, frames, seed=1)
    with torch.no_grad():
        o = ours(x, t, emb)
        right = rel_err(o, ref(x, t, encoder_hidden_states=None, class_labels=emb).sample)[1]
        wrong = {"other prompt embedding": ref(x, t, encoder_hidden_states=None, class_labels=emb2).sample,
                 "other seed (latents)": ref(x2, t, encoder_hidden_states=None, class_labels=emb).sample}
        with scaled_weight(ref, CONTRAST_WEIGHT):
            wrong[f"{CONTRAST_WEIGHT} x 1.01"] = ref(x, t, encoder_hidden_states=None, class_labels=emb).sample
    assert_separates(f"UNet {label} T={frames} t={t}", TOL, right, {k: rel_err(o, v)[1] for k, v in wrong.items()},
                     " (relative)")


def test_tiny_tolerance_separates_right_from_wrong(cvssp_folder):
    ours, ref, cfg = _pair(cvssp_folder("tiny"))
    _contrast(ours, ref, cfg, "tiny")


@pytest.mark.parametrize("frames", [128, 100, 25, 257])
def test_tiny_parity(cvssp_folder, frames):
    ours, ref, cfg = _pair(cvssp_folder("tiny"))
    for t in (1, 999, torch.tensor([3, 500]), torch.tensor(17.25)):
        _check(ours, ref, cfg, frames, t, "tiny")


@pytest.mark.fullsize
# l-full first (test_pipeline leaves it on disk), s-full-v2 last (test_vae uses it): see conftest.
@pytest.mark.parametrize("name", sorted(FULL_SIZE, key=("l-full", "m-full", "s-full", "s-full-v2").index))
def test_full_size_parity(cvssp_folder, name):
    ours, ref, cfg = _pair(cvssp_folder(name))
    # every length and timestep the README lists, on every checkpoint: one batch of 3 per length holds
    # t = 1, 500 and 999
    t = torch.tensor([1, 500, 999])
    worst = max(_check(ours, ref, cfg, frames, t, name, batch=3) for frames in (128, 100, 25, 257))
    print(f"{name}: worst rel {worst:.2e} over T = 128, 100, 25, 257 x t = 1, 500, 999")
    _contrast(ours, ref, cfg, name)
    if name == "s-full-v2":
        x, emb = _inputs(cfg, 128)
        t = torch.tensor(500)
        times = {"ours": [], "diffusers": []}
        with torch.no_grad():
            ours(x, t, emb), ref(x, t, encoder_hidden_states=None, class_labels=emb)
            for _ in range(3):
                t0 = time.perf_counter()
                ours(x, t, emb)
                times["ours"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ref(x, t, encoder_hidden_states=None, class_labels=emb)
                times["diffusers"].append(time.perf_counter() - t0)
        o, d = min(times["ours"]), min(times["diffusers"])
        print(f"UNet step s-full-v2 batch 2 (2, 8, 128, 16): ours {o:.3f} s, diffusers {d:.3f} s, ratio {d / o:.2f}x")
    del ours, ref
    gc.collect()


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_smoke(cvssp_folder, dtype, tol):
    ours, _, cfg = _pair(cvssp_folder("tiny"))
    x, emb = _inputs(cfg, 64)
    with torch.no_grad():
        full = ours(x, 500, emb)
        half = ours.to(dtype)(x.to(dtype), 500, emb.to(dtype))
    assert half.dtype == dtype and torch.isfinite(half).all()
    err, rel = rel_err(half.float(), full)
    print(f"\n{dtype} vs fp32 on CPU: rel {rel:.2e} (loose bound {tol})")
    assert rel < tol


def test_bad_input(cvssp_folder):
    ours, _, cfg = _pair(cvssp_folder("tiny"))
    x, emb = _inputs(cfg, 16)
    with pytest.raises(InputError, match=r"\(B, 8, T, F\)"):
        ours(x[:, :4], 1, emb)
    with pytest.raises(InputError, match="class_emb"):
        ours(x, 1, emb[:, :5])
    with pytest.raises(InputError, match="batch mismatch"):
        ours(x, 1, emb[:1])
    with pytest.raises(InputError, match="NaN"):
        ours(x * float("nan"), 1, emb)
    with pytest.raises(InputError):
        ours(x[0], 1, emb)
    with pytest.raises(InputError, match="timesteps"):
        ours(x, torch.tensor([1, 2, 3]), emb)
