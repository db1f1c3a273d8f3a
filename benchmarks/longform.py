"""Long-form generation: peak memory and time per second of audio against length (s-full-v2 size, fp32).

    python benchmarks/longform.py                 # 20.48 s and 60 s plain, 60 s and 300 s windowed
    python benchmarks/longform.py --quick         # the tiny model, short lengths (a smoke run)
    python benchmarks/longform.py --steps 2 --rows 300:auto,20:auto
    python benchmarks/longform.py --crossover     # the switch point's measurements (one thread)

Every row runs in its own process (so its peak RSS is its own): load the random-weight model, one
generation (DDIM, guidance 2.5, ``--steps`` steps), and report wall time per stage (text encoder,
UNet, VAE decoder, vocoder: forward hooks summing each module's calls), time per second of audio,
RSS after loading and peak RSS. Rows are ``seconds:window`` with window ``none`` (the plain
full-length path, ``window_s=None``), ``auto`` (the default) or seconds. Results go to
``benchmarks/results/longform.json`` (written after every row).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

DEFAULT_ROWS = "20.48:none,60:none,60:auto,300:auto"
STAGES = {"text": "clap", "unet": "unet", "vae": "vae.decoder", "vocoder": "vocoder"}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def random_pipe(name: str):
    """A pipeline of ``name``'s architecture with seeded random weights built in memory (no cvssp folder
    or conversion: the same shapes and so the same cost and memory as the converted random model),
    with the tiny model's tokenizer (its ids are valid for every vocabulary)."""
    import json
    from importlib import resources

    from audioldm_core import AudioLDM
    from audioldm_core.checkpoint import COMPONENTS, build_component
    from audioldm_core.config import builtin_config
    from audioldm_core.tiny import seeded_init_
    from audioldm_core.tokenizer import Tokenizer

    config = builtin_config(name)
    data = json.loads(resources.files("audioldm_core.configs").joinpath("tiny-tokenizer.json").read_text())
    modules = {c: seeded_init_(build_component(c, config), i).eval().requires_grad_(False)
               for i, c in enumerate(COMPONENTS)}
    return AudioLDM(config, Tokenizer.from_dict(data, model_max_length=config.model_max_length),
                    source={"kind": "builtin", "name": f"random {name}"}, **modules)


