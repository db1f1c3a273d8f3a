"""``audioldm variation`` and ``audioldm score``: the CLAP audio tower's commands (see
:mod:`audioldm_core.rerank`). Registered by :func:`add_commands` from :mod:`audioldm_core.cli`."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import time
from pathlib import Path

from .errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def add_commands(sub, common) -> None:
    """Add the ``variation`` and ``score`` subcommands to ``sub`` (an argparse subparsers object)."""
    v = sub.add_parser("variation", parents=[common],
                       help="generate variations of audio clips from their CLAP audio embedding",
                       description="Generate from the CLAP audio embedding of one clip, or a weighted blend of "
                                   "several, optionally mixed with a text prompt. Needs a model converted from an "
                                   "original AudioLDM .ckpt (it carries the CLAP audio tower).")
    v.add_argument("inputs", type=Path, nargs="+", help="input audio file(s)")
    v.add_argument("--weights", type=float, nargs="+", default=None, help="one weight >= 0 per input (default equal)")
    v.add_argument("--prompt", default=None, help="a text prompt mixed into the embedding")
    v.add_argument("--text-weight", type=float, default=0.5, help="weight of --prompt in [0, 1] (default 0.5)")
    v.add_argument("--seconds", type=float, default=5.12, help="audio length (default 5.12)")
    v.add_argument("-o", "--output", default="variation.wav", help="output file (default variation.wav)")
    v.add_argument("--compat", choices=("diffusers", "original"), default="diffusers",
                   help="diffusers (default): ours; original: the original AudioLDM's audio-conditioned generation "
                        "(clips normalised and zero-padded to the length as it reads them, DDIM eta 1, its "
                        "10%% swap to the empty prompt, its latent clip)")
    s = sub.add_parser("score", parents=[common], help="CLAP text-audio similarity of audio files (CLAP score)",
                       description="Score audio files against prompts with the CLAP audio tower: a folder written "
                                   "by `generate --prompts` (its manifest.jsonl gives each file's prompt), a "
                                   "folder or single file with --prompt, or a manifest.jsonl.")
    s.add_argument("source", type=Path, help="audio file, folder, or manifest.jsonl")
    s.add_argument("--prompt", default=None, help="one prompt for every file (default: the manifest's)")
    s.add_argument("-o", "--output", default=None, help="write CSV (.csv) or JSONL (.jsonl); default: CSV on stdout")


def _pairs(source: Path, prompt):
    """(audio path, prompt) pairs to score."""
    if not source.exists():
        raise InputError(f"{source} does not exist")
    manifest = source if source.is_file() and source.suffix == ".jsonl" else source / "manifest.jsonl"
    if prompt is None:
        if not manifest.is_file():
            raise InputError(f"no prompt: give --prompt, or a batch folder with manifest.jsonl ({manifest} is missing)")
        pairs = []
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            pairs += [(manifest.parent / o, rec["prompt"]) for o in rec.get("outputs", [])]
        if not pairs:
            raise InputError(f"{manifest} lists no outputs")
        return pairs
    if source.is_file():
        return [(source, prompt)]
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InputError(f"{source} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return [(f, prompt) for f in files]


def cmd_score(args, load) -> int:
    """``audioldm score``: one row per file: path, prompt, score."""
    from .audio import load_audio
    from .checkpoint import atomic_write

    pairs = _pairs(args.source, args.prompt)
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix not in (".csv", ".jsonl"):
        raise InputError(f"--output must end in .csv or .jsonl, got {out}")
    waves = [load_audio(p)[0] for p, _ in pairs]  # bad files fail before the model loads
    pipe, _ = load(args)
    scores = pipe.clap_score(waves, [q for _, q in pairs])
    rows = [{"file": str(p), "prompt": q, "clap_score": round(s, 6)} for (p, q), s in zip(pairs, scores)]
    if out is not None and out.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["file", "prompt", "clap_score"])
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {out}: {len(rows)} file(s), mean CLAP score {sum(scores) / len(scores):.4f}")
    return 0


def cmd_variation(args, load) -> int:
    """``audioldm variation``: one output file from the inputs' CLAP audio embedding."""
    import torch

    from .audio import format_for, load_audio, write_audio
    from .rerank import mix

    out = Path(args.output)
    fmt = format_for(out, args.format)
    if args.weights is not None:
        mix(torch.eye(len(args.inputs)), args.weights)  # the weight checks, before anything loads
    if args.prompt is not None and not 0 <= args.text_weight <= 1:
        raise InputError(f"--text-weight must be in [0, 1], got {args.text_weight}")
    waves = [load_audio(p)[0] for p in args.inputs]
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    pipe, _ = load(args)
    t0 = time.perf_counter()
    res = pipe.variation(waves, weights=args.weights, prompt=args.prompt, text_weight=args.text_weight,
                         audio_length_in_s=args.seconds, num_inference_steps=args.steps,
                         guidance_scale=args.guidance, generator=torch.Generator().manual_seed(seed),
                         sampler=args.sampler, progress=not args.no_progress, compat=args.compat)
    write_audio(out, res.audios[0], pipe.sample_rate, fmt)
    print(f"wrote {out} ({res.audios.shape[1] / pipe.sample_rate:.2f} s); seed {seed}; "
          f"variation took {time.perf_counter() - t0:.1f} s")
    return 0
