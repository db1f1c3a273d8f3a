"""The benchmark harness's --quick mode runs, --compile rows included (so it never rots); it asserts nothing
about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_quick_mode(tmp_path):
    out = tmp_path / "quick.json"
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--compile", "--work", str(tmp_path / "work"),
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["model"] == "tiny"
    for row in ("model load", "end-to-end 1 s", "UNet step (batch 2)", "VAE decode", "vocoder",
                "text encoding (prompt + negative)"):
        assert row in res["rows"] and res["rows"][row]["ratio"] > 0
    assert max(res["max_abs_diff"].values()) < 1e-4
    assert res["peak_rss_mib"]["ours"] > 0 and res["peak_rss_mib"]["diffusers"] > 0
    assert "diffusers/ours" in r.stdout
    kb = res["unet_kernel_bound"]  # the kernel lower bound ran on the tiny UNet's recorded calls
    assert {"conv", "linear", "attention"} <= set(kb["kinds"]) and 0 < kb["bound_seconds"] <= kb["eager_seconds"]
    assert kb["max_unet_ratio"] > 0 and kb["max_e2e_ratio"] > 0 and "kernel bound" in r.stdout
    assert kb["kinds"]["conv"]["flops"] > 0 and "other_ops_seconds" in kb and "of peak eager" in r.stdout
    ins = res["unet_in_step"]  # both steps split by kind under the profiler
    for impl in ("ours", "diffusers"):
        assert {"conv", "linear", "attention"} <= set(ins[impl]["kinds"])
        assert 0 < ins[impl]["kernel_seconds"] <= ins[impl]["wall_seconds"]
    assert ins["max_unet_ratio"] > 0 and "inside the step (profiler" in r.stdout
    c = res["compiled_unet"]  # --compile: plain and frozen torch.compile rows, both at parity
    for row in ("UNet step (ours compiled)", "UNet step (ours compiled, freezing)"):
        assert res["rows"][row]["ratio"] > 0
    assert c["max_abs_diff_vs_diffusers"] < 1e-4 and c["freezing_max_abs_diff_vs_diffusers"] < 1e-4


def test_kernel_bound_records_every_heavy_call():
    """The recorder sees each conv/linear/attention call of a forward (including functional calls made
    inside modules) and every candidate kernel computes the same result as eager."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from kernel_bound import _Recorder, _candidates, unet_kernel_bound

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(2),
                              torch.nn.Linear(25, 6))
    x = torch.randn(2, 3, 5, 5)
    rec = _Recorder()
    with torch.no_grad(), rec:
        net(x)
    assert [k for k, _, _ in rec.calls] == ["conv", "linear"]
    for kind, args, kwargs in rec.calls:
        outs = {name: fn() for name, fn in _candidates(kind, args, kwargs).items()}
        assert len(outs) >= 2, f"{kind}: only {list(outs)}"
        for name, y in outs.items():
            assert torch.allclose(y.contiguous(), outs["eager"], atol=1e-5), f"{kind}/{name} differs from eager"

    def fake_unet(x, t, emb):
        return net(x)

    r = unet_kernel_bound(fake_unet, x, None, None, repeats=1)
    assert r["kinds"]["conv"]["calls"] == 1 and r["kinds"]["linear"]["calls"] == 1
    # FLOPs per kind as torch counts them: conv 2*B*Cout*H*W*Cin*9, linear 2*rows*in*out
    assert r["kinds"]["conv"]["flops"] == 2 * 2 * 4 * 25 * 3 * 9
    assert r["kinds"]["linear"]["flops"] == 2 * (2 * 4) * 25 * 6
    assert r["kinds"]["conv"]["eager_gflops_per_s"] > 0


def test_flop_counter_counts_cpu_attention():
    """torch's FlopCounterMode has no formula for the CPU flash-attention kernel; ours adds it (QK^T and
    PV: 4*B*H*N*M*D), so the harness's GFLOP/s include attention for ours and diffusers alike."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    import torch.nn.functional as F
    from kernel_bound import flop_counter

    q, k = torch.randn(2, 4, 16, 8), torch.randn(2, 4, 24, 8)
    with torch.no_grad(), flop_counter() as fc:
        F.scaled_dot_product_attention(q, k, k)
    assert fc.get_total_flops() == 4 * 2 * 4 * 16 * 24 * 8


def test_in_step_split_counts_each_kind():
    """The profiler split finds every heavy call of a step by kind, with its time inside the step."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import pytest
    import torch
    import torch.nn.functional as F
    from kernel_bound import in_step_split

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    up = torch.nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)
    lin = torch.nn.Linear(64, 8)

    def step():
        h = up(conv(torch.randn(2, 3, 4, 4)))  # (2, 4, 8, 8)
        q = lin(h.flatten(2))  # (2, 4, 8)
        return F.scaled_dot_product_attention(q[:, None], q[:, None], q[:, None])

    r = in_step_split({"a": step, "b": step}, repeats=2)
    for name in ("a", "b"):
        kinds = r[name]["kinds"]
        assert {k: v["calls"] for k, v in kinds.items()} == {"conv": 1, "conv_transpose": 1, "linear": 1,
                                                            "attention": 1}
        assert all(v["seconds"] > 0 for v in kinds.values())
        assert r[name]["other_seconds"] == pytest.approx(r[name]["wall_seconds"] - r[name]["kernel_seconds"])
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        in_step_split({"a": step}, repeats=0)
