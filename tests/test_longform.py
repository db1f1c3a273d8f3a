"""Long-form sampling (audioldm_core/longform.py): window plans, blend weights, windowed model calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audioldm_core.errors import InputError
from audioldm_core.longform import frames_for_seconds, plan_windows, windowed

FRAME_S = 0.04  # one latent frame: 4 mel frames of 10 ms


def _coverage(plan) -> torch.Tensor:
    total = torch.zeros(plan.frames, dtype=torch.float64)
    for i in range(plan.n):
        total.index_add_(0, plan.index(i), plan.weights[i].double())
    return total


@pytest.mark.parametrize("frames,window,overlap,loop", [
    (7500, 256, 32, False), (7500, 256, 64, True), (300, 256, 32, False), (257, 256, 1, False),
    (256, 256, 32, True), (1000, 100, 99, True), (1000, 100, 40, False), (100, 256, 32, False)])
def test_weights_sum_to_one_everywhere(frames, window, overlap, loop):
    plan = plan_windows(frames, window, overlap, loop)
    total = _coverage(plan)
    err = (total - 1).abs().max().item()
    assert err < 1e-6, f"weights sum to one within {err:.2e} (tolerance 1e-6)"
    assert (plan.weights > 0).all()
    hops = [(b - a) % frames for a, b in zip(plan.starts, plan.starts[1:] + ((plan.starts[0] + frames),))]
    if plan.n > 1:
        neighbours = hops if loop else hops[:-1]
        assert max(neighbours) <= window - overlap, f"every neighbour overlap >= {overlap}: hops {set(hops)}"
    if not loop:
        assert plan.starts[0] == 0 and plan.starts[-1] + plan.window == frames


def test_weights_are_smooth():
    """The blend weight of a window changes by at most ~pi/(2 overlap) per frame (no steps)."""
    plan = plan_windows(2000, 256, 64, loop=True)
    step = plan.weights.diff(dim=1).abs().max().item()
    assert step < 3.2 / 64, step


def _local(x, t, cond):
    """Frame-local stand-in: each output frame depends only on that frame, t and cond."""
    t = torch.as_tensor(t, dtype=x.dtype)
    t = t.reshape(-1, 1, 1, 1) if t.ndim else t
    return torch.tanh(x * 1.3 + 0.1 * t) * cond[:, :1, None, None] + x.square().mean(3, keepdim=True)


def _neighbourhood(x, t, cond):
    """Stand-in whose output frame depends on frames within +-2 (two 3-tap convolutions)."""
    k = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype)
    y = F.conv1d(x.permute(0, 1, 3, 2).reshape(-1, 1, x.shape[2]), k[None, None], padding=1)
    y = F.conv1d(torch.tanh(y), k[None, None], padding=1)
    return y.reshape(x.shape[0], x.shape[1], x.shape[3], x.shape[2]).permute(0, 1, 3, 2) * cond[:, :1, None, None]


@pytest.mark.parametrize("max_rows", [None, 2, 5])
def test_frame_local_model_windowed_equals_full(max_rows):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 700, 4, generator=g)
    cond = torch.randn(2, 6, generator=g)
    t = torch.tensor(17)
    plan = plan_windows(700, 128, 24)
    full = _local(x, t, cond)
    win = windowed(_local, plan, max_rows)(x, t, cond)
    single = torch.zeros(700, dtype=torch.bool)  # frames only one window covers: weight exactly 1
    counts = torch.zeros(700)
    for i in range(plan.n):
        counts.index_add_(0, plan.index(i), torch.ones(plan.window))
    single = counts == 1
    assert torch.equal(win[:, :, single], full[:, :, single])
    err = (win - full).abs().max().item()
    assert err < 1e-6, f"max abs error {err:.2e} in the overlaps (tolerance 1e-6)"
    # contrast: a predictor that sees the absolute frame position is not frame-local: windows differ
    pos = windowed(lambda x, t, c: x + torch.arange(x.shape[2])[None, None, :, None] * 1e-2, plan)(x, t, cond)
    assert (pos - (x + torch.arange(700)[None, None, :, None] * 1e-2)).abs().max() > 0.1


def test_neighbourhood_model_exact_away_from_window_edges():
    g = torch.Generator().manual_seed(1)
    x, cond = torch.randn(1, 2, 500, 3, generator=g), torch.randn(1, 4, generator=g)
    plan = plan_windows(500, 100, 30)
    full, win = _neighbourhood(x, 0, cond), windowed(_neighbourhood, plan)(x, 0, cond)
    # frames >= 2 from every edge of every window covering them (outer edges of the latent are true edges)
    ok = torch.ones(500, dtype=torch.bool)
    for s in plan.starts:
        for edge in (s, s + plan.window - 1):
            if 0 < edge < 499:
                ok[max(edge - 1, 0):edge + 2] = False
    err = (win[:, :, ok] - full[:, :, ok]).abs().max().item()
    assert err < 1e-6, f"max abs error {err:.2e} away from window edges"
    # the window edges do see the cut, damped by the ramp's small weight there (~(pi/4/overlap)^2)
    assert (win - full).abs().max().item() > 1e-4


def test_loop_windows_wrap():
    """A loop's windows see the end and the start together: with a circular neighbourhood model the
    windowed output equals the circular full-length output."""
    g = torch.Generator().manual_seed(2)
    x, cond = torch.randn(1, 2, 400, 3, generator=g), torch.ones(1, 4)
    plan = plan_windows(400, 100, 40, loop=True)
    assert any(s + plan.window > 400 for s in plan.starts)
    circ = torch.cat([x[:, :, -2:], x, x[:, :, :2]], 2)
    full = _neighbourhood(circ, 0, cond)[:, :, 2:-2]
    win = windowed(_neighbourhood, plan)(x, 0, cond)
    ok = torch.ones(400, dtype=torch.bool)
    for s in plan.starts:
        for edge in (s, s + plan.window - 1):
            ok[torch.arange(edge - 1, edge + 2) % 400] = False
    assert (win[:, :, ok] - full[:, :, ok]).abs().max().item() < 1e-6


def test_trivial_plan_returns_the_model():
    plan = plan_windows(200, 256, 32)
    assert plan.trivial and windowed(_local, plan) is _local


def test_batched_timesteps_repeat_per_window():
    x, cond = torch.randn(3, 2, 300, 2), torch.randn(3, 4)
    t = torch.tensor([1.0, 5.0, 9.0])
    plan = plan_windows(300, 64, 16)
    assert torch.allclose(windowed(_local, plan, 4)(x, t, cond), _local(x, t, cond), atol=1e-6)


@pytest.mark.parametrize("args,match", [
    ((1000, 32, 64), "longer than the overlap"),
    ((1000, 64, 64), "longer than the overlap"),
    ((1000, 64, 0), "overlap must be positive"),
    ((1000, 64, -3), "overlap must be positive"),
    ((100, 256, 32, True), "loop must be at least one window"),
    ((1000, 64.0, 8), "window must be an int"),
])
def test_bad_plans(args, match):
    with pytest.raises(InputError, match=match):
        plan_windows(*args)


def test_seconds_to_frames():
    assert frames_for_seconds(10.24, FRAME_S, "window_s") == 256
    assert frames_for_seconds(1.28, FRAME_S, "overlap_s") == 32
    with pytest.raises(InputError, match=r"multiples of 0.04 s, e.g. 10.00 or 10.04"):
        frames_for_seconds(10.01, FRAME_S, "window_s")
    for bad in (0, -1.0, float("nan"), "10", True):
        with pytest.raises(InputError, match="positive number of seconds"):
            frames_for_seconds(bad, FRAME_S, "overlap_s")
