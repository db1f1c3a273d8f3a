"""The ``audioldm`` command line: ``generate`` (one prompt or a resumable batch), the edits
``transfer``, ``inpaint`` and ``superres``, and ``samplers``.

Errors print one line (``audioldm: error: ...``) and exit with status 2; nothing partial is written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import AudioLDMError, InputError, SourceNotFoundError

DTYPES = ("float32", "float16", "bfloat16")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {text}")
    return v


def _sampler(text: str) -> str:
    from .samplers import SAMPLERS

    if text not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"unknown sampler {text!r}; choose one of {', '.join(SAMPLERS)}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``audioldm`` argument parser."""
    from .pipeline import COMPAT_MODES, DEFAULT_MODEL

    p = _Parser(prog="audioldm", description="AudioLDM text-to-audio (audioldm-core).")
    common = _Parser(add_help=False)
    common.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"converted .safetensors file, cvssp folder, Hub repo id, or 'tiny' (default {DEFAULT_MODEL})")
    common.add_argument("--steps", type=_positive_int, default=10, help="denoising steps (default 10)")
    common.add_argument("--guidance", type=float, default=2.5, help="guidance scale; > 1 enables it (default 2.5)")
    common.add_argument("--seed", type=_seed, default=None, help="random seed (default: random, printed)")
    common.add_argument("--sampler", type=_sampler, default="ddim", help="sampler name (see `audioldm samplers`)")
    common.add_argument("--negative", default=None, help="negative prompt")
    common.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps (default cpu)")
    common.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    common.add_argument("--format", choices=("wav", "flac"), default=None,
                        help="audio format (default: from the file extension, else wav)")
    common.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for torch (default: torch's default, all physical cores)")
    common.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet (one-time cost of up to two minutes on CPU, and no reliable "
                             "per-step gain on the 2-core CPU we measured; meant for GPUs; see README 'Speed')")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    g = sub.add_parser("generate", parents=[common], help="generate audio from a prompt, or from a file of prompts",
                       description="Generate 16 kHz audio from text. The model 'tiny' has random weights "
                                   "(its output is noise): it runs offline and shows the code path.")
    g.add_argument("prompt", nargs="?", help="the text prompt (or use --prompts FILE)")
    g.add_argument("-o", "--output", default=None,
                   help="output file (default out.wav); with --prompts, an output folder (default out/)")
    g.add_argument("--prompts", type=Path, default=None,
                   help="file with one prompt per line, or JSONL objects {\"prompt\": ..., \"seed\": ..., "
                        "\"seconds\": ..., \"steps\": ..., \"guidance\": ..., \"negative\": ..., \"sampler\": ..., "
                        "\"n\": ..., \"compat\": ...}; writes one file per prompt and manifest.jsonl, skipping "
                        "existing outputs")
    g.add_argument("--seconds", type=_positive_float, default=5.12, help="audio length (default 5.12)")
    g.add_argument("-n", "--num-waveforms", type=_positive_int, default=1, dest="n",
                   help="waveforms per prompt (files are numbered)")
    g.add_argument("--compat", choices=COMPAT_MODES, default="diffusers",
                   help="sampling behaviour: diffusers (default) or original (the original AudioLDM code: DDIM "
                        "eta 1.0, 10%% of prompts swapped for the empty prompt, latent clipping; see README "
                        "'Differences')")
    g.add_argument("--allow-long", action="store_true",
                   help="allow --seconds above 120 (memory grows with length; the error gives an estimate)")
    t = sub.add_parser("transfer", parents=[common], help="text-guided style transfer of an audio file")
    t.add_argument("input", type=Path, help="input audio file (wav, flac, ogg; any rate; mono or stereo)")
    t.add_argument("prompt", help="the text prompt")
    t.add_argument("--strength", type=float, default=0.5, help="0 keeps the input, 1 ignores it (default 0.5)")
    t.add_argument("-o", "--output", default="transfer.wav", help="output file (default transfer.wav)")
    i = sub.add_parser("inpaint", parents=[common], help="regenerate a time range of an audio file")
    i.add_argument("input", type=Path, help="input audio file")
    i.add_argument("prompt", help="the text prompt for the regenerated range")
    i.add_argument("--start", type=float, required=True, help="start of the range, seconds")
    i.add_argument("--end", type=float, required=True, help="end of the range, seconds")
    i.add_argument("-o", "--output", default="inpaint.wav", help="output file (default inpaint.wav)")
    r = sub.add_parser("superres", parents=[common], help="regenerate the high frequencies of band-limited audio")
    r.add_argument("input", type=Path, help="input audio file")
    r.add_argument("--prompt", default="", help="optional text prompt (default empty)")
    r.add_argument("--cutoff", type=float, default=None,
                   help="keep mel bands below this frequency in Hz (default: detected from the input)")
    r.add_argument("-o", "--output", default="superres.wav", help="output file (default superres.wav)")
    sub.add_parser("samplers", help="list the samplers")
    return p


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:limit].rstrip("-") or "audio"


