"""Samplers step by step against the diffusers scheduler loops (the pipeline's loop), editing starts,
properties and bad input. Schedule functions themselves are in test_schedule.py."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import diffusers_scheduler

from audioldm_core.errors import InputError
from audioldm_core.samplers import (
    SAMPLERS,
    describe,
    evals_per_step,
    get_sampler,
    lms_coefficient,
    noise_to_start,
    run,
    sample_ddim,
    sample_euler,
    sample_lms,
    sample_pndm,
    start_for_strength,
    timesteps_for,
)
from convert.cvssp import read_json, schedule_config, shipped_config_dir

RAW = read_json(shipped_config_dir("s-full-v2") / "scheduler" / "scheduler_config.json")
CFG = schedule_config(RAW)
# relative, per step, fp32. Every sampler but LMS is bit-identical to its diffusers scheduler. LMS
# integrates its Lagrange basis in closed form where diffusers runs scipy's quad on a float32
# integrand: coefficients differ by <= 1e-6 relative, steps by up to 1.3e-6 (measured, n=25 conv).
TOL = {"lms": 2e-6}
STEPS = [1, 2, 3, 10, 25, 50, 200]
MEASURED: dict[tuple, float] = {}


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module", autouse=True)
def measured_table():
    """Print the max per-step relative error per sampler and step count (pytest -s to see it)."""
    yield
    if not MEASURED:
        return
    names = list(dict.fromkeys(k[0] for k in MEASURED))
    lines = ["", "max per-step rel err (over eps fns and batch 1/3): " + " ".join(f"{n:>8}" for n in STEPS)]
    for name in names:
        row = [max((v for k, v in MEASURED.items() if k[0] == name and k[2] == n), default=float("nan"))
               for n in STEPS]
        lines.append(f"{name:>50}: " + " ".join(f"{v:8.1e}" for v in row))
    print("\n".join(lines))


def smooth_eps(x, t):
    """A fixed smooth function of x and t."""
    tt = torch.as_tensor(t, dtype=torch.float32)
    return torch.tanh(x * 0.7 + 0.001 * tt) * 0.9 + 0.1 * torch.sin(x * 3 + tt * 0.01)


class ConvEps(torch.nn.Module):
    """A small random conv net with a timestep input."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(16, 8, 3, 3, generator=g) * 0.2
        self.w2 = torch.randn(8, 16, 3, 3, generator=g) * 0.2

    def forward(self, x, t):
        tt = torch.as_tensor(t, dtype=torch.float32) / 1000
        h = torch.nn.functional.silu(torch.nn.functional.conv2d(x, self.w1, padding=1) + tt)
        return torch.nn.functional.conv2d(h, self.w2, padding=1)


