"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick --compile`` runs on ``tiny`` and
writes a JSON of the documented schema holding every row and number the README's Speed section quotes
(the committed full run, ``benchmarks/results/s-full-v2.json``, is held to the same schema). It asserts
nothing about speed; the kernel-bound helpers are checked on small modules."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "benchmarks" / "results" / "s-full-v2.json"

# The rows of the README's Speed table, in its order; "{first}"/"{second}" are the two lengths
# (5.12 s and 20.48 s in a full run, 1 s and 2 s with --quick).
README_ROWS = ["model load", "end-to-end {first} s", "end-to-end {second} s", "text encoding (prompt + negative)",
               "UNet step (batch 2)", "VAE decode", "vocoder", "UNet step (ours compiled)",
               "UNet step (ours compiled, freezing)"]
STAGES = ["text encoding (prompt + negative)", "UNet step (batch 2)", "VAE decode", "vocoder"]  # GFLOP/s column
KINDS = {"conv", "linear", "attention"}  # the kernel bound's and in-step split's kinds the README quotes


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_schema(res: dict, lengths: tuple[float, float], model: str) -> None:
    """Every key the README's Speed section reads, with its type and the relations between numbers."""
    first, second = (f"{s:g}" for s in lengths)
    assert res["model"] == model and _positive(res["threads"]) and _positive(res["steps"])
    assert res["guidance"] == 2.5 and _positive(res["repeats"])
    assert isinstance(res["torch"], str) and isinstance(res["machine"], str)
    pk = res["peak_gflops"]  # "measured fp32 peak ... (3x3 convolution ..., 2048^2 sgemm ...)"
    assert _positive(pk["sgemm"]) and _positive(pk["conv3x3"]) and pk["peak"] == max(pk["sgemm"], pk["conv3x3"])
    rows = res["rows"]
    want = [r.format(first=first, second=second) for r in README_ROWS]
    assert [r for r in want if r not in rows] == [], f"rows the README quotes are missing: {sorted(rows)}"
    for label, row in rows.items():
        for impl in ("ours", "diffusers"):
            t = row[impl]
            assert all(_positive(t[k]) for k in ("median", "min", "max")), (label, impl, t)
            assert t["min"] <= t["median"] <= t["max"] and isinstance(t["runs"], int) and t["runs"] >= 1, (label, t)
        assert row["ratio"] == pytest.approx(row["diffusers"]["median"] / row["ours"]["median"]), label
    for label in STAGES:
        assert all(_positive(rows[label][impl]["gflops_per_s"]) for impl in ("ours", "diffusers")), label
        assert all(_positive(res["flops"][label][impl]) for impl in ("ours", "diffusers")), label
    assert set(res["max_abs_diff"]) == {str(float(s)) for s in lengths}  # waveform parity per length
    assert all(0 <= v < 1e-4 for v in res["max_abs_diff"].values()), res["max_abs_diff"]
    rss = res["peak_rss_mib"]
    assert _positive(rss["ours"]) and _positive(rss["diffusers"])
    assert res["rss_ratio"] == pytest.approx(rss["ours"] / rss["diffusers"])
    assert all(len(v) >= 1 and all(_positive(x) for x in v) for v in res["peak_rss_runs_mib"].values())
    for impl in ("ours", "diffusers"):  # "a 5.12 s generation is ... GFLOP, ... s at the measured peak"
        f = res["flop_floor"][impl]
        assert _positive(f["gflop"]) and f["seconds_at_peak"] == pytest.approx(f["gflop"] / pk["peak"])
    c = res["compiled_unet"]
    assert all(_positive(c[k]) for k in ("first_call_seconds", "freezing_first_call_seconds"))
    assert 0 <= c["max_abs_diff_vs_diffusers"] < 1e-4 and 0 <= c["freezing_max_abs_diff_vs_diffusers"] < 1e-4
    kb = res["unet_kernel_bound"]  # "convolutions 385 -> 332 ms (56.7 GFLOP; prepacked wins 56 ...)"
    assert KINDS <= set(kb["kinds"]) and 0 < kb["bound_seconds"] <= kb["eager_seconds"]
    for kind, v in kb["kinds"].items():
        assert isinstance(v["calls"], int) and v["calls"] >= 1 and 0 < v["best_seconds"] <= v["eager_seconds"], kind
        assert sum(v["wins"].values()) == v["calls"], kind
    assert kb["kinds"]["conv"]["flops"] > 0 and _positive(kb["kinds"]["conv"]["eager_gflops_per_s"])
    for k in ("max_unet_ratio", "max_e2e_ratio", "e2e_bound_seconds"):
        assert _positive(kb[k]), k
    assert isinstance(kb["other_ops_seconds"], float)
    ins = res["unet_in_step"]  # "ours 806 ms = linear 239, conv 388, attention 73, ... everything else 79"
    for impl in ("ours", "diffusers"):
        assert KINDS <= set(ins[impl]["kinds"])
        assert 0 < ins[impl]["kernel_seconds"] <= ins[impl]["wall_seconds"]
        assert ins[impl]["other_seconds"] == pytest.approx(ins[impl]["wall_seconds"] - ins[impl]["kernel_seconds"])
    assert _positive(ins["max_unet_ratio"])


def test_benchmark_harness_smoke(tmp_path):
    out = tmp_path / "quick.json"
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--compile", "--work", str(tmp_path / "work"),
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    check_schema(json.loads(out.read_text()), (1.0, 2.0), "tiny")
    for needle in ("diffusers/ours", "kernel bound", "of peak eager", "inside the step (profiler",
                   "torch.compile (ours, UNet)", "waveform max abs diff"):
        assert needle in r.stdout, needle


def test_committed_full_run_has_the_schema():
    """The JSON the README's Speed numbers come from is a complete run of the current harness."""
    check_schema(json.loads(COMMITTED.read_text()), (5.12, 20.48), "s-full-v2")


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
