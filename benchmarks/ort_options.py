"""Which ONNX Runtime session options (and OpenVINO on the same graphs) pay, per stage, in one run.

    python benchmarks/ort_options.py CACHE_DIR [--threads 2] [--rounds 5]

CACHE_DIR is a backend cache filled by a 5.12 s generation (``benchmarks/run_onnx.py`` or any
``backend="onnxruntime"`` run): its UNet, VAE decoder and vocoder graphs are timed as they are with
each variant, rounds in a shuffled order, medians. Variants: ORT's graph optimisation levels, idle
threads spinning or not, weight prepacking off, IO binding (outputs preallocated by ORT, inputs bound
once), and OpenVINO's CPU plugin compiling the same ONNX file (f32). Results go to
``benchmarks/results/ort-options.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def graphs(cache: Path) -> dict[str, Path]:
    """The newest graph file of each component in the cache."""
    out = {}
    for comp in ("unet", "vae_decoder", "vocoder"):
        found = sorted(cache.glob(f"{comp}-*/model.onnx"), key=lambda p: p.stat().st_mtime)
        if found:
            out[comp] = found[-1]
    return out


def feeds(comp: str) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    if comp == "unet":
        return {"x": torch.randn(2, 8, 128, 16, generator=g).numpy(), "t": np.full(2, 500, np.float32),
                "class_emb": torch.randn(2, 512, generator=g).numpy()}
    if comp == "vae_decoder":
        return {"z": torch.randn(1, 8, 128, 16, generator=g).numpy()}
    return {"mel": torch.randn(1, 512, 64, generator=g).numpy()}


def ort_runner(path: Path, threads: int, level: str = "all", spinning: bool = True, prepack: bool = True,
               io_binding: bool = False):
    import onnxruntime as ort

    from audioldm_core.onnx_backend import SessionSettings

    so = SessionSettings(threads=threads, optimization=level, spinning=spinning).options()
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def make(f):
        if not io_binding:
            return lambda: sess.run(None, f)
        binding = sess.io_binding()
        for k, v in f.items():
            binding.bind_cpu_input(k, v)
        for o in sess.get_outputs():
            binding.bind_output(o.name, "cpu")
        return lambda: (sess.run_with_iobinding(binding), binding.copy_outputs_to_cpu())[1]
    return make


def openvino_runner(path: Path, threads: int):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    return lambda f: (lambda: req.infer(f))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ort-options.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {
        "ort all (default)": dict(),
        "ort extended": dict(level="extended"),
        "ort basic": dict(level="basic"),
        "ort no spinning": dict(spinning=False),
        "ort no prepacking": dict(prepack=False),
        "ort io binding": dict(io_binding=True),
    }
    rng = random.Random(0)
    res = {}
    for comp, path in graphs(args.cache).items():
        f = feeds(comp)
        fns = {name: ort_runner(path, args.threads, **kw)(f) for name, kw in variants.items()}
        try:
            fns["openvino f32"] = openvino_runner(path, args.threads)(f)
        except Exception as e:  # noqa: BLE001 - reported, not fatal: the ORT variants still count
            print(f"openvino failed on {comp}: {e}", file=sys.stderr)
        ref = fns["ort all (default)"]()[0]
        errs = {}
        for name, fn in fns.items():
            out = fn()
            out = out[0] if isinstance(out, list) else next(iter(out.values()))
            errs[name] = float(np.abs(np.asarray(out) - ref).max())
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            order = list(fns)
            rng.shuffle(order)
            for k in order:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
        base = statistics.median(times["ort all (default)"])
        res[comp] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v),
                         "speedup_vs_default": base / statistics.median(v), "max_abs_diff_vs_default": errs[k]}
                     for k, v in times.items()}
        for k, v in res[comp].items():
            print(f"{comp:12} {k:20} {v['median']:.3f} s ({v['min']:.3f}-{v['max']:.3f}) "
                  f"{v['speedup_vs_default']:.2f}x vs default, diff {v['max_abs_diff_vs_default']:.1e}", flush=True)
        del fns
    import os

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "stages": res,
                                    "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
