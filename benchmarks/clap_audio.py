"""CLAP audio tower cost: embedding time for 10 s of 16 kHz audio (front-end alone, HTSAT-tiny and
HTSAT-base towers with random weights), and the extra cost of best-of-3 (``--candidates 3``)
against one waveform on a pipeline, alternating A B A B in one run.

    python benchmarks/clap_audio.py [--model tiny|FILE] [--repeats 3] [--threads 2]

The pipeline rows use ``--model`` (default ``tiny``: its UNet is small, so sampling is cheap and the
CLAP share looks large; on a real checkpoint the same absolute CLAP cost is a small share). With
``tiny`` the attached tower is HTSAT-tiny-sized with a 16-wide projection (tiny's CLAP width).
Writes ``benchmarks/results/clap_audio.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from audioldm_core.clap_frontend import clap_mel  # noqa: E402
from audioldm_core.htsat import HTSAT, ClapAudioConfig  # noqa: E402
from audioldm_core.pipeline import AudioLDM  # noqa: E402

SIZES = {"htsat-tiny": dict(embed_dim=96, depths=(2, 2, 6, 2)), "htsat-base": dict(embed_dim=128, depths=(2, 2, 12, 2))}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5.12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wave = torch.randn(160000, generator=torch.Generator().manual_seed(0)) * 0.1
    res = {"threads": args.threads, "repeats": args.repeats, "model": args.model}
    res["frontend_10s_s"] = timed(lambda: clap_mel(wave), args.repeats)
    mel = clap_mel(wave)
    for name, kw in SIZES.items():
        tower = HTSAT(ClapAudioConfig(**kw)).eval()
        with torch.no_grad():
            res[f"{name}_tower_s"] = timed(lambda: tower(mel), args.repeats)
    pipe = AudioLDM.from_pretrained(args.model)
    proj = pipe.config.clap.projection_dim
    if pipe.clap_audio is None:
        tower = HTSAT(ClapAudioConfig(projection_dim=proj)).eval()
        pipe.set_clap_audio(lambda: tower, "checkpoint")
    kw = dict(audio_length_in_s=args.seconds, num_inference_steps=args.steps, progress=False)
    one, three = [], []
    with torch.no_grad():
        pipe("a dog barking", generator=torch.Generator().manual_seed(0), **kw)
        pipe("a dog barking", num_candidates=3, generator=torch.Generator().manual_seed(0), **kw)
        for _ in range(args.repeats):  # alternate A B A B
            t0 = time.perf_counter()
            pipe("a dog barking", generator=torch.Generator().manual_seed(0), **kw)
            one.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pipe("a dog barking", num_candidates=3, generator=torch.Generator().manual_seed(0), **kw)
            three.append(time.perf_counter() - t0)
    res["one_waveform_s"] = statistics.median(one)
    res["candidates3_s"] = statistics.median(three)
    res["candidates3_over_one"] = res["candidates3_s"] / res["one_waveform_s"]
    # 3 candidates are 3x the sampling and decoding (one batch) plus 3 CLAP embeddings; this is what
    # they cost beyond three plain waveforms
    res["candidates3_over_3x_one"] = res["candidates3_s"] / (3 * res["one_waveform_s"])
    out = REPO / "benchmarks" / "results" / "clap_audio.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    for k, v in res.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
