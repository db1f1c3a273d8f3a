"""The ONNX Runtime backend against diffusers eager AND diffusers' own modules on ONNX Runtime, in one run.

    python benchmarks/run_onnx.py            # full-size random-weight s-full-v2, 5.12 s and 20.48 s
    python benchmarks/run_onnx.py --quick    # the tiny model, seconds

Implementations (fp32, CPU, the same seed, DDIM, guidance 2.5):
- ``ours-ort``: ``AudioLDM.from_pretrained(..., backend="onnxruntime")`` (every component on ORT);
- ``diffusers``: ``AudioLDMPipeline``, eager;
- ``diffusers-ort``: the same pipeline with its UNet, VAE decoder and vocoder exported by
  ``torch.onnx.export(dynamo=False, opset 17)`` and run in ONNX Runtime sessions with the same
  session options, the text encoder left eager (the peer a CPU user would build);
- ``ours``: our eager path, in the end-to-end rows (the eager figures belong to ``benchmarks/run.py``).

Rows: end to end at each length; end to end without text encoding (``prompt_embeds`` given);
per stage at the first length; first generation in a fresh process (load + export or cache hit + one
generation) with a cold and a warm graph cache, and its peak RSS (VmHWM). Each row's implementations
run in a freshly shuffled order every round (``--seed``), after one warm-up each. Medians; the ratio
columns are peer median / ours-ort median. Results go to ``benchmarks/results/onnx-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import PROMPT, REPO, build_folder, convert, load_ours, load_ref, summary, write_results  # noqa: E402

PEERS = ("diffusers", "diffusers-ort")


def shuffled_rounds(fns: dict[str, Callable[[], object]], repeats: int, rng: random.Random) -> dict[str, list[float]]:
    """Warm each up once, then ``repeats`` rounds timing every function once, in a new random order per round."""
    import gc

    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            order = list(fns)
            rng.shuffle(order)
            for k in order:
                gc.collect()
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    return times


# --- the diffusers-on-ONNX-Runtime peer -------------------------------------------------------------------


class _DiffusersUNetGraph(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, class_labels):
        return self.unet(x, t, encoder_hidden_states=None, class_labels=class_labels).sample


class _DiffusersVAEDecodeGraph(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


def _export_session(module, example, names, outputs, dynamic, folder: Path, threads: int):
    import onnxruntime as ort

    from audioldm_core.onnx_backend import OPSET, SessionSettings

    path = folder / f"{names[0]}-{module.__class__.__name__}.onnx"
    with torch.no_grad():
        torch.onnx.export(module, example, str(path), input_names=list(names), output_names=list(outputs),
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return ort.InferenceSession(str(path), SessionSettings(threads=threads).options(),
                                providers=["CPUExecutionProvider"])


def diffusers_on_ort(ref, folder: Path, threads: int, frames: int):
    """Export ``ref``'s UNet, VAE decoder and vocoder into ``folder`` and make ``ref`` call the sessions
    (instance attributes on this benchmark's own pipeline object). Returns the export seconds."""
    t0 = time.perf_counter()
    bins = ref.vocoder.config.model_in_dim // ref.vae_scale_factor
    x = torch.randn(2, ref.unet.config.in_channels, frames, bins)
    emb = torch.randn(2, ref.unet.class_embedding.in_features)
    unet_s = _export_session(_DiffusersUNetGraph(ref.unet), (x, torch.tensor(500), emb), ("x", "t", "class_labels"),
                             ("eps",), {"x": {0: "b", 2: "f"}, "class_labels": {0: "b"}, "eps": {0: "b", 2: "f"}},
                             folder, threads)
    vae_s = _export_session(_DiffusersVAEDecodeGraph(ref.vae), (x[:1],), ("z",), ("mel",),
                            {"z": {0: "b", 2: "f"}, "mel": {0: "b", 2: "m"}}, folder, threads)
    mel = torch.randn(1, ref.vae_scale_factor * frames, ref.vocoder.config.model_in_dim)
    voc_s = _export_session(ref.vocoder, (mel,), ("mel",), ("audio",), {"mel": {0: "b", 1: "f"},
                                                                         "audio": {0: "b", 1: "s"}}, folder, threads)

    def run(sess, **feeds):
        return torch.from_numpy(sess.run(None, {k: v.detach().float().numpy() if v.is_floating_point()
                                                else v.detach().numpy() for k, v in feeds.items()})[0])

    def unet_forward(x, t, encoder_hidden_states=None, class_labels=None, **_):
        t = torch.as_tensor(t).long().reshape(())
        return SimpleNamespace(sample=run(unet_s, x=x, t=t, class_labels=class_labels))

    ref.unet.forward = unet_forward
    ref.vae.decode = lambda z, **_: SimpleNamespace(sample=run(vae_s, z=z))
    ref.vocoder.forward = lambda mel: run(voc_s, mel=mel)
    return time.perf_counter() - t0


def latent_frames(ref, seconds: float) -> int:
    """Latent frames of a generation of ``seconds`` as diffusers' pipeline computes them."""
    hop = float(np.prod(ref.vocoder.config.upsample_rates)) / ref.vocoder.config.sampling_rate
    return -(-int(seconds / hop) // ref.vae_scale_factor)


# --- fresh-process first generation ------------------------------------------------------------------------


def first_child(impl: str, source: str, folder: str, cache: str, seconds: float, steps: int, threads: int) -> None:
    """Load, (export or hit the cache,) generate once; print wall seconds and peak RSS as JSON."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    if impl == "ours-ort":
        from audioldm_core import AudioLDM

        pipe = AudioLDM.from_pretrained(source, backend="onnxruntime", backend_options={"cache_dir": cache})
        pipe(PROMPT, audio_length_in_s=seconds, num_inference_steps=steps, generator=gen, progress=False)
    else:
        pipe = load_ref(Path(folder))
        if impl == "diffusers-ort":
            diffusers_on_ort(pipe, Path(cache), threads, latent_frames(pipe, seconds))
        pipe(PROMPT, audio_length_in_s=seconds, num_inference_steps=steps, generator=gen)
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mib": int(hwm) / 1024}))


def fresh(impl: str, ckpt: Path, folder: Path, cache: Path, seconds: float, steps: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--first-child", impl, "--source", str(ckpt), "--folder",
                        str(folder), "--cache", str(cache), "--seconds", str(seconds), "--steps", str(steps),
                        "--threads", str(threads)], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"first-generation child for {impl} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the run -----------------------------------------------------------------------------------------------


def run(args) -> dict:
    from audioldm_core import AudioLDM

    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    name = "tiny" if args.quick else "s-full-v2"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = build_folder(name, work)
    ckpt = convert(folder, work)
    lengths = args.lengths or ([1.0, 2.0] if args.quick else [5.12, 20.48])
    steps = 2 if args.quick else args.steps
    repeats = 1 if args.quick else args.repeats
    scratch = Path(tempfile.mkdtemp(prefix="onnx-bench-", dir=work))
    rows: dict[str, dict] = {}
    try:
        # first generation in a fresh process: cold cache (exports), then warm (cache hit)
        cache = Path(args.cache) if args.cache and "first" in args.skip else scratch / "ours-cache"
        first = {} if "first" in args.skip else {"ours-ort cold cache": fresh("ours-ort", ckpt, folder, cache, lengths[0], steps, args.threads),
                 "ours-ort warm cache": fresh("ours-ort", ckpt, folder, cache, lengths[0], steps, args.threads),
                 "diffusers": fresh("diffusers", ckpt, folder, scratch, lengths[0], steps, args.threads)}
        peer_dir = scratch / "peer"
        if "first" not in args.skip:
            peer_dir.mkdir()
            first["diffusers-ort (exports every time)"] = fresh("diffusers-ort", ckpt, folder, peer_dir, lengths[0],
                                                                steps, args.threads)
            shutil.rmtree(peer_dir)

        ours_ort = AudioLDM.from_pretrained(ckpt, backend="onnxruntime", backend_options={"cache_dir": cache})
        ours = load_ours(ckpt)
        ref = load_ref(folder)
        ref_ort = load_ref(folder)
        peer_dir.mkdir()
        frames0 = latent_frames(ref, lengths[0])
        peer_export = diffusers_on_ort(ref_ort, peer_dir, args.threads, frames0)
        impls = {"ours-ort": ours_ort, "ours": ours, "diffusers": ref, "diffusers-ort": ref_ort}

        def gen(impl, s, embeds=None):
            pipe = impls[impl]
            kw = dict(audio_length_in_s=s, num_inference_steps=steps, guidance_scale=2.5,
                      generator=torch.Generator().manual_seed(0))
            if impl.startswith("ours"):
                kw["progress"] = False
            if embeds is None:
                return lambda: pipe(PROMPT, **kw).audios
            return lambda: pipe(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], **kw).audios

        diffs = {}
        cond, uncond = ours.encode_prompt(PROMPT, guidance_scale=2.5)
        for s in ([] if "e2e" in args.skip else lengths):
            outs = {k: gen(k, s)() for k in impls}
            diffs[f"{s:g} s"] = {k: float(np.abs(outs[k] - outs["diffusers"]).max()) for k in impls}
            row_impls = impls if s == lengths[0] else {k: v for k, v in impls.items() if k != "ours"}
            rows[f"end-to-end {s:g} s"] = {k: summary(v) for k, v in
                                           shuffled_rounds({k: gen(k, s) for k in row_impls}, repeats, rng).items()}
            rows[f"end-to-end {s:g} s without text"] = {
                k: summary(v) for k, v in shuffled_rounds({k: gen(k, s, (cond, uncond)) for k in row_impls
                                                           if k != "ours"}, repeats, rng).items()}

        # stages at the first length
        f = ours.vae_scale_factor
        lat2 = torch.randn(2, ours.config.unet.in_channels, frames0, ours.config.vocoder.model_in_dim // f,
                           generator=torch.Generator().manual_seed(0))
        emb2 = torch.cat([uncond, cond])
        t = torch.tensor(500)
        z = lat2[:1] / ours.config.vae.scaling_factor
        mel = ours.vae.decode(z).squeeze(1)
        stages = {
            "text encoding (prompt + negative)": {
                "ours-ort": lambda: ours_ort.encode_prompt(PROMPT, guidance_scale=2.5),
                "diffusers": lambda: ref._encode_prompt(PROMPT, torch.device("cpu"), 1, True),
                "diffusers-ort": lambda: ref_ort._encode_prompt(PROMPT, torch.device("cpu"), 1, True)},
            "UNet step (batch 2)": {k: (lambda p=p, k=k: p.unet(lat2, t, emb2) if k == "ours-ort" else
                                        p.unet(lat2, t, encoder_hidden_states=None, class_labels=emb2).sample)
                                    for k, p in (("ours-ort", ours_ort), ("diffusers", ref), ("diffusers-ort", ref_ort))},
            "VAE decode": {"ours-ort": lambda: ours_ort.vae.decode(z), "diffusers": lambda: ref.vae.decode(z).sample,
                           "diffusers-ort": lambda: ref_ort.vae.decode(z).sample},
            "vocoder": {"ours-ort": lambda: ours_ort.vocoder(mel), "diffusers": lambda: ref.vocoder(mel),
                        "diffusers-ort": lambda: ref_ort.vocoder(mel)},
        }
        counts = {"text encoding (prompt + negative)": 9, "UNet step (batch 2)": 9, "VAE decode": 5, "vocoder": 5}
        for label, fns in stages.items():
            n = 2 if args.quick else max(repeats, counts[label])
            rows[label] = {k: summary(v) for k, v in shuffled_rounds(fns, n, rng).items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in rows.values():
        for peer in ("ours", *PEERS):
            if peer in r:
                r[f"{peer}/ours-ort"] = r[peer]["median"] / r["ours-ort"]["median"]
    return {"model": name, "threads": args.threads, "steps": steps, "guidance": 2.5, "repeats": repeats,
            "order_seed": args.seed, "rows": rows, "first_generation": first, "max_abs_diff_vs_diffusers": diffs,
            "diffusers_ort_export_seconds": peer_export, "load_average_at_end": os.getloadavg(),
            "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
            "machine": platform.processor() or platform.machine()}


def print_table(res: dict) -> None:
    print(f"\nmodel {res['model']}, {res['threads']} threads, fp32, DDIM {res['steps']} steps, guidance 2.5; "
          f"medians (runs); ratio = peer / ours-ort")
    head = (f"| {'row':40} | {'ours-ort s':>10} | {'diffusers s':>11} | {'diffusers-ort s':>15} | "
            f"{'vs diffusers':>12} | {'vs diffusers-ort':>16} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for label, r in res["rows"].items():
        def cell(k):
            return f"{r[k]['median']:.3f} ({r[k]['runs']})" if k in r else "-"

        print(f"| {label:40} | {cell('ours-ort'):>10} | {cell('diffusers'):>11} | {cell('diffusers-ort'):>15} | "
              f"{r['diffusers/ours-ort']:11.2f}x | {r['diffusers-ort/ours-ort']:15.2f}x |")
    for k, v in res["first_generation"].items():
        print(f"first generation in a fresh process, {k}: {v['seconds']:.1f} s, peak RSS {v['peak_rss_mib']:.0f} MiB")
    print("waveform max abs diff vs diffusers eager: " + "; ".join(
        f"{s}: " + ", ".join(f"{k} {e:.1e}" for k, e in d.items() if k != "diffusers")
        for s, d in res["max_abs_diff_vs_diffusers"].items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, one counted run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled run order")
    p.add_argument("--lengths", type=float, nargs="+", default=None, help="seconds (default 5.12 20.48)")
    p.add_argument("--skip", type=lambda v: set(v.split(",")), default=set(),
                   help="comma-separated row groups to leave out: first (fresh-process rows), e2e")
    p.add_argument("--work", default=str(HERE / "work"), help="folder for the reference model and our file")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/onnx-<model>.json)")
    p.add_argument("--first-child", choices=["ours-ort", "diffusers", "diffusers-ort"], help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--cache", help="with --skip first: an existing graph cache for ours-ort (default: a new one)")
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.first_child:
        first_child(args.first_child, args.source, args.folder, args.cache, args.seconds, args.steps, args.threads)
        return 0
    res = run(args)
    print_table(res)
    write_results(res, args.out, f"onnx-{res['model']}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
