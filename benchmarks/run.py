"""Side-by-side CPU benchmark: audioldm-core vs diffusers' AudioLDMPipeline, in one run.

    python benchmarks/run.py            # full-size random-weight s-full-v2 (about 20-30 minutes)
    python benchmarks/run.py --quick    # the tiny model, seconds; CI runs this as a test
    python benchmarks/run.py --compile  # also our UNet under torch.compile, plain and with inductor's
                                        # freezing pass (one-time costs reported)

It builds (or reuses) the random-weight cvssp folder in ``benchmarks/work/``, converts it, then
measures both implementations alternating (warm-up first, then A B A B ...), same seed, fp32,
DDIM, guidance 2.5, and prints a table of medians (min-max) with the ratio diffusers/ours per row,
the waveforms' max abs difference (speed only counts at parity), achieved GFLOP/s per stage against
this machine's measured fp32 peak (best of sgemm and 3x3 conv), model load times, and peak RSS measured in a separate
process per implementation, and a lower bound on the UNet step from the kernels this torch build has
(``kernel_bound.py``), with the best UNet and end-to-end ratios it allows, next to both implementations'
steps split by kind under the profiler. Results go to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

PROMPT = "a dog barks while rain falls on a tin roof"


def _throughput(fn: Callable[[], object], flop: float, seconds: float) -> float:
    """GFLOP/s of ``fn`` (``flop`` FLOPs per call), best of short timed batches over ``seconds``."""
    fn()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        best = max(best, 3 * flop / (time.perf_counter() - t0) / 1e9)
    return best


def machine_peak_gflops(quick: bool = False) -> dict[str, float]:
    """This machine's best measured fp32 throughput (GFLOP/s) at the current thread count.

    Two kinds of kernel, the best of each: an sgemm (``torch.mm``, square, 1024 and 2048) and a 3x3
    convolution at UNet-like shapes (oneDNN). The convolution is the faster one on some CPUs (seen
    here: 2048^2 sgemm ~180 GFLOP/s, 3x3 conv ~240 on a 2-core Zen 4), so ``peak`` is the larger: a
    stage measured against the sgemm alone could look as if it ran above the machine's peak.
    """
    import torch.nn.functional as F

    seconds = 0.1 if quick else 1.0
    mm = 0.0
    for n in ((256,) if quick else (1024, 2048)):
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm = max(mm, _throughput(lambda: a @ b, 2 * n**3, seconds))
    conv = 0.0
    for c, h, w in (((64, 16, 8),) if quick else ((384, 32, 4), (256, 64, 8), (640, 32, 4))):
        x, k = torch.randn(2, c, h, w), torch.randn(c, c, 3, 3)
        conv = max(conv, _throughput(lambda: F.conv2d(x, k, padding=1), 2 * 2 * c * c * 9 * h * w, seconds))
    return {"sgemm": mm, "conv3x3": conv, "peak": max(mm, conv)}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter (CPU attention included)."""
    from kernel_bound import flop_counter

    with torch.no_grad(), flop_counter() as fc:
        fn()
    return fc.get_total_flops()


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Warm each up once, then time them alternating A B A B ... ``repeats`` times each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return times


def summary(ts: list[float]) -> dict[str, float]:
    """Median, min and max of a list of timings."""
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "runs": len(ts)}


def build_folder(name: str, work: Path) -> Path:
    """The random-weight cvssp folder for ``name`` in ``work/`` (built once, then reused)."""
    from reference import write_cvssp_folder

    folder = work / name
    if not (folder / "model_index.json").is_file():
        print(f"building random-weight {name} folder in {folder} ...", flush=True)
        write_cvssp_folder(folder, name, seed=0)
    return folder


def convert(folder: Path, work: Path) -> Path:
    """Convert the folder to our format (reused when present)."""
    from convert.core import convert_to_file

    out = work / f"{folder.name}.safetensors"
    if not out.is_file():
        convert_to_file(str(folder), out)
    return out


