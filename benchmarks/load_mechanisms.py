"""Load time and peak RSS of the loading and memory mechanisms, each switched on and off.

Rows (each measured in fresh child processes, variants alternated round by round):

* ``load``: ``AudioLDM.from_pretrained(converted file)`` wall time, as ``benchmarks/run.py``'s
  "model load" row measures it, and the process CPU time of the same call (steadier than wall time
  on a shared machine), for the variants
    - ``tree:<path>``: the package as it is in another source tree (``--baseline-tree``, e.g. an
      export of the previous commit), for a before/after comparison;
    - ``mapped``: this tree, reading tensors with our own memory-mapped reader;
    - ``safetensors``: this tree, reading tensors with safetensors' ``safe_open().get_tensor``.
* ``rss``: peak RSS (VmHWM) of one process that loads and runs one generation, with the text
  encoder's page release on (``release_text_encoder=True``) and off.

Usage: ``python benchmarks/load_mechanisms.py --checkpoint s-full-v2.safetensors
[--baseline-tree DIR] [--rounds 3] [--loads 7] [--seconds 5.12] [--steps 10]``; writes
``benchmarks/results/load_mechanisms.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a dog barks while rain falls on a tin roof"


def _child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from audioldm_core import AudioLDM, checkpoint

    if args.reader == "safetensors":
        if not hasattr(checkpoint, "_mapped_states"):
            raise SystemExit("this tree has no own reader to switch off")
        checkpoint._mapped_states = lambda *a, **k: None  # the loader then reads through safe_open
    out = {}
    if args.child == "load":
        times, cpu = [], []
        for _ in range(args.loads):
            t0, c0 = time.perf_counter(), time.process_time()
            pipe = AudioLDM.from_pretrained(args.checkpoint)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            del pipe
        out["load_s"], out["load_cpu_s"] = times, cpu
    else:
        pipe = AudioLDM.from_pretrained(args.checkpoint)
        pipe.release_text_encoder = args.release == "on"
        pipe(PROMPT, audio_length_in_s=args.seconds, num_inference_steps=args.steps, guidance_scale=2.5,
             generator=torch.Generator().manual_seed(0), progress=False)
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
        out["peak_rss_mib"] = int(hwm) / 1024
    print(json.dumps(out))


def _run(tree: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), *extra], capture_output=True, text=True,
                       cwd=tree, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"child {extra} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--baseline-tree", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loads", type=int, default=7)
    p.add_argument("--rss-rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.12)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load_mechanisms.json")
    p.add_argument("--child", choices=["load", "rss"], help=argparse.SUPPRESS)
    p.add_argument("--reader", choices=["mapped", "safetensors"], default="mapped", help=argparse.SUPPRESS)
    p.add_argument("--release", choices=["on", "off"], default="on", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    ckpt = str(args.checkpoint.resolve())
    common = ["--checkpoint", ckpt, "--threads", str(args.threads), "--loads", str(args.loads),
              "--seconds", str(args.seconds), "--steps", str(args.steps)]
    load_variants = {"mapped": (REPO, ["--reader", "mapped"]), "safetensors": (REPO, ["--reader", "safetensors"])}
    if args.baseline_tree is not None:
        load_variants = {f"tree:{args.baseline_tree}": (args.baseline_tree.resolve(), ["--reader", "mapped"]),
                         **load_variants}
    loads: dict[str, list[float]] = {k: [] for k in load_variants}
    cpus: dict[str, list[float]] = {k: [] for k in load_variants}
    for r in range(args.rounds):
        for name, (tree, extra) in load_variants.items():
            res = _run(tree, [*common, "--child", "load", *extra])
            loads[name] += res["load_s"][1:]  # the first load of a process also imports modules
            cpus[name] += res["load_cpu_s"][1:]
            print(f"round {r} load {name}: median {statistics.median(res['load_s'][1:]) * 1e3:.1f} ms wall, "
                  f"{statistics.median(res['load_cpu_s'][1:]) * 1e3:.1f} ms CPU", flush=True)
    rss: dict[str, list[float]] = {}
    if not args.skip_rss:
        rss_variants = {"release on": ["--release", "on"], "release off": ["--release", "off"]}
        rss = {k: [] for k in rss_variants}
        for r in range(args.rss_rounds):
            for name, extra in rss_variants.items():
                res = _run(REPO, [*common, "--child", "rss", *extra])
                rss[name].append(res["peak_rss_mib"])
                print(f"round {r} rss {name}: {res['peak_rss_mib']:.0f} MiB", flush=True)
    import torch

    result = {"checkpoint": ckpt, "threads": args.threads, "seconds": args.seconds, "steps": args.steps,
              "load_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                         for k, v in loads.items()},
              "load_cpu_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                             for k, v in cpus.items()},
              "peak_rss_mib": {k: {"median": statistics.median(v), "runs": v} for k, v in rss.items()},
              "torch": torch.__version__, "machine": f"{os.cpu_count()} cpus, {sys.platform}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["load_s"].items():
        print(f"load {k:40} median {v['median'] * 1e3:7.1f} ms (min {v['min'] * 1e3:.1f}, max {v['max'] * 1e3:.1f})")
    for k, v in result["load_cpu_s"].items():
        print(f"load CPU {k:36} median {v['median'] * 1e3:7.1f} ms (min {v['min'] * 1e3:.1f}, max {v['max'] * 1e3:.1f})")
    for k, v in result["peak_rss_mib"].items():
        print(f"peak RSS {k:36} median {v['median']:7.0f} MiB {v['runs']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