def child(ckpt: str, seconds: float, window: str, steps: int, threads: int) -> dict:
    """One generation in this process; returns its row."""
    import torch

    from audioldm_core import AudioLDM, longform

    torch.set_num_threads(threads)
    pipe = random_pipe(ckpt[len("random:"):]) if ckpt.startswith("random:") else AudioLDM.from_pretrained(ckpt)
    rss_loaded = _rss_mib()
    spent = {k: 0.0 for k in STAGES}
    for stage, path in STAGES.items():
        module = pipe
        for part in path.split("."):
            module = getattr(module, part)
        starts = []
        module.register_forward_pre_hook(lambda m, a, s=starts: s.append(time.perf_counter()))
        module.register_forward_hook(lambda m, a, o, s=starts, k=stage: spent.__setitem__(
            k, spent[k] + time.perf_counter() - s.pop()))
    window_s = None if window == "none" else ("auto" if window == "auto" else float(window))
    t0 = time.perf_counter()
    out = pipe("a dog barks while rain falls on a tin roof", audio_length_in_s=seconds, num_inference_steps=steps,
               guidance_scale=2.5, generator=torch.Generator().manual_seed(0), window_s=window_s, progress=False,
               allow_long=True)
    total = time.perf_counter() - t0
    frames = out.audios.shape[1] // 640
    plan = None
    spec = longform.resolve(seconds, pipe.latent_frame_s, window_s, longform.OVERLAP_S)
    if spec is not None:
        plan = spec.plan(-(-int(seconds / 0.01) // 4))
    return {"seconds": seconds, "window": window, "windows": 1 if plan is None or plan.trivial else plan.n,
            "latent_frames": frames, "steps": steps, "threads": threads, "total_s": total,
            "stages_s": spent, "other_s": total - sum(spent.values()),
            "per_audio_second": {k: v / seconds for k, v in {**spent, "total": total}.items()},
            "rss_loaded_mib": rss_loaded, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "finite": bool(abs(out.audios).max() < float("inf"))}


def crossover(threads: int) -> dict:
    """The measurements behind ``longform.SWITCH_S`` and the windowed decode (s-full-v2 sizes, random
    weights): one guided UNet call (batch 2) on the whole latent vs on 10.24 s windows, the VAE
    mid-block attention alone, and the decoded mel of the three decode modes against one pass."""
    import torch

    from audioldm_core import longform
    from audioldm_core.checkpoint import build_component
    from audioldm_core.config import builtin_config
    from audioldm_core.tiny import seeded_init_
    from audioldm_core.vae import SpatialAttention

    torch.set_num_threads(threads)
    cfg = builtin_config("s-full-v2")
    res: dict = {"unet": [], "vae_attention": [], "decode": {}}

    def timed(f, *a):
        t0 = time.perf_counter()
        y = f(*a)
        return time.perf_counter() - t0, y

    with torch.no_grad():
        unet = build_component("unet", cfg).eval()
        cond, t = torch.randn(2, 512), torch.tensor(500)
        unet(torch.randn(2, 8, 64, 16), t, cond)  # warm-up
        for frames in (256, 512, 768, 1024):
            x = torch.randn(2, 8, frames, 16)
            plan = longform.plan_windows(frames, 256, 32)
            full, _ = timed(unet, x, t, cond)
            win, _ = timed(longform.windowed(unet, plan, longform.MAX_ROWS), x, t, cond)
            res["unet"].append({"seconds": frames * 0.04, "full_s": full, "windowed_s": win, "windows": plan.n})
            print(res["unet"][-1], flush=True)
        del unet
        att = SpatialAttention(cfg.vae.block_channels[-1], cfg.vae.norm_groups).eval()
        for frames in (256, 512, 1024):
            dt, _ = timed(att, torch.randn(1, cfg.vae.block_channels[-1], frames, 16))
            res["vae_attention"].append({"seconds": frames * 0.04, "s": dt})
            print(res["vae_attention"][-1], flush=True)
        vae = seeded_init_(build_component("vae", cfg), 1).eval()
        z = torch.randn(1, 8, 768, 16, generator=torch.Generator().manual_seed(0))
        t_full, full = timed(vae.decode, z)
        t_tiled, tiled = timed(lambda v: vae.decode(v, chunk_frames=64), z)
        t_win, win = timed(lambda v: longform.run_windows(lambda w, k: vae.decode(w), v,
                                                          longform.plan_windows(768, 256, 32), out_scale=4), z)
        rms = full.square().mean().sqrt()
        res["decode"] = {"seconds": 30.72, "full_s": t_full, "tiled_s": t_tiled, "windowed_s": t_win,
                         "tiled_max_abs": (tiled - full).abs().max().item(),
                         "tiled_rms_rel": ((tiled - full).square().mean().sqrt() / rms).item(),
                         "windowed_max_abs": (win - full).abs().max().item(),
                         "windowed_rms_rel": ((win - full).square().mean().sqrt() / rms).item()}
        print(res["decode"], flush=True)
    return res


def table(rows: list[dict]) -> str:
    """Markdown table of the rows, with the ratios to the first windowed/plain 20 s row."""
    base = rows[0]
    head = ("| length | path | windows | total s | s per s of audio (text / UNet / VAE / vocoder / total) "
            "| x first row (UNet / VAE / vocoder / total) | RSS loaded MiB | peak RSS MiB | peak x first row |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        p, b = r["per_audio_second"], base["per_audio_second"]
        per = " / ".join(f"{p[k]:.3f}" for k in ("text", "unet", "vae", "vocoder", "total"))
        rat = " / ".join(f"{p[k] / b[k]:.2f}" if b[k] else "-" for k in ("unet", "vae", "vocoder", "total"))
        path = "plain (window_s=None)" if r["window"] == "none" else f"window_s={r['window']}"
        lines.append(f"| {r['seconds']:g} s | {path} | {r['windows']} | {r['total_s']:.1f} | {per} | {rat} | "
                     f"{r['rss_loaded_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the tiny model at short lengths")
    ap.add_argument("--rows", default=None, help=f"comma-separated seconds:window (default {DEFAULT_ROWS})")
    ap.add_argument("--steps", type=int, default=1, help="DDIM steps per generation (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per generation (default 2)")
    ap.add_argument("--work", default=str(HERE / "work"), help="folder for the random-weight model")
    ap.add_argument("--in-memory", action="store_true",
                    help="build the random s-full-v2 weights in each row's process instead of converting a "
                         "cvssp folder (same shapes; no folder build)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/longform[-quick].json)")
    ap.add_argument("--crossover", action="store_true", help="the switch point's measurements instead")
    ap.add_argument("--child", nargs=2, metavar=("CKPT", "SECONDS:WINDOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.crossover:
        res = crossover(1)
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "longform-crossover.json").write_text(json.dumps(res, indent=1))
        return
    if args.child:
        sec, win = args.child[1].split(":")
        print(json.dumps(child(args.child[0], float(sec), win, args.steps, args.threads)))
        return
    if args.quick:
        ckpt, rows = "tiny", args.rows or "20.48:none,60:auto"
    elif args.in_memory:
        ckpt, rows = "random:s-full-v2", args.rows or DEFAULT_ROWS
    else:
        from run import build_folder, convert

        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        ckpt, rows = str(convert(build_folder("s-full-v2", work), work)), args.rows or DEFAULT_ROWS
    out = Path(args.out or HERE / "results" / ("longform-quick.json" if args.quick else "longform.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    done = []
    for spec in rows.split(","):
        print(f"running {spec} ...", flush=True)
        r = subprocess.run([sys.executable, __file__, "--child", ckpt, spec, "--steps", str(args.steps),
                            "--threads", str(args.threads)], capture_output=True, text=True, cwd=REPO)
        if r.returncode:
            raise SystemExit(f"row {spec} failed:\n{r.stderr[-3000:]}")
        done.append(json.loads(r.stdout.strip().splitlines()[-1]))
        meta = {"model": "tiny" if args.quick else "s-full-v2 (random weights)", "dtype": "float32",
                "sampler": "ddim", "guidance_scale": 2.5, "machine": platform.platform(),
                "cpus": __import__("os").cpu_count()}
        out.write_text(json.dumps({"meta": meta, "rows": done}, indent=1))
        print(table(done), flush=True)


if __name__ == "__main__":
    main()