def load_ours(path: Path):
    from audioldm_core import AudioLDM

    return AudioLDM.from_pretrained(path)


def load_ref(folder: Path):
    from reference import reference_pipeline

    return reference_pipeline(folder)


def rss_child(impl: str, source: str, seconds: float, steps: int, threads: int) -> None:
    """Run one generation in this process and print its peak RSS (MiB) as JSON (used via subprocess)."""
    torch.set_num_threads(threads)
    pipe = load_ours(Path(source)) if impl == "ours" else load_ref(Path(source))
    kw = dict(num_inference_steps=steps, audio_length_in_s=seconds, guidance_scale=2.5,
              generator=torch.Generator().manual_seed(0))
    if impl == "ours":
        kw["progress"] = False
    pipe(PROMPT, **kw)
    # VmHWM (this process image's peak), not ru_maxrss, which survives exec and would include the
    # parent benchmark process's peak
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
    print(json.dumps({"peak_rss_mib": int(hwm) / 1024}))


def peak_rss(impl: str, source: Path, seconds: float, steps: int, threads: int) -> float:
    r = subprocess.run([sys.executable, __file__, "--rss-child", impl, "--source", str(source),
                        "--seconds-rss", str(seconds), "--steps", str(steps), "--threads", str(threads)],
                       capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"RSS child for {impl} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    name = "tiny" if args.quick else "s-full-v2"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = build_folder(name, work)
    ckpt = convert(folder, work)
    repeats = 1 if args.quick else args.repeats
    lengths = [1.0, 2.0] if args.quick else [5.12, 20.48]
    steps = 2 if args.quick else args.steps
    peaks = machine_peak_gflops(args.quick)
    peak = peaks["peak"]
    rows: dict[str, dict] = {}

    # model load: ours from the converted file, diffusers from the folder
    def _load_ours():
        return load_ours(ckpt)

    def _load_ref():
        return load_ref(folder)

    # loads take well under a second each and single ones move by 2x (page cache, collector): count 9
    rows["model load"] = {k: summary(v) for k, v in
                          alternate({"ours": _load_ours, "diffusers": _load_ref}, repeats if args.quick else 9).items()}
    ours, ref = load_ours(ckpt), load_ref(folder)

    # end to end, and parity of the waveforms
    diffs = {}
    for seconds in lengths:
        def e2e_ours(s=seconds):
            return ours(PROMPT, audio_length_in_s=s, num_inference_steps=steps, guidance_scale=2.5,
                        generator=torch.Generator().manual_seed(0), progress=False).audios

        def e2e_ref(s=seconds):
            return ref(PROMPT, audio_length_in_s=s, num_inference_steps=steps, guidance_scale=2.5,
                       generator=torch.Generator().manual_seed(0)).audios

        with torch.no_grad():
            diffs[seconds] = float(np.abs(e2e_ours() - e2e_ref()).max())
        rows[f"end-to-end {seconds:g} s"] = {k: summary(v) for k, v in
                                             alternate({"ours": e2e_ours, "diffusers": e2e_ref}, repeats).items()}

    # stages at the first length
    seconds = lengths[0]
    frames = int(seconds / 0.01)
    frames += (-frames) % 4
    cond, uncond = ours.encode_prompt(PROMPT, guidance_scale=2.5)
    emb2 = torch.cat([uncond, cond])
    lat2 = torch.randn(2, 8, frames // 4, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    z = lat2[:1] / ours.config.vae.scaling_factor
    mel = ours.vae.decode(z).squeeze(1)

    def text_ours():  # steady state: the empty negative prompt's embedding is cached after first use
        return ours.encode_prompt(PROMPT, guidance_scale=2.5)

    def text_ref():
        return ref._encode_prompt(PROMPT, torch.device("cpu"), 1, True)

    stages = {
        "text encoding (prompt + negative)": {"ours": text_ours, "diffusers": text_ref},
        "UNet step (batch 2)": {"ours": lambda: ours.unet(lat2, t, emb2),
                                "diffusers": lambda: ref.unet(lat2, t, encoder_hidden_states=None,
                                                              class_labels=emb2).sample},
        "VAE decode": {"ours": lambda: ours.vae.decode(z), "diffusers": lambda: ref.vae.decode(z).sample},
        "vocoder": {"ours": lambda: ours.vocoder(mel), "diffusers": lambda: ref.vocoder(mel)},
    }
    # this VM's speed wanders by 10% within minutes: short stages get more counted runs (a UNet step's
    # median of 3 moved from 1.13x to 0.98x between two full runs of the same code)
    counts = {"text encoding (prompt + negative)": 9, "UNet step (batch 2)": 9, "VAE decode": 5, "vocoder": 5}
    flops = {}
    for label, fns in stages.items():
        n = max(repeats, 3) if args.quick else max(repeats, counts[label])
        rows[label] = {k: summary(v) for k, v in alternate(fns, n).items()}
        flops[label] = {impl: count_flops(fn) for impl, fn in fns.items()}  # ours skips the 512-token padding
        for impl in ("ours", "diffusers"):
            rows[label][impl]["gflops_per_s"] = flops[label][impl] / rows[label][impl]["median"] / 1e9
    # floor: what the counted FLOPs of one generation would take at the measured peak
    floor = {}
    for impl in ("ours", "diffusers"):
        total = (flops["text encoding (prompt + negative)"][impl] + steps * flops["UNet step (batch 2)"][impl]
                 + flops["VAE decode"][impl] + flops["vocoder"][impl])
        floor[impl] = {"gflop": total / 1e9, "seconds_at_peak": total / 1e9 / peak}

    # lower bound on a UNet step from the kernels this build has (benchmarks/kernel_bound.py), and what
    # it allows: the best UNet and end-to-end ratios vs this run's diffusers medians, with every op but
    # conv/linear/attention free and the VAE and vocoder at the measured peak
    from kernel_bound import unet_kernel_bound

    kb = unet_kernel_bound(ours.unet, lat2, t, emb2, repeats=3 if args.quick else 7)
    e2e_bound = (rows["text encoding (prompt + negative)"]["ours"]["median"] + steps * kb["bound_seconds"]
                 + (flops["VAE decode"]["ours"] + flops["vocoder"]["ours"]) / 1e9 / peak)
    kb["max_unet_ratio"] = rows["UNet step (batch 2)"]["diffusers"]["median"] / kb["bound_seconds"]
    # what the step spends beyond its heavy calls timed alone: norms, activations, adds, copies, dispatch,
    # and the kernels' own slowdown in context (cold caches)
    kb["other_ops_seconds"] = rows["UNet step (batch 2)"]["ours"]["median"] - kb["eager_seconds"]
    kb["e2e_bound_seconds"] = e2e_bound
    kb["max_e2e_ratio"] = rows[f"end-to-end {lengths[0]:g} s"]["diffusers"]["median"] / e2e_bound
    # the same kinds timed inside the step (profiler), both implementations: with every other op of our
    # step free and our kernels as fast as they run in it, the best ratio against diffusers' profiled step
    from kernel_bound import in_step_split

    in_step = in_step_split(stages["UNet step (batch 2)"], 1 if args.quick else 3)
    in_step["max_unet_ratio"] = in_step["diffusers"]["wall_seconds"] / in_step["ours"]["kernel_seconds"]

    compiled = None
    if args.compile:  # opt-in torch.compile of our UNet: one-time cost, then per-step time vs eager diffusers
        import torch._inductor.config as inductor_config

        ref_step = stages["UNet step (batch 2)"]["diffusers"]
        with torch.no_grad():
            ref_out = ref_step()

        def compiled_row(label: str, unet) -> tuple[float, float]:
            """Time the first call (the compilation) alone, take its max abs diff against diffusers'
            step, then alternate the compiled step with diffusers' into ``rows[label]``."""
            with torch.no_grad():
                t0 = time.perf_counter()
                out = unet(lat2, t, emb2)
                first = time.perf_counter() - t0
            rows[label] = {k: summary(v) for k, v in alternate(
                {"ours": lambda: unet(lat2, t, emb2), "diffusers": ref_step},
                max(repeats, 3) if args.quick else max(repeats, 9)).items()}
            return first, float((out - ref_out).abs().max())

        ours.compile()
        compile_s, cerr = compiled_row("UNet step (ours compiled)", ours.unet)
        # the same with inductor's freezing pass (weights become graph constants, so convolutions and
        # linears get prepacked oneDNN kernels, the kernel bound's fastest, with norms and activations
        # fused around them): the bound's kernel choice realised inside the step. Not a library default:
        # it bakes the weights into the graph, and it must be on while dynamo traces (torch.compile's
        # options= does not reach the trace). A fresh model after a dynamo reset, or the graph above
        # would be reused.
        torch._dynamo.reset()
        ours = None
        gc.collect()
        frozen = load_ours(ckpt).compile()
        with inductor_config.patch(freezing=True):
            frozen_s, ferr = compiled_row("UNet step (ours compiled, freezing)", frozen.unet)
        compiled = {"first_call_seconds": compile_s, "max_abs_diff_vs_diffusers": cerr,
                    "freezing_first_call_seconds": frozen_s, "freezing_max_abs_diff_vs_diffusers": ferr}
        frozen = None
        torch._dynamo.reset()
    ours = ref = None  # free both models before the RSS child processes run
    gc.collect()
    # peak RSS moves by ~100 MiB between identical fresh processes (page-cache state decides how many
    # neighbouring file pages a fault maps): alternate fresh processes, report the median
    rss_runs: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(1 if args.quick else 3):
        for impl in rss_runs:
            rss_runs[impl].append(peak_rss(impl, ckpt if impl == "ours" else folder, lengths[0], steps, args.threads))
    rss = {impl: statistics.median(v) for impl, v in rss_runs.items()}
    for r in rows.values():
        r["ratio"] = r["diffusers"]["median"] / r["ours"]["median"]
    return {"model": name, "threads": args.threads, "steps": steps, "guidance": 2.5, "repeats": repeats,
            "peak_gflops": peaks, "rows": rows, "flops": flops, "max_abs_diff": diffs,
            "peak_rss_mib": rss, "peak_rss_runs_mib": rss_runs, "rss_ratio": rss["ours"] / rss["diffusers"], "flop_floor": floor,
            "compiled_unet": compiled, "unet_kernel_bound": kb, "unet_in_step": in_step,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}


def print_table(res: dict) -> None:
    print(f"\nmodel {res['model']}, {res['threads']} threads, fp32, DDIM {res['steps']} steps, guidance 2.5, "
          f"{res['repeats']} counted runs each unless the row says n=... (median, min-max)")
    pk = res["peak_gflops"]
    print(f"measured fp32 peak {pk['peak']:.0f} GFLOP/s (best of sgemm {pk['sgemm']:.0f}, 3x3 conv {pk['conv3x3']:.0f})")
    head = f"{'row':38} {'ours s':>22} {'diffusers s':>22} {'diffusers/ours':>15} {'GFLOP/s ours/ref':>18}"
    print(head)
    print("-" * len(head))
    for label, r in res["rows"].items():
        o, d = r["ours"], r["diffusers"]
        g = f"{o['gflops_per_s']:.0f}/{d['gflops_per_s']:.0f}" if "gflops_per_s" in o else ""
        if o.get("runs", res["repeats"]) != res["repeats"]:
            label = f"{label} n={o['runs']}"
        print(f"{label:38} {o['median']:8.3f} ({o['min']:.3f}-{o['max']:.3f}) {d['median']:8.3f} "
              f"({d['min']:.3f}-{d['max']:.3f}) {r['ratio']:14.2f}x {g:>18}")
    rss = res["peak_rss_mib"]
    runs = res.get("peak_rss_runs_mib", {k: [v] for k, v in rss.items()})
    o_rng, d_rng = (f"{v:.0f} ({min(runs[k]):.0f}-{max(runs[k]):.0f})" for k, v in rss.items())
    print(f"{'peak RSS MiB (one generation, median)':38} {o_rng:>22} {d_rng:>22} "
          f"{rss['ours'] / rss['diffusers']:14.2f} (ours/diffusers)")
    for impl, f in res["flop_floor"].items():
        print(f"{impl}: {f['gflop']:.0f} GFLOP per {res['steps']}-step generation at the first length: "
              f"{f['seconds_at_peak']:.2f} s at the measured peak")
    kb = res.get("unet_kernel_bound")
    if kb:
        parts = ", ".join(f"{k} {v['eager_seconds'] * 1e3:.0f}->{v['best_seconds'] * 1e3:.0f} ms "
                          f"({'/'.join(f'{n} {c}' for n, c in v['wins'].items())})" for k, v in kb["kinds"].items())
        print(f"UNet step kernel bound (each call alone on its fastest kernel, eager->best): {parts}; "
              f"sum {kb['bound_seconds']:.3f} s, every other op free -> UNet ratio at most "
              f"{kb['max_unet_ratio']:.2f}x; end to end (VAE and vocoder at the peak) at least "
              f"{kb['e2e_bound_seconds']:.2f} s -> at most {kb['max_e2e_ratio']:.2f}x")
        rates = ", ".join(f"{k} {v['eager_gflops_per_s']:.0f}->{v['best_gflops_per_s']:.0f} "
                          f"({v['eager_gflops_per_s'] / pk['peak']:.0%} of peak eager)" for k, v in kb["kinds"].items()
                          if v["flops"])
        print(f"UNet step kernels alone, GFLOP/s eager->best: {rates}; the step's other ops and in-context "
              f"overhead (step median - kernels alone, eager): {kb['other_ops_seconds'] * 1e3:.0f} ms")
    ins = res.get("unet_in_step")
    if ins:
        def split(r):
            parts = ", ".join(f"{k} {v['seconds'] * 1e3:.0f}" for k, v in r["kinds"].items())
            return f"{r['wall_seconds'] * 1e3:.0f} ms = {parts}, other ops {r['other_seconds'] * 1e3:.0f}"
        print(f"UNet step inside the step (profiler, ms): ours {split(ins['ours'])}; diffusers "
              f"{split(ins['diffusers'])}; with our other ops free -> UNet ratio at most "
              f"{ins['max_unet_ratio']:.2f}x")
    if res.get("compiled_unet"):
        c = res["compiled_unet"]
        print(f"torch.compile (ours, UNet): first call {c['first_call_seconds']:.1f} s (one-time), "
              f"max abs diff vs diffusers {c['max_abs_diff_vs_diffusers']:.2e}; with inductor freezing: first "
              f"call {c['freezing_first_call_seconds']:.1f} s, max abs diff {c['freezing_max_abs_diff_vs_diffusers']:.2e}")
    print("waveform max abs diff ours vs diffusers: " +
          ", ".join(f"{k:g} s: {v:.2e}" for k, v in res["max_abs_diff"].items()))


def write_results(res: dict, out, default_name: str) -> Path:
    """Write ``res`` as JSON to ``out`` (default ``benchmarks/results/<default_name>``); returns the path."""
    out = Path(out) if out else HERE / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, one counted run (CI smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true",
                   help="also time our UNet under torch.compile, plain and with inductor freezing "
                        "(reports the one-time compile costs)")
    p.add_argument("--work", default=str(HERE / "work"), help="folder for the reference model and our file")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/<model>.json)")
    p.add_argument("--rss-child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--seconds-rss", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.source, args.seconds_rss, args.steps, args.threads)
        return 0
    res = run(args)
    print_table(res)
    write_results(res, args.out, f"{res['model']}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
