"""Noise schedules, timestep spacings and add_noise against the diffusers schedulers, plus properties."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audioldm_core import schedule as sched
from audioldm_core.config import ScheduleConfig
from audioldm_core.errors import InputError
from audioldm_core.samplers import run, sample_ddim
from convert.cvssp import read_json, schedule_config, shipped_config_dir

RAW = read_json(shipped_config_dir("s-full-v2") / "scheduler" / "scheduler_config.json")
CFG = schedule_config(RAW)
BETA_VARIANTS = {
    "scaled_linear (cvssp)": {},
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "trained_betas": dict(trained_betas=[float(b) for b in np.linspace(1e-4, 0.03, 1000) ** 1.1]),
}


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def test_cvssp_schedule_translates_with_spacing_absent():
    assert CFG.timestep_spacing is None  # the cvssp configs predate the key: absent, not "leading"
    assert (CFG.beta_schedule, CFG.beta_start, CFG.beta_end, CFG.steps_offset) == ("scaled_linear", 0.0015,
                                                                                    0.0195, 1)
    for spacing in sched.SPACINGS:
        assert schedule_config(dict(RAW, timestep_spacing=spacing)).timestep_spacing == spacing


@pytest.mark.parametrize("variant", list(BETA_VARIANTS))
def test_betas_and_alphas_cumprod_equal_diffusers(variant):
    from diffusers import DDIMScheduler

    raw = dict(RAW, **BETA_VARIANTS[variant])
    ref = DDIMScheduler.from_config(raw)
    cfg = schedule_config(raw)
    assert torch.equal(sched.betas(cfg), ref.betas), variant
    assert torch.equal(sched.alphas_cumprod(cfg), ref.alphas_cumprod), variant
    assert torch.equal(sched.final_alpha(cfg), ref.final_alpha_cumprod)
    assert torch.equal(sched.final_alpha(schedule_config(dict(raw, set_alpha_to_one=True))),
                       DDIMScheduler.from_config(dict(raw, set_alpha_to_one=True)).final_alpha_cumprod)


@pytest.mark.parametrize("spacing", sched.SPACINGS)
def test_integer_spacings_equal_diffusers_ddim(spacing):
    """Every step count 1..1000 (or the clear error, only where diffusers would index past the table)."""
    from diffusers import DDIMScheduler

    for offset in (0, 1):
        raw = dict(RAW, timestep_spacing=spacing, steps_offset=offset)
        cfg, ref = schedule_config(raw), DDIMScheduler.from_config(raw)
        for n in range(1, 1001):
            ref.set_timesteps(n)
            try:
                ours = sched.spaced_timesteps(cfg, n, "leading")
            except InputError as e:
                assert spacing == "leading" and offset == 1 and n == 1000, (spacing, offset, n, e)
                assert int(ref.timesteps.max()) == 1000  # diffusers would read alpha-bar[1000]
                continue
            if spacing == "trailing" and len(ref.timesteps) == n + 1:  # diffusers' spurious t = -1
                assert int(ref.timesteps[-1]) == -1
                assert torch.equal(torch.from_numpy(ours), ref.timesteps[:n])
                continue
            assert torch.equal(torch.from_numpy(ours), ref.timesteps), (spacing, offset, n)


@pytest.mark.parametrize("spacing", [None, *sched.SPACINGS])
def test_sigmas_equal_diffusers_euler(spacing):
    from diffusers import EulerDiscreteScheduler

    raw = dict(RAW) if spacing is None else dict(RAW, timestep_spacing=spacing)
    cfg, ref = schedule_config(raw), EulerDiscreteScheduler.from_config(raw)
    for n in (1, 2, 7, 50, 999):
        ref.set_timesteps(n)
        ts = sched.spaced_timesteps(cfg, n, "linspace", dtype=np.float32)
        assert torch.equal(torch.from_numpy(ts), ref.timesteps), (spacing, n)
        assert torch.equal(sched.interp_sigmas(cfg, ts), ref.sigmas), (spacing, n)
    full = torch.from_numpy(sched.vp_sigmas(cfg))
    ac = sched.alphas_cumprod(cfg)
    assert torch.equal(full, ((1 - ac) / ac) ** 0.5)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(n=st.integers(1, 1000), spacing=st.sampled_from([None, *sched.SPACINGS]), offset=st.integers(0, 1),
       kind=st.sampled_from(["int", "float", "multistep"]))
def test_timesteps_strictly_decreasing_and_in_range(n, spacing, offset, kind):
    cfg = ScheduleConfig(timestep_spacing=spacing, steps_offset=offset)
    kw = {"int": {}, "float": {"dtype": np.float32}, "multistep": {"extra": 1}}[kind]
    try:
        t = sched.spaced_timesteps(cfg, n, "linspace", **kw)
    except InputError as e:
        # only the last step counts can push a timestep past N - 1 or repeat one (diffusers runs those
        # with t = 1000 or a zero-length step); the message says so and how to fix it
        assert n >= 999 and "use fewer steps" in str(e), (n, spacing, offset, kind, e)
        return
    assert len(t) == n
    assert (t[:-1] > t[1:]).all()
    assert t.min() >= 0 and t.max() <= cfg.num_train_timesteps - 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_equals_diffusers(dtype):
    from diffusers import DDIMScheduler

    ref = DDIMScheduler.from_config(RAW)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 8, 5, 16, generator=g, dtype=dtype), torch.randn(3, 8, 5, 16, generator=g, dtype=dtype)
    ts = torch.tensor([0, 421, 999])
    want = ref.add_noise(x0, noise, ts)
    assert torch.equal(sched.add_noise(CFG, x0, noise, ts), want)
    for i, t in enumerate(ts.tolist()):
        assert torch.equal(sched.add_noise(CFG, x0[i:i + 1], noise[i:i + 1], t), want[i:i + 1])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(t=st.integers(0, 999), seed=st.integers(0, 2 ** 16))
def test_add_noise_then_one_ddim_step_with_true_noise_recovers_clean(t, seed):
    """x_t = add_noise(x0, eps, t); one DDIM step from t with the true eps lands on x0 (alpha-bar 1)."""
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(2, 8, 4, 16, generator=g).double(), torch.randn(2, 8, 4, 16, generator=g).double()
    # a one-step DDIM runs at t = steps_offset; a config with that offset runs at t exactly
    cfg = dataclasses.replace(CFG, set_alpha_to_one=True, steps_offset=t)
    xt = sched.add_noise(cfg, x0, noise, t)
    seen = []
    out = run(sample_ddim(lambda x, tt: seen.append(int(tt)) or noise, xt, cfg, 1))
    assert seen == [t]
    # exact algebra; the residue is DDIM's float32 sqrt(alpha-bar) against add_noise's float64 one
    # (~6e-8 relative), amplified by sqrt((1 - a) / a) for the noise term
    a = sched.alphas_cumprod(cfg)[t].double()
    bound = 1e-6 * (x0.abs().max() + ((1 - a) / a) ** 0.5 * noise.abs().max()).item()
    err = (out - x0).abs().max().item()
    assert err < bound, f"t={t}: recovered x0 off by {err:.2e} (bound {bound:.2e})"


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_prediction_conversions_invert(pred):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, generator=g).double(), torch.randn(2, 3, generator=g).double()
    a = torch.tensor(0.3, dtype=torch.float64)
    x = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    out = {"epsilon": eps, "sample": x0, "v_prediction": a ** 0.5 * eps - (1 - a) ** 0.5 * x0}[pred]
    got_x0, got_eps = sched.prediction_to_eps_x0(ScheduleConfig(prediction_type=pred), out, x, a)
    assert torch.allclose(got_x0, x0, atol=1e-12) and torch.allclose(got_eps, eps, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, True, "10", None])
def test_bad_step_counts_are_clear(bad):
    with pytest.raises(InputError, match="num_inference_steps"):
        sched.spaced_timesteps(CFG, bad, "leading")


def test_bad_schedule_inputs_are_clear():
    with pytest.raises(InputError, match="beta_schedule"):
        sched.betas(ScheduleConfig(beta_schedule="cubic"))
    with pytest.raises(InputError, match="timestep_spacing.*leading, trailing, linspace"):
        sched.spaced_timesteps(ScheduleConfig(timestep_spacing="even"), 10, "leading")
    with pytest.raises(InputError, match="prediction_type"):
        sched.prediction_to_eps_x0(ScheduleConfig(prediction_type="flow"), torch.zeros(1), torch.zeros(1),
                                   torch.tensor(0.5))
    x = torch.zeros(2, 8, 2, 2)
    for t in (-1, 1000, 2.5, torch.tensor([1, 2, 3])):
        with pytest.raises(InputError, match="t"):
            sched.add_noise(CFG, x, x, t)
    with pytest.raises(InputError, match="same shape"):
        sched.add_noise(CFG, x, x[:1], 10)
    for strength in (-0.1, 1.5, "0.5", True):
        with pytest.raises(InputError, match="strength"):
            sched.strength_start(10, strength)
    assert sched.strength_start(10, 1.0) == 0 and sched.strength_start(10, 0.0) == 10
    assert sched.strength_start(10, 0.7) == 3 and sched.strength_start(10, 0.7, order=2) == 6
