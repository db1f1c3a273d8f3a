"""``compat="original"`` edits against the original package's own DDIM sampler code.

The reference is ``audioldm/latent_diffusion/ddim.py DDIMSampler`` (``stochastic_encode`` + ``decode``
as ``pipeline.py style_transfer`` calls them; ``sample`` with ``mask`` and ``x0`` as ``ldm.py
generate_sample_masked`` does) driving a stand-in for ``LatentDiffusion``: the schedule buffers come
from the original's ``DDPM.register_schedule`` with AudioLDM's config, ``q_sample`` is the original's,
and ``apply_model`` is the built-in ``tiny`` model's UNet. Both sides get the same Gaussian draws:
torch's global RNG is seeded before each, and ours draws from it through ``noise=`` in the original's
order. The input is encoded once (the posterior mean) and given to both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audioldm_core import AudioLDM
from audioldm_core.compat import original_ddim_plan, original_swap_mask
from audioldm_core.edit import encode_audio, freq_mask, time_mask
from audioldm_core.errors import InputError
from conftest import require
from test_convert_original import original_package

PROMPT = "a dog barks in the rain"
GUIDANCE = 2.5
# Final latents, max abs error relative to their max magnitude (the random tiny UNet drives them to
# ~10-400): measured 1e-7 to 1.3e-6, float32 rounding (the original computes its DDIM coefficients in
# float64 and rounds them).
TOL = 5e-6


@pytest.fixture(scope="module")
def tiny():
    return AudioLDM.from_pretrained("tiny")


@pytest.fixture(scope="module")
def original():
    installed = (Path(sys.prefix) / "audioldm-original" / "audioldm").is_dir() or importlib.util.find_spec("audioldm")
    if not installed:
        require("original", "the original audioldm package (audioldm==0.1.1) is missing")
    original_package()  # the original package without its __init__ (see test_convert_original)
    return (importlib.import_module("audioldm.latent_diffusion.ddim"),
            importlib.import_module("audioldm.latent_diffusion.ddpm"))


def _tone(seconds=1.0):
    t = np.arange(int(16000 * seconds)) / 16000
    w = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    return (w + 0.05 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def _no_swap():
    """A generator whose first uniform keeps the prompt (u >= 0.1): no unconditional swap on our side,
    as on the reference side, which is given the conditioning directly."""
    g = torch.Generator().manual_seed(0)
    assert not original_swap_mask(1, torch.Generator().manual_seed(0)).any()
    return g


def _reference(original, pipe):
    """The original DDIMSampler on CPU, over a stand-in LatentDiffusion running ``pipe.unet``."""
    ddim, ddpm = original
    cfg = pipe.config.schedule

    class StandIn(nn.Module):
        parameterization, v_posterior = "eps", 0.0
        q_sample = ddpm.DDPM.q_sample  # the original's forward noising, global RNG

        def __init__(self):
            super().__init__()
            # utils.py default_audioldm_config: beta_schedule "linear" (linear in sqrt beta), 0.0015..0.0195
            assert cfg.beta_schedule == "scaled_linear" and cfg.num_train_timesteps == 1000
            ddpm.DDPM.register_schedule(self, beta_schedule="linear", timesteps=1000,
                                        linear_start=cfg.beta_start, linear_end=cfg.beta_end)

        @property
        def device(self):
            return torch.device("cpu")

        def apply_model(self, x, t, c):
            return pipe.unet(x, t, c)

    class CpuDDIM(ddim.DDIMSampler):
        def register_buffer(self, name, attr):  # the original moves every buffer to CUDA
            setattr(self, name, attr)

    return CpuDDIM(StandIn())


def _ours(pipe, edit, seed, **kw):
    last = {}
    torch.manual_seed(seed)
    out = edit(PROMPT, guidance_scale=GUIDANCE, generator=_no_swap(), compat="original", output_type="pt",
               noise=lambda shape: torch.randn(shape), callback=lambda i, t, x: last.update(x=x.clone()),
               progress=False, **kw)
    return last.get("x"), out.audios


def _conditioning(pipe):
    cond, uncond = pipe.encode_prompt(PROMPT, guidance_scale=GUIDANCE)
    return cond, uncond


def _err(a, b):
    return float((a - b).abs().max())


def _rel(a, ref):
    return _err(a, ref) / float(ref.abs().max())


@pytest.mark.parametrize("strength,steps", [(0.3, 5), (0.7, 5), (1.0, 7)])
def test_transfer_matches_original_ddim(tiny, original, strength, steps):
    w = _tone()
    x0, n = encode_audio(tiny, w)
    cond, uncond = _conditioning(tiny)
    t_enc = int(strength * steps)
    ours, audio = _ours(tiny, lambda *a, **k: tiny.transfer(w, *a, strength=strength, **k), seed=11,
                        num_inference_steps=steps)

    def reference(seed, eta=1.0):
        sampler = _reference(original, tiny)
        sampler.make_schedule(ddim_num_steps=steps, ddim_eta=eta, verbose=False)
        torch.manual_seed(seed)
        init = x0.clamp(-10, 10) if x0.abs().max() > 1e2 else x0  # pipeline.py style_transfer
        z = sampler.stochastic_encode(init, torch.tensor([t_enc]))
        with torch.no_grad():
            return sampler.decode(z, cond, t_enc, unconditional_guidance_scale=GUIDANCE,
                                  unconditional_conditioning=uncond)

    ref = reference(11)
    err = _rel(ours, ref)
    audio_err = _err(audio, tiny.decode(ref, n))
    assert err < TOL, (f"strength {strength}, {steps} steps: latents max abs error {_err(ours, ref):.3e}, "
                       f"{err:.2e} of their max (tol {TOL:g})")
    assert audio_err < 1e-5, f"audio max abs error {audio_err:.3e}"
    for what, other in (("another seed", reference(12)), ("eta 0", reference(11, eta=0.0))):
        moved = _rel(ours, other)
        assert moved >= 100 * TOL, f"{what} moves the latents by only {moved:.3e} of their max (tol {TOL:g})"
    print(f"\ntransfer strength {strength}, {steps} steps: relative error {err:.2e}, audio {audio_err:.2e}")


def test_transfer_strength_zero_is_the_original_noised_input(tiny, original):
    w = _tone()
    x0, n = encode_audio(tiny, w)
    _, audio = _ours(tiny, lambda *a, **k: tiny.transfer(w, *a, strength=0.0, **k), seed=3, num_inference_steps=5)
    sampler = _reference(original, tiny)
    sampler.make_schedule(ddim_num_steps=5, ddim_eta=1.0, verbose=False)
    torch.manual_seed(3)
    z = sampler.stochastic_encode(x0, torch.tensor([0]))
    ref = sampler.decode(z, None, 0)  # no step: the input noised to the first DDIM timestep
    err = _err(audio, tiny.decode(ref, n))
    assert err < 1e-6, f"audio max abs error {err:.3e}"


@pytest.mark.parametrize("mask", ["time", "frequency"])
def test_masked_edits_match_original_ddim(tiny, original, mask):
    w = _tone()
    x0, n = encode_audio(tiny, w)
    cond, uncond = _conditioning(tiny)
    steps = 7  # the original's schedule has 8 timesteps here: one more than the steps
    if mask == "time":
        keep = time_mask(x0.shape[2], 0.3, 0.6, 1.0, tiny.vae_scale_factor)
        ours, _ = _ours(tiny, lambda *a, **k: tiny.inpaint(w, *a, 0.3, 0.6, **k), seed=5, num_inference_steps=steps)
    else:
        keep = freq_mask(x0.shape[3], 3000, tiny.vae_scale_factor)
        ours, _ = _ours(tiny, lambda *a, **k: tiny.super_resolve(w, *a, cutoff_hz=3000, **k), seed=5,
                        num_inference_steps=steps)
    assert 0 < keep.sum() < keep.numel()

    def reference(seed, eta=1.0):
        sampler = _reference(original, tiny)
        torch.manual_seed(seed)
        with torch.no_grad():
            return sampler.sample(steps, 1, tuple(x0.shape[1:]), cond, eta=eta, mask=keep, x0=x0, verbose=False,
                                  unconditional_guidance_scale=GUIDANCE, unconditional_conditioning=uncond)[0]

    ref = reference(5)
    err = _rel(ours, ref)
    assert err < TOL, f"{mask} mask: latents max abs error {_err(ours, ref):.3e}, {err:.2e} of their max (tol {TOL:g})"
    # the original does not force the known latents after the last step
    assert _rel(ours * keep, x0 * keep) > 100 * TOL
    for what, other in (("another seed", reference(6)), ("eta 0", reference(5, eta=0.0))):
        moved = _rel(ours, other)
        assert moved >= 100 * TOL, f"{what} moves the latents by only {moved:.3e} of their max (tol {TOL:g})"
    print(f"\n{mask} mask: relative error {err:.2e}")


def test_original_plan_matches_the_original_schedule(tiny, original):
    """Timesteps and alphas, including step counts where the original has more timesteps than steps."""
    sampler = _reference(original, tiny)
    for steps in (1, 2, 4, 5, 7, 10, 50, 200):
        sampler.make_schedule(ddim_num_steps=steps, ddim_eta=1.0, verbose=False)
        ts, a, a_prev = original_ddim_plan(tiny.config.schedule, steps)
        assert np.array_equal(ts.numpy(), sampler.ddim_timesteps), steps
        err = max(_err(a, torch.as_tensor(sampler.ddim_alphas).float()),
                  _err(a_prev, torch.as_tensor(np.asarray(sampler.ddim_alphas_prev, dtype=np.float64)).float()))
        assert err < 1e-6, f"{steps} steps: alpha-bar max abs error {err:.2e}"


@pytest.mark.parametrize("call,match", [
    (lambda p, w: p.transfer(w, "x", 1.0, num_inference_steps=5, compat="original"), "past its last index"),
    (lambda p, w: p.transfer(w, "x", 0.5, num_inference_steps=3, compat="original"), "past the 1000"),
    (lambda p, w: p.inpaint(w, "x", 0.2, 0.4, sampler="pndm", compat="original"), "DDIM sampler only"),
    (lambda p, w: p.super_resolve(w, "x", 3000, sampler="euler", compat="original"), "DDIM sampler only"),
    (lambda p, w: p.transfer(w, "x", 0.5, noise=torch.randn), "only with compat='original'"),
    (lambda p, w: p.transfer(w, "x", 0.5, compat="original", noise=3), "noise must be callable"),
    (lambda p, w: p.inpaint(w, "x", 0.2, 0.4, compat="orig"), "compat must be one of"),
])
def test_original_refuses_what_it_cannot_do(tiny, call, match):
    with pytest.raises(InputError, match=match):
        call(tiny, _tone(0.5))


def test_original_edits_are_reproducible_from_a_seed(tiny):
    w = _tone(0.5)
    kw = dict(num_inference_steps=4, compat="original", progress=False)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = tiny.inpaint(w, "x", 0.1, 0.3, generator=g(), **kw).audios
    assert np.array_equal(a, tiny.inpaint(w, "x", 0.1, 0.3, generator=g(), **kw).audios)
    assert not np.array_equal(a, tiny.inpaint(w, "x", 0.1, 0.3, generator=torch.Generator().manual_seed(2),
                                              **kw).audios)
    b = tiny.transfer(w, "x", 0.5, generator=g(), **kw).audios
    assert np.array_equal(b, tiny.transfer(w, "x", 0.5, generator=g(), **kw).audios)