def _numbered(path: Path, n: int) -> list[Path]:
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(n)]


def _check_writable_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable")


def _load(args) -> Any:
    import torch

    from .pipeline import AudioLDM

    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # an unknown or absent device: one clear error before any loading
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as e:
        raise InputError(f"--device {args.device!r} cannot be used here: {str(e).splitlines()[0]}") from None
    if args.model == "tiny":
        print("note: model 'tiny' has seeded random weights: the audio is noise, not sound "
              "(use --model with a converted file, a cvssp folder or a Hub repo id for real audio)",
              file=sys.stderr)
    t0 = time.perf_counter()
    try:
        pipe = AudioLDM.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype),
                                        compile=args.compile)
    except SourceNotFoundError as e:
        raise SourceNotFoundError(f"{e}; for an offline demo use --model tiny (random weights)") from None
    return pipe, time.perf_counter() - t0


def _generate_one(pipe, *, prompt: str, seed: int, seconds: float, steps: int, guidance: float,
                  negative: Optional[str], sampler: str, n: int, progress: bool, allow_long: bool = False,
                  compat: str = "diffusers"):
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = pipe(prompt, audio_length_in_s=seconds, num_inference_steps=steps, guidance_scale=guidance,
               negative_prompt=negative, num_waveforms_per_prompt=n, generator=gen, sampler=sampler,
               progress=progress, allow_long=allow_long, compat=compat)
    return out.audios


def cmd_generate(args) -> int:
    """``audioldm generate``: one prompt to one (or n numbered) files, or a batch with --prompts."""
    from .audio import format_for, write_audio

    if (args.prompt is None) == (args.prompts is None):
        raise InputError("give either a PROMPT or --prompts FILE")
    if args.prompts is not None:
        return _batch(args)
    out = Path(args.output or "out.wav")
    fmt = format_for(out, args.format)
    _check_writable_folder(out.parent if str(out.parent) else Path("."))
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    pipe, load_s = _load(args)
    t0 = time.perf_counter()
    audios = _generate_one(pipe, prompt=args.prompt, seed=seed, seconds=args.seconds, steps=args.steps,
                           guidance=args.guidance, negative=args.negative, sampler=args.sampler, n=args.n,
                           progress=not args.no_progress, allow_long=args.allow_long, compat=args.compat)
    gen_s = time.perf_counter() - t0
    for path, audio in zip(_numbered(out, args.n), audios):
        write_audio(path, audio, pipe.sample_rate, fmt)
        print(f"wrote {path} ({len(audio) / pipe.sample_rate:.2f} s of audio, {pipe.sample_rate} Hz)")
    print(f"seed {seed}; model loaded in {load_s:.1f} s, generated in {gen_s:.1f} s")
    return 0