def reference_loop(name, raw, n, noise, eps, seed=7, **extra):
    s = diffusers_scheduler(name, raw)
    s.set_timesteps(n)
    params = set(inspect.signature(s.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = extra.get("eta", 0.0)
    if "generator" in params:
        kw["generator"] = torch.Generator().manual_seed(seed)
    lat = noise * s.init_noise_sigma
    out = []
    for t in s.timesteps:
        lat = s.step(eps(s.scale_model_input(lat, t), t), t, lat, **kw).prev_sample
        out.append(lat)
    return s.timesteps, out


def recording(eps, calls):
    def fn(x, t):
        calls.append((x.clone(), t))
        return eps(x, t)
    return fn


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def compare(name, n, batch, eps, raw=RAW, seed=7, **opts):
    """Max per-step relative error of ours vs diffusers' loop over the latents after every step and
    the model inputs; asserts identical timesteps (listed, yielded and passed to the model)."""
    cfg = schedule_config(raw)
    noise = torch.randn(batch, 8, 6, 16, generator=torch.Generator().manual_seed(n * 10 + batch))
    ref_calls, our_calls = [], []
    ref_ts, ref = reference_loop(name, raw, n, noise, recording(eps, ref_calls), seed, **opts)
    ts = timesteps_for(name, cfg, n)
    assert torch.equal(ts.to(ref_ts.dtype), ref_ts), (name, n, ts, ref_ts)
    steps = list(get_sampler(name)(recording(eps, our_calls), noise, cfg, n,
                                   generator=torch.Generator().manual_seed(seed), **opts))
    assert len(steps) == len(ref) == len(our_calls)
    for (t, _), (_, t_model), (_, t_ref) in zip(steps, our_calls, ref_calls):
        assert t.dtype == t_ref.dtype and torch.equal(t, t_ref) and torch.equal(t_model, t_ref), (name, n, t, t_ref)
    return max(max(rel(o, r) for (_, o), r in zip(steps, ref)),
               max(rel(o, r) for (o, _), (r, _) in zip(our_calls, ref_calls)))


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("eps_kind", ["smooth", "conv"])
def test_every_sampler_step_by_step(name, eps_kind):
    eps = smooth_eps if eps_kind == "smooth" else ConvEps()
    rows = []
    for n in STEPS:
        for batch in (1, 3):
            worst = compare(name, n, batch, eps)
            MEASURED[(name, eps_kind, n, batch)] = worst
            rows.append(f"n={n} b={batch}: {worst:.1e}")
            assert worst <= TOL.get(name, 0.0), f"{name} ({eps_kind}) n={n} batch={batch}: max per-step rel err {worst:.2e}"
    print(f"\n{name} ({eps_kind}) max per-step rel err: " + ", ".join(rows))


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_with_generator_matches(eta):
    for n in STEPS:
        for batch in (1, 3):
            worst = compare("ddim", n, batch, smooth_eps, eta=eta)
            MEASURED[(f"ddim eta={eta}", "smooth", n, batch)] = worst
            assert worst <= TOL.get("ddim", 0.0), f"ddim eta={eta} n={n} batch={batch}: {worst:.2e}"


@pytest.mark.parametrize("name", ["ddim", "euler_ancestral"])
def test_stochastic_samplers_with_one_generator_per_item(name):
    """A list of CPU generators draws each batch item's noise from its own generator (diffusers'
    randn_tensor); an unseeded or mismatched list is refused."""
    noise = torch.randn(3, 8, 6, 16, generator=torch.Generator().manual_seed(5))
    opts = {"eta": 1.0} if name == "ddim" else {}
    s = diffusers_scheduler(name, RAW)
    s.set_timesteps(10)
    gens = [torch.Generator().manual_seed(k) for k in range(3)]
    lat, ref = noise * s.init_noise_sigma, []
    for t in s.timesteps:
        lat = s.step(smooth_eps(s.scale_model_input(lat, t), t), t, lat, generator=gens, **opts).prev_sample
        ref.append(lat)
    ours = [x for _, x in get_sampler(name)(smooth_eps, noise, CFG, 10, **opts,
                                            generator=[torch.Generator().manual_seed(k) for k in range(3)])]
    worst = max(((o - r).abs().max() / r.abs().max()).item() for o, r in zip(ours, ref))
    assert worst <= TOL.get(name, 0.0), f"{name} per-item generators: {worst:.2e}"
    with pytest.raises(InputError, match="2 generators for a batch of 3"):
        run(get_sampler(name)(smooth_eps, noise, CFG, 10, generator=gens[:2], **opts))


def test_pndm_prk_warmup_option():
    from diffusers import PNDMScheduler

    with pytest.raises(InputError, match="at least 4 steps"):  # diffusers fails with a shape error
        run(sample_pndm(smooth_eps, torch.randn(1, 8, 2, 2), CFG, 3, prk_warmup=True))
    for n in (4, 5, 10, 50, 200):
        noise = torch.randn(2, 8, 6, 16, generator=torch.Generator().manual_seed(n))
        s = PNDMScheduler.from_config(RAW, skip_prk_steps=False)
        s.set_timesteps(n)
        lat = noise.clone()
        ref = []
        for t in s.timesteps:
            lat = s.step(smooth_eps(lat, t), t, lat).prev_sample
            ref.append(lat)
        ts = [t for t, _ in sample_pndm(smooth_eps, noise, CFG, n, prk_warmup=True)]
        assert torch.equal(torch.stack(ts), s.timesteps), n
        ours = [x for _, x in sample_pndm(smooth_eps, noise, CFG, n, prk_warmup=True)]
        assert len(ours) == len(ref)
        worst = max(((o - r).abs().max() / r.abs().max()).item() for o, r in zip(ours, ref))
        assert worst <= TOL.get("pndm", 0.0), f"pndm prk n={n}: {worst:.2e}"


@pytest.mark.parametrize("spacing", [None, "leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_timestep_spacing_absent_or_present(name, spacing):
    """The key absent (each scheduler's own default) and present, translated by convert.cvssp."""
    raw = dict(RAW)
    if spacing is not None:
        raw["timestep_spacing"] = spacing
    assert schedule_config(raw).timestep_spacing == spacing
    for n in (3, 25):
        worst = compare(name, n, 2, smooth_eps, raw=raw)
        assert worst <= TOL.get(name, 0.0), f"{name} spacing={spacing} n={n}: {worst:.2e}"


@pytest.mark.parametrize("spacing", [None, "leading", "trailing", "linspace"])
def test_timesteps_equal_diffusers_for_every_step_count(spacing):
    """timesteps_for == the diffusers scheduler's timesteps for n = 1..1000, except where diffusers
    would index past the tables or repeat a timestep (we raise) or trailing spacing adds t = -1
    (we keep the first n)."""
    raw = dict(RAW) if spacing is None else dict(RAW, timestep_spacing=spacing)
    cfg = schedule_config(raw)
    for name in SAMPLERS:
        s = diffusers_scheduler(name, raw)
        for n in range(1, 1001):
            s.set_timesteps(n)
            ref = s.timesteps
            try:
                ours = timesteps_for(name, cfg, n)
            except InputError as e:
                assert n >= 999 and ("outside" in str(e) or "repeated" in str(e)), (name, spacing, n, e)
                assert ref.max() >= 1000 or len(torch.unique(ref)) < n, (name, spacing, n)
                continue
            if len(ours) != len(ref):
                assert spacing == "trailing" and ref.min() == -1, (name, n)
                ref = ref[ref != -1]
            assert torch.equal(ours.to(ref.dtype), ref), (name, spacing, n)


VARIANTS = {
    "v_prediction": dict(prediction_type="v_prediction"),
    "sample": dict(prediction_type="sample"),
    "sample+clip": dict(prediction_type="sample", clip_sample=True, clip_sample_range=0.5),
    "set_alpha_to_one": dict(set_alpha_to_one=True),
    "steps_offset=0": dict(steps_offset=0),
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
    "trained_betas": dict(trained_betas=[float(b) for b in np.linspace(1e-4, 0.02, 1000)]),
    "v_prediction+trailing": dict(prediction_type="v_prediction", timestep_spacing="trailing"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_schedule_config_variants(variant):
    """Prediction types, clipping, final alpha, offsets and beta schedules other than the cvssp ones;
    where diffusers refuses a combination we refuse it too (InputError, before any model call)."""
    raw = dict(RAW, **VARIANTS[variant])
    for name in SAMPLERS:
        if raw["prediction_type"] == "sample" and name in ("pndm", "euler_ancestral"):
            with pytest.raises(InputError, match="prediction_type"):
                next(get_sampler(name)(lambda x, t: pytest.fail("model called"), torch.zeros(1, 8, 2, 2),
                                       schedule_config(raw), 3))
            continue
        for n in (1, 3, 10):
            worst = compare(name, n, 2, smooth_eps, raw=raw)
            assert worst <= TOL.get(name, 0.0), f"{name} {variant} n={n}: {worst:.2e}"


def reference_edit(name, n, strength, x0, noise, eps, seed=3):
    """diffusers' img2img loop: timesteps[t_start * order:], set_begin_index, add_noise at the first."""
    s = diffusers_scheduler(name, RAW)
    s.set_timesteps(n)
    t_start = n - min(int(n * strength), n)
    ts = s.timesteps[t_start * s.order:]
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(t_start * s.order)
    lat = s.add_noise(x0, noise, ts[:1].repeat(x0.shape[0]))
    kw = {"generator": torch.Generator().manual_seed(seed)} if "generator" in inspect.signature(s.step).parameters \
        else {}
    out = [lat]
    for t in ts:
        lat = s.step(eps(s.scale_model_input(lat, t), t), t, lat, **kw).prev_sample
        out.append(lat)
    return out


def ours_edit(name, n, strength, x0, noise, eps, seed=3):
    start = start_for_strength(name, CFG, n, strength)
    x = noise_to_start(name, CFG, n, x0, noise, start)
    return [x] + [y for _, y in get_sampler(name)(eps, x, CFG, n, start=start, noised=True,
                                                  generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "lms"])
def test_editing_start_matches_diffusers_img2img(name):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 8, 6, 16, generator=g), torch.randn(2, 8, 6, 16, generator=g)
    for n, strength in ((10, 0.6), (25, 0.3), (7, 0.99), (3, 1.0), (50, 0.75)):
        ref, ours = reference_edit(name, n, strength, x0, noise, smooth_eps), ours_edit(name, n, strength, x0,
                                                                                      noise, smooth_eps)
        assert len(ours) == len(ref), (name, n, strength)
        worst = max(((o - r).abs().max() / r.abs().max()).item() for o, r in zip(ours, ref))
        assert worst <= TOL.get(name, 0.0), f"{name} edit n={n} strength={strength}: {worst:.2e}"


def test_lms_editing_builds_its_order_from_the_start():
    """Deliberate deviation: diffusers' LMS takes its order from the absolute step index, so after
    set_begin_index its first steps apply a truncated higher-order formula. Ours starts at order 1:
    the first step is exactly an Euler step, and the order then grows as in a full run."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 8, 6, 16, generator=g), torch.randn(1, 8, 6, 16, generator=g)
    ours = ours_edit("lms", 10, 0.6, x0, noise, smooth_eps)
    euler = ours_edit("euler", 10, 0.6, x0, noise, smooth_eps)
    assert torch.equal(ours[0], euler[0]) and torch.equal(ours[1], euler[1])
    ref = reference_edit("lms", 10, 0.6, x0, noise, smooth_eps)
    assert torch.equal(ours[0], ref[0])  # same noised start
    # diffusers' first step: order min(step_index + 1, 4) = 4, of which only the first coefficient is used
    assert not torch.allclose(ours[1], ref[1], rtol=1e-3), "diffusers changed LMS mid-start: drop the deviation"


def test_lms_coefficients_equal_scipy_quad():
    """The closed-form integral equals scipy's quad of the float64 Lagrange basis to <= 1e-6 relative
    per coefficient (measured ~1e-12), and diffusers' ``get_lms_coefficient`` (quad of a float32
    integrand) to <= 1e-5 (measured 6.3e-6 at the steps where quad bisects, n=999 i=573; <= 1e-6
    elsewhere): that gap is the float32 integrand's rounding, not the closed form's."""
    from diffusers import LMSDiscreteScheduler
    from scipy.integrate import quad

    s = LMSDiscreteScheduler.from_config(RAW)
    worst_exact = worst_diffusers = 0.0
    for n, steps in ((4, range(4)), (10, range(10)), (50, range(50)), (741, (551,)), (770, (228,)), (999, (573,))):
        s.set_timesteps(n)
        sig = s.sigmas.numpy().astype(np.float64)
        for i in steps:
            order = min(i + 1, 4)
            nodes = [sig[i - k] for k in range(order)]
            for j in range(order):
                def basis(tau, j=j, nodes=nodes):
                    return np.prod([(tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(order) if k != j])

                ours = lms_coefficient(s.sigmas, order, i, j)
                exact = quad(basis, sig[i], sig[i + 1], epsabs=0, epsrel=1e-13, limit=200)[0]
                rel = abs(ours - exact) / max(abs(exact), 1e-12)
                worst_exact = max(worst_exact, rel)
                assert rel <= 1e-6, f"n={n} i={i} j={j}: ours {ours!r} vs quad {exact!r} (relative {rel:.2e})"
                ref = s.get_lms_coefficient(order, i, j)
                rel = abs(ours - ref) / max(abs(ref), 1e-12)
                worst_diffusers = max(worst_diffusers, rel)
                assert rel <= 1e-5, f"n={n} i={i} j={j}: ours {ours!r} vs diffusers {ref!r} (relative {rel:.2e})"
    print(f"\nLMS coefficients: max rel err {worst_exact:.1e} vs float64 quad, {worst_diffusers:.1e} vs diffusers")


def test_lms_coefficients_integrate_the_lagrange_basis():
    sig = torch.tensor([10.0, 6.0, 3.5, 2.0, 1.0, 0.0])
    for i in range(1, 5):
        order = min(i + 1, 4)
        coeffs = [lms_coefficient(sig, order, i, j) for j in range(order)]
        # the basis sums to 1, so the coefficients integrate 1 over [sigma_i, sigma_{i+1}]
        assert abs(sum(coeffs) - float(sig[i + 1] - sig[i])) < 1e-6
        # and the rule is exact: the float64 monomial integral of the basis agrees to float32 rounding
        nodes = [float(sig[i - k]) for k in range(order)]
        for j in range(order):
            poly = np.poly1d([1.0])
            for k in range(order):
                if k != j:
                    poly = poly * np.poly1d([1.0, -nodes[k]]) / (nodes[j] - nodes[k])
            exact = np.polyint(poly)(float(sig[i + 1])) - np.polyint(poly)(float(sig[i]))
            assert abs(coeffs[j] - exact) <= 1e-6 * max(1.0, abs(exact)), (i, j, coeffs[j], exact)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 1000), name=st.sampled_from(sorted(SAMPLERS)),
       spacing=st.sampled_from([None, "leading", "trailing", "linspace"]))
def test_timesteps_decreasing_and_in_range(n, name, spacing):
    cfg = dataclasses.replace(CFG, timestep_spacing=spacing)
    try:
        ts = timesteps_for(name, cfg, n).double()
    except InputError as e:
        # only n >= 999 can need t = 1000 (leading + steps_offset) or repeat one (the multistep solvers'
        # n + 1 points); diffusers would index past its tables or divide by a zero step
        assert n >= 999 and ("outside" in str(e) or "repeated" in str(e)), (n, name, spacing, e)
        return
    assert 0 <= ts.min() and ts.max() <= CFG.num_train_timesteps - 1
    if name in ("pndm", "heun"):  # these evaluate some timesteps twice by design; the steps are distinct
        assert (ts[:-1] >= ts[1:]).all() and len(torch.unique(ts)) == n
    else:
        assert len(ts) == n and (ts[:-1] > ts[1:]).all()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 1000), name=st.sampled_from(sorted(SAMPLERS)))
def test_no_nan_for_any_step_count(n, name):
    noise = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(n))
    try:
        x = run(get_sampler(name)(lambda x, t: torch.tanh(x), noise, CFG, n, generator=torch.Generator()))
    except InputError:
        assert n >= 999
        return
    assert torch.isfinite(x).all()


def test_editing_helpers_start_and_noise_levels():
    x0 = torch.randn(1, 8, 4, 16)
    noise = torch.randn(1, 8, 4, 16)
    for name in SAMPLERS:
        n = 10
        start = start_for_strength(name, CFG, n, 0.5)
        assert start == 5 * evals_per_step(name)
        xt = noise_to_start(name, CFG, n, x0, noise, start)
        out = run(get_sampler(name)(lambda x, t: torch.zeros_like(x), xt, CFG, n, start=start))
        assert torch.isfinite(out).all()
        n_evals = len(timesteps_for(name, CFG, n))
        # strength 0 keeps no evaluation on any sampler (PLMS's repeated timestep included), strength 1 all
        assert start_for_strength(name, CFG, n, 0.0) == n_evals, name
        assert start_for_strength(name, CFG, n, 1.0) == 0, name
        with pytest.raises(InputError, match="start"):
            noise_to_start(name, CFG, n, x0, noise, n_evals)
        # start 0: unit noise is scaled by init_noise_sigma unless marked as already noised
        first = [next(get_sampler(name)(recording(smooth_eps, calls), noise, CFG, n, noised=flag))
                 for calls, flag in (([], None), ([], True))]
        assert torch.isfinite(first[0][1]).all() and torch.isfinite(first[1][1]).all()
        with pytest.raises(InputError, match="start"):
            run(get_sampler(name)(smooth_eps, xt, CFG, n, start=n_evals))
    assert start_for_strength("ddim", CFG, 10, 1.0) == 0 and start_for_strength("ddim", CFG, 10, 0.0) == 10
    with pytest.raises(InputError, match="strength"):
        start_for_strength("ddim", CFG, 10, 1.5)
    with pytest.raises(InputError, match="even index"):
        run(get_sampler("heun")(smooth_eps, x0, CFG, 10, start=3))
    with pytest.raises(InputError, match="prk_warmup"):
        run(sample_pndm(smooth_eps, x0, CFG, 10, start=2, prk_warmup=True))


def test_blend_hook_runs_after_every_step_and_feeds_the_next():
    seen = []

    def blend(i, t, x):
        seen.append((i, int(t)))
        return torch.zeros_like(x)

    outs = [x for _, x in sample_ddim(smooth_eps, torch.randn(1, 8, 2, 2), CFG, 4, blend=blend)]
    assert seen == [(i, int(t)) for i, t in enumerate(timesteps_for("ddim", CFG, 4))]
    assert all(torch.equal(x, torch.zeros_like(x)) for x in outs)
    seen.clear()
    run(sample_euler(smooth_eps, torch.randn(1, 8, 2, 2), CFG, 10, start=6, blend=blend))
    assert [i for i, _ in seen] == [6, 7, 8, 9]


def test_model_sees_what_diffusers_passes():
    """eps_fn gets a 0-d timestep tensor: int64 for DDIM/PNDM/DPM-Solver++/UniPC, float32 otherwise."""
    for name in SAMPLERS:
        kinds = set()
        run(get_sampler(name)(lambda x, t, kinds=kinds: kinds.add((t.dtype, t.ndim)) or smooth_eps(x, t),
                              torch.randn(1, 8, 2, 2), CFG, 5))
        want = torch.int64 if name in ("ddim", "pndm", "dpmsolver++", "unipc") else torch.float32
        assert kinds == {(want, 0)}, (name, kinds)


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, True])
def test_bad_step_counts(bad):
    for name in SAMPLERS:
        with pytest.raises(InputError, match="num_inference_steps"):
            run(get_sampler(name)(smooth_eps, torch.randn(1, 8, 2, 2), CFG, bad))
        with pytest.raises(InputError, match="num_inference_steps"):
            timesteps_for(name, CFG, bad)


def test_unknown_sampler_lists_names_and_negative_eta():
    with pytest.raises(InputError) as e:
        get_sampler("dpm2")
    assert all(n in str(e.value) for n in SAMPLERS)
    with pytest.raises(InputError, match="unknown sampler"):
        timesteps_for("dpm2", CFG, 10)
    for eta in (-0.1, "1", True):
        with pytest.raises(InputError, match="eta"):
            run(sample_ddim(smooth_eps, torch.randn(1, 8, 2, 2), CFG, 3, eta=eta))
    with pytest.raises(InputError, match="lms order"):
        run(sample_lms(smooth_eps, torch.randn(1, 8, 2, 2), CFG, 3, order=0))


def test_registry():
    assert list(SAMPLERS) == ["ddim", "pndm", "lms", "euler", "euler_ancestral", "heun", "dpmsolver++", "unipc"]
    for name, entry in SAMPLERS.items():
        fn, description = entry.fn, entry.description
        assert get_sampler(name) is entry and describe(name) == description
        assert description and "\n" not in description and len(description) < 100
        assert inspect.isgeneratorfunction(fn), name
        params = inspect.signature(fn).parameters
        assert list(params)[:4] == ["eps_fn", "x", "schedule", "num_steps"], name
        assert {"generator", "start", "blend"} <= set(params), name
        assert set(entry.options) <= set(params), name
        assert entry.calls_per_step == (2 if name == "heun" else 1), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_latent_dtypes_match_diffusers(dtype):
    """Latents in float64/float16/bfloat16 (the schedule tables stay float32, as in diffusers)."""
    def eps(x, t):
        return smooth_eps(x.float(), t).to(x.dtype)

    noise = torch.randn(2, 8, 6, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    for name in SAMPLERS:
        _, ref = reference_loop(name, RAW, 25, noise, eps)
        ours = [x for _, x in get_sampler(name)(eps, noise, CFG, 25, generator=torch.Generator().manual_seed(7))]
        assert all(o.dtype == dtype for o in ours), name
        worst = max(rel(o.double(), r.double()) for o, r in zip(ours, ref))
        assert worst <= TOL.get(name, 0.0), f"{name} {dtype}: {worst:.2e}"


def test_latents_on_another_device():
    """Only 0-d schedule scalars may stay on the CPU (a (1,) CPU tensor times CUDA latents fails):
    run every sampler and noise_to_start with latents on the meta device."""
    for name in SAMPLERS:
        for dtype in (torch.float32, torch.float16):
            x = torch.randn(2, 8, 4, 4, device="meta", dtype=dtype)
            out = run(get_sampler(name)(lambda x, t: x * 0.5, x, CFG, 5, generator=torch.Generator()))
            assert out.device.type == "meta" and out.dtype == dtype, (name, out.device, out.dtype)
            y = noise_to_start(name, CFG, 5, x, x, 2)
            assert y.device.type == "meta" and y.dtype == dtype, (name, y.device, y.dtype)
