"""Throughput of the resumable batch: the local engine with 2 torch threads vs Ray with 2 workers x 1
thread, on this machine, plus what Ray costs before the first item starts; a local run with 1 thread
is the control that separates "two processes" from "Ray".

    python benchmarks/ray_batch.py              # s-full-v2 size, random weights, 5.12 s, 10 steps
    python benchmarks/ray_batch.py --quick      # the tiny model: checks the script, numbers mean nothing
    python benchmarks/ray_batch.py --engines local1 --out x.json   # only the 1-thread control

Both engines run the same prompts file (``--items`` prompts, fixed seeds) through
``audioldm_core.batch.run`` into fresh folders, alternating local / Ray ``--repeats`` times. From the
time each log line arrives:

- ``ready``: seconds until the model is loaded and the first item can start (local: model load;
  Ray: ``ray.init`` of a local runtime + actor start + each actor's model load, in parallel);
- ``steady items/min``: items after ``ready`` divided by the time from ``ready`` to the last item;
- ``total items/min``: items divided by the whole call (what a user waits for), including startup
  and, for Ray, its shutdown.

The outputs of both engines are compared byte for byte (bit-identical only when the thread counts
match, so here they are expected to differ in the last bits; the count of identical files is
reported, not asserted). Results: ``benchmarks/results/ray_batch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def model_file(quick: bool) -> str:
    """The model to run: ``tiny``, or the random-weight s-full-v2 folder converted once in benchmarks/work."""
    if quick:
        return "tiny"
    from run import build_folder, convert  # benchmarks/run.py

    work = HERE / "work"
    work.mkdir(exist_ok=True)
    return str(convert(build_folder("s-full-v2", work), work))


ENGINES = {"local2": ("local", dict(threads=2)), "local1": ("local", dict(threads=1)),
           "ray": ("ray", dict(workers=2, threads_per_worker=1))}


def timed_run(row: str, prompts: Path, out: Path, model: str, seconds: float, steps: int) -> dict:
    """One batch run of ``row`` (a key of :data:`ENGINES`); the timeline from its log lines."""
    from audioldm_core import batch

    t0 = time.perf_counter()
    marks: list[tuple[float, str]] = []

    def log(line: str) -> None:
        marks.append((time.perf_counter() - t0, line))
        print(f"  {marks[-1][0]:7.1f} s  {line}", flush=True)

    engine, kw = ENGINES[row]
    res = batch.run(prompts, out, engine=engine, model=model, seed=0, seconds=seconds, steps=steps, log=log, **kw)
    total = time.perf_counter() - t0
    done = [(t, line) for t, line in marks if line.startswith("[")]
    recs = [r for r in res.records if not r.get("failed")]
    if engine == "ray":
        ready = max(t for t, line in marks if " loaded the model " in line)
    else:  # the first item started when its record's generation time began
        ready = done[0][0] - recs[0]["generation_seconds"]
    last = done[-1][0]
    return {"engine": row, "items": len(recs), "ready_s": ready, "last_item_s": last, "total_s": total,
            "steady_items_per_min": 60 * len(recs) / (last - ready), "total_items_per_min": 60 * len(recs) / total,
            "item_seconds": [r["generation_seconds"] for r in recs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model (checks the script only)")
    p.add_argument("--items", type=int, default=6, help="prompts per run (default 6)")
    p.add_argument("--repeats", type=int, default=1, help="local/Ray pairs, alternating (default 1)")
    p.add_argument("--engines", default="local2,ray",
                   help="comma-separated rows from local2 (2 threads), local1 (1 thread), ray (2 x 1); default local2,ray")
    p.add_argument("--out", type=Path, default=HERE / "results" / "ray_batch.json")
    args = p.parse_args(argv)
    import torch

    engines = args.engines.split(",")
    unknown = set(engines) - set(ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}; choose from {', '.join(ENGINES)}")
    seconds, steps = (1.0, 2) if args.quick else (5.12, 10)
    model = model_file(args.quick)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("".join(f"benchmark prompt {i}: rain, wind and a distant dog\n" for i in range(args.items)))
        for rep in range(args.repeats):
            outs = {}
            for engine in engines:
                out = Path(tmp) / f"{engine}-{rep}"
                print(f"{engine} run {rep + 1}/{args.repeats}", flush=True)
                rows.append(timed_run(engine, prompts, out, model, seconds, steps))
                outs[engine] = out
            if "ray" in outs:  # bit-identical to a local run only at the same thread count (local1)
                for name, out in outs.items():
                    if name != "ray":
                        rows[-1][f"files_identical_to_{name}"] = sum(
                            (out / n.name).read_bytes() == n.read_bytes() for n in outs["ray"].glob("*.wav"))
            for out in outs.values():
                shutil.rmtree(out)

    def med(engine, key):
        return statistics.median(r[key] for r in rows if r["engine"] == engine)

    summary = {k: {e: med(e, k) for e in engines}
               for k in ("ready_s", "steady_items_per_min", "total_items_per_min", "total_s")}
    if {"ray", "local2"} <= set(engines):
        for k in ("steady", "total"):
            summary[f"ray_over_local2_{k}"] = (summary[f"{k}_items_per_min"]["ray"]
                                               / summary[f"{k}_items_per_min"]["local2"])
    result = {"model": "tiny" if args.quick else "s-full-v2 (random weights, converted file)", "seconds": seconds,
              "steps": steps, "items": args.items, "repeats": args.repeats, "torch": torch.__version__,
              "ray": __import__("ray").__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
              "load_average_at_start": os.getloadavg()[0], "summary": summary, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    titles = {"local2": "local 2 threads", "local1": "local 1 thread", "ray": "Ray 2 x 1 thread"}
    print("\n" + " " * 28 + "".join(f"{titles[e]:>18}" for e in engines))
    for key, label in (("ready_s", "ready (s)"), ("steady_items_per_min", "steady items/min"),
                       ("total_items_per_min", "total items/min"), ("total_s", "whole run (s)")):
        print(f"{label:28}" + "".join(f"{summary[key][e]:18.2f}" for e in engines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