_ITEM_KEYS = {"prompt", "seed", "seconds", "steps", "guidance", "negative", "sampler", "n", "compat", "output"}


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Parse a prompts file: plain lines (one prompt each; blank lines skipped) or JSONL objects."""
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON: {e}") from None
            unknown = set(item) - _ITEM_KEYS
            if unknown:
                raise InputError(f"{path}:{lineno}: unknown keys {sorted(unknown)}; allowed {sorted(_ITEM_KEYS)}")
            if not isinstance(item.get("prompt"), str):
                raise InputError(f"{path}:{lineno}: \"prompt\" must be a string")
        else:
            item = {"prompt": line.strip()}
        item["_line"] = lineno
        items.append(item)
    if not items:
        raise InputError(f"prompts file {path} has no prompts")
    return items


def _batch(args) -> int:
    from .audio import format_for, write_audio
    from .checkpoint import remove_stale_temp_files  # outputs are written atomically; manifest lines appended
    from .pipeline import COMPAT_MODES

    items = read_prompt_file(args.prompts)
    folder = Path(args.output or "out")
    if not folder.exists() and folder.parent.is_dir():
        folder.mkdir()
    _check_writable_folder(folder)
    fmt = format_for(f"x.{args.format or 'wav'}")
    base_seed = args.seed if args.seed is not None else random.randrange(2**31)
    manifest = folder / "manifest.jsonl"
    recorded = set()
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                recorded.update(json.loads(line).get("outputs", []))
            except json.JSONDecodeError:
                continue  # a line cut by a crash is ignored and its item redone or re-recorded
    pipe = None
    done = skipped = 0
    for i, item in enumerate(items):
        settings = {
            "prompt": item["prompt"],
            "seed": int(item.get("seed", base_seed + i)),
            "seconds": float(item.get("seconds", args.seconds)),
            "steps": int(item.get("steps", args.steps)),
            "guidance": float(item.get("guidance", args.guidance)),
            "negative": item.get("negative", args.negative),
            "sampler": item.get("sampler", args.sampler),
            "n": int(item.get("n", args.n)),
            "compat": item.get("compat", args.compat),
        }
        if settings["seconds"] <= 0 or settings["steps"] < 1 or settings["n"] < 1:
            raise InputError(f"{args.prompts}:{item['_line']}: seconds, steps and n must be positive")
        if settings["compat"] not in COMPAT_MODES:
            raise InputError(f"{args.prompts}:{item['_line']}: \"compat\" must be one of {', '.join(COMPAT_MODES)}, "
                             f"got {settings['compat']!r}")
        name = item.get("output") or f"{i:04d}-{_slug(settings['prompt'])}.{fmt}"
        paths = _numbered(folder / name, settings["n"])
        rel = [p.name for p in paths]
        if all(p.exists() for p in paths):
            skipped += 1
            if not set(rel) <= recorded:  # finished before a crash cut the manifest line
                _append_line(manifest, dict(settings, outputs=rel, model=args.model, recovered=True))
            continue
        for p in paths:  # a run killed while writing this item left its temp files: not ours to keep
            remove_stale_temp_files(p)
        if pipe is None:
            pipe, _ = _load(args)
            model_hash = pipe.model_hash()
        t0 = time.perf_counter()
        audios = _generate_one(pipe, **settings, progress=not args.no_progress, allow_long=args.allow_long)
        for p, a in zip(paths, audios):
            write_audio(p, a, pipe.sample_rate, fmt)
        seconds = time.perf_counter() - t0
        _append_line(manifest, dict(settings, outputs=rel, model=args.model, model_hash=model_hash,
                                    sample_rate=pipe.sample_rate, dtype=args.dtype, device=args.device,
                                    generation_seconds=round(seconds, 3)))
        done += 1
        print(f"[{i + 1}/{len(items)}] wrote {', '.join(str(p) for p in paths)} in {seconds:.1f} s")
    print(f"batch: {done} generated, {skipped} already present; manifest {manifest}")
    return 0


def _append_line(path: Path, record: dict) -> None:
    """Append one whole JSON line and fsync, so a crash never leaves a half line behind a full one. A
    line a crash cut short (no newline at the end of the file) is ended first, so it cannot swallow
    this record; readers skip it."""
    data = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_edit(args) -> int:
    """``audioldm transfer|inpaint|superres``: edit an input file, write one output file."""
    import torch

    from .audio import format_for, load_audio, write_audio

    out = Path(args.output)
    fmt = format_for(out, args.format)
    _check_writable_folder(out.parent if str(out.parent) else Path("."))
    waveform, info = load_audio(args.input)  # bad input fails before the model loads
    if info.downmixed:
        print(f"note: {args.input} has {info.channels} channels; downmixed to mono", file=sys.stderr)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    pipe, _ = _load(args)
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, negative_prompt=args.negative,
              generator=torch.Generator().manual_seed(seed), sampler=args.sampler, progress=not args.no_progress)
    t0 = time.perf_counter()
    if args.command == "transfer":
        res = pipe.transfer(waveform, args.prompt, args.strength, **kw)
    elif args.command == "inpaint":
        res = pipe.inpaint(waveform, args.prompt, args.start, args.end, **kw)
    else:
        res = pipe.super_resolve(waveform, args.prompt, args.cutoff, **kw)
    write_audio(out, res.audios[0], pipe.sample_rate, fmt)
    print(f"wrote {out} ({res.audios.shape[1] / pipe.sample_rate:.2f} s); seed {seed}; "
          f"{args.command} took {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_samplers(args) -> int:
    """``audioldm samplers``: print the sampler registry."""
    from .samplers import SAMPLERS, describe

    width = max(len(n) for n in SAMPLERS)
    for name in SAMPLERS:
        print(f"{name.ljust(width)}  {describe(name)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``audioldm`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"generate": cmd_generate, "samplers": cmd_samplers, "transfer": cmd_edit, "inpaint": cmd_edit,
                "superres": cmd_edit}[args.command](args)
    except AudioLDMError as e:
        print(f"audioldm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or full disk while writing: the temp file is already removed
        print(f"audioldm: error: {e.strerror or e} ({e.filename or 'output'})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audioldm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
