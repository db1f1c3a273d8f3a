"""How fast could one UNet step be with the kernels this torch build has? A measured lower bound.

One step of our UNet is recorded (every ``conv2d``, ``conv_transpose2d``, ``linear`` and
``scaled_dot_product_attention`` call with its real inputs), then each call is timed alone, hot, on
every kernel we know for it, and the fastest is kept:

- convolution: ``F.conv2d`` (oneDNN, what eager runs), the same on channels-last tensors, and oneDNN
  with the weight reordered once into its blocked layout (``torch.ops.mkldnn._convolution_pointwise``,
  what inductor's weight-prepack pass emits);
- linear: ``F.linear`` (MKL sgemm) and oneDNN's ``torch.ops.mkldnn._linear_pointwise``;
- transposed convolution and attention: as eager runs them.

The sum of the per-call minima, with every other op (norms, activations, adds, copies) counted as
free, bounds a step built from these kernels from below: a step cannot beat it without new kernels or
fewer FLOPs. It is a measurement, not a proof: a call timed alone is not always faster than the same
call inside the step (cache and allocator state differ), so the bound can sit a few percent high;
``run.py`` reports the step's time beyond its kernels timed alone (``other_ops_seconds``), which shows
when that happens, and :func:`in_step_split` times the same kinds inside the step with the profiler,
for ours and diffusers alike. ``benchmarks/run.py`` turns the bound into the best UNet and end-to-end ratios against
diffusers that this machine allows. Each call's FLOPs are counted too (``torch.utils.flop_counter``),
so the GFLOP/s per kind, eager and best, can be set against the machine's measured peak: a kind that
already runs at the peak can only get faster with fewer FLOPs.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

KINDS = {F.conv2d: "conv", F.conv_transpose2d: "conv_transpose", F.linear: "linear",
         F.scaled_dot_product_attention: "attention"}
EAGER = {kind: fn for fn, kind in KINDS.items()}


class _Recorder(TorchFunctionMode):
    """Records (kind, args, kwargs) of the calls in :data:`KINDS` made under it."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = KINDS.get(func)
        if kind is not None:
            self.calls.append((kind, tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args),
                               dict(kwargs)))
        return func(*args, **kwargs)


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts CPU attention: torch's table has the CUDA
    flash/efficient/cuDNN attention kernels but not ``_scaled_dot_product_flash_attention_for_cpu``,
    which ``F.scaled_dot_product_attention`` runs on CPU, so its two matmuls would count as zero."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return FlopCounterMode(display=False, custom_mapping={op: cpu_sdpa} if op is not None else None)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _conv_args(args: tuple, kwargs: dict) -> tuple:
    """(x, w, b, stride, padding, dilation, groups) of a conv2d call, defaults filled, pairs as lists
    (a string padding such as ``"same"`` is returned as given)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    vals = dict(defaults)
    vals.update(zip(names, args))
    vals.update(kwargs)

    def pair(v):
        return [v, v] if isinstance(v, int) else list(v)

    padding = vals["padding"] if isinstance(vals["padding"], str) else pair(vals["padding"])
    return (vals["input"], vals["weight"], vals["bias"], pair(vals["stride"]), padding, pair(vals["dilation"]),
            vals["groups"])


def _candidates(kind: str, args: tuple, kwargs: dict) -> dict[str, Callable[[], object]]:
    """Every kernel we know for one recorded call, by name."""
    mk = torch.ops.mkldnn
    if kind == "conv":
        x, w, b, stride, padding, dilation, groups = _conv_args(args, kwargs)
        out = {"eager": lambda: F.conv2d(x, w, b, stride, padding, dilation, groups)}
        if isinstance(padding, str):  # "same"/"valid": the prepacked kernel takes explicit pads only
            return out
        xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        out["channels_last"] = lambda: F.conv2d(xc, wc, b, stride, padding, dilation, groups)
        if x.device.type == "cpu" and x.dtype == torch.float32 and hasattr(mk, "_convolution_pointwise"):
            packed = mk._reorder_convolution_weight(w, padding, stride, dilation, groups, list(x.shape))
            out["onednn_prepacked"] = lambda: mk._convolution_pointwise(x, packed, b, padding, stride, dilation,
                                                                        groups, "none", [], "")
        return out
    if kind == "linear":
        out = {"eager": lambda: F.linear(*args, **kwargs)}
        x = args[0]
        if x.device.type == "cpu" and x.dtype == torch.float32 and hasattr(mk, "_linear_pointwise"):
            w = args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            out["onednn"] = lambda: mk._linear_pointwise(x, w, b, "none", [], "")
        return out
    return {"eager": lambda: EAGER[kind](*args, **kwargs)}


def unet_kernel_bound(unet: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                      repeats: int = 7) -> dict:
    """Record one ``unet(x, t, emb)`` step and time each heavy call alone on every known kernel.

    Returns per kind (conv, conv_transpose, linear, attention): the call count, the summed FLOPs, the
    summed eager seconds, the summed best seconds, how often each kernel won, and the GFLOP/s of eager
    and best; plus ``eager_seconds`` and ``bound_seconds``, the sums over all kinds. ``bound_seconds``
    (every other op free) is a measured lower bound on the step with these kernels (see the module
    docstring for its caveat)."""
    rec = _Recorder()
    with torch.no_grad():
        with rec:
            unet(x, t, emb)
        kinds: dict[str, dict] = {}
        for kind, args, kwargs in rec.calls:
            candidates = _candidates(kind, args, kwargs)
            with flop_counter() as fc:
                candidates["eager"]()
            times = {name: _median_seconds(fn, repeats) for name, fn in candidates.items()}
            k = kinds.setdefault(kind, {"calls": 0, "flops": 0, "eager_seconds": 0.0, "best_seconds": 0.0,
                                        "wins": {}})
            k["calls"] += 1
            k["flops"] += fc.get_total_flops()
            k["eager_seconds"] += times["eager"]
            best = min(times, key=times.get)
            k["best_seconds"] += times[best]
            k["wins"][best] = k["wins"].get(best, 0) + 1
    for k in kinds.values():
        k["eager_gflops_per_s"] = k["flops"] / k["eager_seconds"] / 1e9
        k["best_gflops_per_s"] = k["flops"] / k["best_seconds"] / 1e9
    return {"kinds": kinds, "eager_seconds": sum(k["eager_seconds"] for k in kinds.values()),
            "bound_seconds": sum(k["best_seconds"] for k in kinds.values())}


# The aten ops whose inclusive time is one heavy call, as the profiler names them (what F.conv2d,
# F.conv_transpose2d, F.linear and F.scaled_dot_product_attention dispatch to first).
ATEN_KINDS = {"aten::conv2d": "conv", "aten::conv_transpose2d": "conv_transpose", "aten::linear": "linear",
              "aten::scaled_dot_product_attention": "attention"}


def in_step_split(fns: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, dict]:
    """Time whole UNet steps under ``torch.profiler`` and split each by kind.

    The other half of the picture :func:`unet_kernel_bound` gives: there every heavy call is timed
    alone, here inside the step, with caches and allocator as the step leaves them. ``fns`` maps a name
    to a zero-argument step (ours, diffusers); after one unprofiled warm-up each, they are profiled
    alternately, ``repeats`` times each, and for each name the run with the median wall time is kept:
    per kind (the values of :data:`ATEN_KINDS`) its call count and inclusive CPU seconds,
    ``kernel_seconds`` (their sum) and ``other_seconds`` (the rest of the step: norms, activations,
    adds, copies, Python). Wall times include the profiler's own overhead, a few microseconds per op,
    so compare them with each other, not with unprofiled medians."""
    from torch.profiler import ProfilerActivity, profile

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    runs: dict[str, list[dict]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    t0 = time.perf_counter()
                    fn()
                    wall = time.perf_counter() - t0
                kinds: dict[str, dict] = {}
                for ev in prof.key_averages():
                    kind = ATEN_KINDS.get(ev.key)
                    if kind is not None:
                        k = kinds.setdefault(kind, {"calls": 0, "seconds": 0.0})
                        k["calls"] += ev.count
                        k["seconds"] += ev.cpu_time_total / 1e6
                kernels = sum(k["seconds"] for k in kinds.values())
                runs[name].append({"wall_seconds": wall, "kinds": kinds, "kernel_seconds": kernels,
                                   "other_seconds": wall - kernels})
    return {name: sorted(r, key=lambda x: x["wall_seconds"])[len(r) // 2] for name, r in runs.items()}
