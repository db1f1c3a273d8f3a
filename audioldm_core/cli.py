"""The ``audioldm`` command line: ``generate`` (one prompt or a resumable batch), the edits
``transfer``, ``inpaint`` and ``superres``, ``samplers``, ``plot`` (a spectrogram PNG of a file),
``serve`` (the local web app), and the CLAP audio commands ``variation`` and ``score``
(:mod:`audioldm_core.cli_clap`).

Errors print one line (``audioldm: error: ...``) and exit with status 2; nothing partial is written.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import AudioLDMError, InputError

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


def _gpus(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (a fraction shares a GPU), got {text}")
    return v


def _window(text: str) -> Any:
    """--window: 'auto', 'none' or a positive number of seconds."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or seconds (e.g. 10.24), got {text!r}") from None


def _long_args(parser: argparse.ArgumentParser, default_window: str) -> None:
    parser.add_argument("--window", type=_window, default=default_window, metavar="SECONDS|auto|none",
                        help="UNet window for long audio: 'auto' windows of 10.24 s beyond 30.72 s, 'none' the plain "
                             f"full-length path, or seconds, a multiple of 0.04 (default {default_window})")
    parser.add_argument("--overlap", type=_positive_float, default=1.28,
                        help="seconds shared by neighbouring windows, a multiple of 0.04 (default 1.28)")


def _sampler(text: str) -> str:
    from .samplers import SAMPLERS

    if text not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"unknown sampler {text!r}; choose one of {', '.join(SAMPLERS)}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``audioldm`` argument parser."""
    from .compat import COMPAT_MODES
    from .loading import DEFAULT_MODEL

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
                        help="torch.compile the UNet (a one-time compilation cost per new length; see "
                             "benchmarks/RESULTS.md for what it gains on a CPU)")
    common.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                        help="execution backend: torch (default), onnxruntime or openvino (float32 CPU; graphs "
                             "exported once and cached, see README; needs pip install 'audioldm-core[onnx]' "
                             "or 'audioldm-core[openvino]')")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--clap", default=None,
                        help="CLAP audio file (audioldm-convert laion/clap-htsat-unfused) for --candidates and score")
    common.add_argument("--spectrogram", action="store_true",
                        help="also write OUT.png beside each output: its log-mel spectrogram (edits: input and "
                             "output side by side, edited region marked); needs the [ui] extra")
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
                        "\"n\": ..., \"compat\": ..., \"candidates\": ...}; writes one file per prompt and manifest.jsonl, skipping "
                        "existing outputs")
    g.add_argument("--seconds", type=_positive_float, default=5.12, help="audio length (default 5.12)")
    g.add_argument("-n", "--num-waveforms", type=_positive_int, default=1, dest="n",
                   help="waveforms per prompt (files are numbered)")
    g.add_argument("--compat", choices=COMPAT_MODES, default="diffusers",
                   help="sampling behaviour: diffusers (default) or original (the original AudioLDM code: DDIM "
                        "eta 1.0, 10%% of prompts swapped for the empty prompt, latent clipping; see README "
                        "'Differences')")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="with --prompts: run the batch on Ray actors; no ADDRESS starts a local Ray runtime, an "
                        "ADDRESS (host:port) joins that cluster; the model path and the output folder must be "
                        "reachable under the same path on every node (needs the extra [ray])")
    g.add_argument("--workers", type=_positive_int, default=None, help="with --ray: Ray actors (default 2)")
    g.add_argument("--threads-per-worker", type=_positive_int, default=None,
                   help="with --ray: CPUs reserved and torch threads per actor (default 1)")
    g.add_argument("--gpus-per-worker", type=_gpus, default=None,
                   help="with --ray: GPUs per actor, a fraction shares one (default 0; > 0 implies --device cuda)")
    g.add_argument("--candidates", type=_positive_int, default=1,
                   help="generate this many per waveform and keep the one CLAP ranks best (needs a CLAP audio tower)")
    g.add_argument("--allow-long", action="store_true",
                   help="allow --seconds above 120 with --window none (memory grows with length; the error gives "
                        "an estimate); windowed runs need no permission")
    g.add_argument("--loop", action="store_true",
                   help="make the audio loop seamlessly (windows wrap around the end; at least one window long)")
    _long_args(g, "auto")
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
    e = sub.add_parser("extend", parents=[common], help="continue an audio file with generated audio")
    e.add_argument("input", type=Path, help="input audio file")
    e.add_argument("prompt", help="the text prompt for the continuation")
    e.add_argument("--seconds", type=_positive_float, required=True, help="seconds to add after the input")
    e.add_argument("-o", "--output", default="extend.wav", help="output file (default extend.wav)")
    _long_args(e, "10.24")
    for sp in (t, i, r):
        _long_args(sp, "auto")
    for edit_parser in (t, i, r):
        edit_parser.add_argument("--compat", choices=COMPAT_MODES, default="diffusers",
                                 help="diffusers (default): ours; original: the original AudioLDM code's edit "
                                      "algorithm (DDIM only; see README 'Editing')")
    sub.add_parser("samplers", help="list the samplers")
    pl = sub.add_parser("plot", help="draw the log-mel spectrogram of an audio file as a PNG (needs the [ui] extra)")
    pl.add_argument("input", type=Path, help="input audio file (any rate; drawn at 16 kHz, mono)")
    pl.add_argument("-o", "--output", type=Path, default=None, help="output PNG (default: INPUT with .png)")
    s = sub.add_parser("serve", help="the local web app for every mode (needs the [ui] extra)",
                       description="Serve a web page for text-to-audio and the edits. One model is loaded once; "
                                   "requests run one at a time by default. Binds to 127.0.0.1: only this machine "
                                   "can open it. A non-local --host (e.g. 0.0.0.0) lets anyone who can reach the "
                                   "port use the model, upload files and download results; there is no login.")
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"as for generate (default {DEFAULT_MODEL})")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--concurrency", type=_positive_int, default=1,
                   help="requests run at the same time; the rest wait in a queue (default 1)")
    s.add_argument("--device", default="cpu", help="torch device (default cpu)")
    s.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    s.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    s.add_argument("--clap", default=None,
                   help="a CLAP audio file to attach (candidates and scores; variations need the model's own tower)")
    s.add_argument("--share", action="store_true", help=argparse.SUPPRESS)
    from .cli_clap import add_commands

    add_commands(sub, common)
    return p




def _load(args) -> Any:
    from .batch import ModelSpec, load_pipeline

    return load_pipeline(ModelSpec(args.model, device=args.device, dtype=args.dtype, compile=args.compile,
                                   clap=args.clap, backend=args.backend), args.threads)


def cmd_generate(args) -> int:
    """``audioldm generate``: one prompt to one (or n numbered) files, or a batch with --prompts."""
    from .audio import format_for, write_audio
    from .batch import generate_audio, numbered
    from .files import check_output_path

    if (args.prompt is None) == (args.prompts is None):
        raise InputError("give either a PROMPT or --prompts FILE")
    if args.prompts is not None:
        return _batch(args)
    if args.ray is not None:
        raise InputError("--ray runs a batch: give --prompts FILE")
    out = Path(args.output or "out.wav")
    for path in numbered(out, args.n):  # before any work: a bad output path fails in a second
        check_output_path(path, "audio")
    fmt = format_for(out, args.format)
    _check_picture(args)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    from .longform import check_args

    check_args(args.seconds, args.window, args.overlap, args.loop)  # before the model loads
    pipe, load_s = _load(args)
    t0 = time.perf_counter()
    audios = generate_audio(pipe, prompt=args.prompt, seed=seed, seconds=args.seconds, steps=args.steps,
                            guidance=args.guidance, negative=args.negative, sampler=args.sampler, n=args.n,
                            progress=not args.no_progress, allow_long=args.allow_long, compat=args.compat,
                            candidates=args.candidates, window_s=args.window, overlap_s=args.overlap, loop=args.loop)
    gen_s = time.perf_counter() - t0
    for path, audio in zip(numbered(out, args.n), audios):
        write_audio(path, audio, pipe.sample_rate, fmt)
        print(f"wrote {path} ({len(audio) / pipe.sample_rate:.2f} s of audio, {pipe.sample_rate} Hz)")
        if args.spectrogram:
            _write_picture(path, audio, prompt=args.prompt, seed=seed)
    print(f"seed {seed}; model loaded in {load_s:.1f} s, generated in {gen_s:.1f} s")
    return 0


def _batch(args) -> int:
    """``generate --prompts``: the resumable batch of :mod:`audioldm_core.batch`, local or on Ray."""
    from .batch import run

    if (args.workers, args.threads_per_worker, args.gpus_per_worker) != (None, None, None) and args.ray is None:
        raise InputError("--workers, --threads-per-worker and --gpus-per-worker need --ray")
    if args.ray is not None and args.threads is not None:
        raise InputError("with --ray, set each worker's threads with --threads-per-worker (--threads is for one process)")
    result = run(args.prompts, args.output or "out", model=args.model, seed=args.seed, seconds=args.seconds,
                 steps=args.steps, guidance=args.guidance, negative=args.negative, sampler=args.sampler, n=args.n,
                 compat=args.compat, candidates=args.candidates, clap=args.clap, format=args.format or "wav",
                 device=args.device, dtype=args.dtype,
                 compile=args.compile, allow_long=args.allow_long, threads=args.threads,
                 engine="local" if args.ray is None else "ray", address=args.ray or None,
                 workers=args.workers or 2, threads_per_worker=args.threads_per_worker or 1,
                 gpus_per_worker=args.gpus_per_worker or 0.0, progress=not args.no_progress,
                 spectrogram=args.spectrogram, backend=args.backend, window_s=args.window, overlap_s=args.overlap,
                 loop=args.loop)
    return 2 if result.failed else 0


def cmd_edit(args) -> int:
    """``audioldm transfer|inpaint|superres|extend``: edit an input file, write one output file."""
    import torch

    from .audio import format_for, load_audio, write_audio
    from .files import check_output_path

    out = check_output_path(args.output, "audio")  # before any work: a bad output path fails in a second
    fmt = format_for(out, args.format)
    _check_picture(args)
    waveform, info = load_audio(args.input)  # bad input fails before the model loads
    if args.command == "inpaint":
        from .edit import time_mask

        time_mask(1, args.start, args.end, info.frames / info.sample_rate, 1)  # the range, against the file's own length
    if info.downmixed:
        print(f"note: {args.input} has {info.channels} channels; downmixed to mono", file=sys.stderr)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    from .longform import check_args

    check_args(len(waveform) / 16000 + (args.seconds if args.command == "extend" else 0), args.window, args.overlap)
    pipe, _ = _load(args)
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, negative_prompt=args.negative,
              generator=torch.Generator().manual_seed(seed), sampler=args.sampler, progress=not args.no_progress,
              window_s=args.window, overlap_s=args.overlap)
    if args.command != "extend":
        kw["compat"] = args.compat
    t0 = time.perf_counter()
    if args.command == "transfer":
        res = pipe.transfer(waveform, args.prompt, args.strength, **kw)
    elif args.command == "extend":
        res = pipe.extend(waveform, args.prompt, args.seconds, **kw)
    elif args.command == "inpaint":
        res = pipe.inpaint(args.input, args.prompt, args.start, args.end, **kw)
    else:
        res = pipe.super_resolve(waveform, args.prompt, args.cutoff, **kw)
    write_audio(out, res.audios[0], pipe.sample_rate, fmt)
    print(f"wrote {out} ({res.audios.shape[1] / pipe.sample_rate:.2f} s); seed {seed}; "
          f"{args.command} took {time.perf_counter() - t0:.1f} s")
    if args.spectrogram:
        from .plot import write_comparison

        region = (args.start, args.end) if args.command == "inpaint" else None
        cutoff = None
        if args.command == "superres":
            from .edit import detect_cutoff

            cutoff = args.cutoff if args.cutoff is not None else detect_cutoff(waveform)
        png = write_comparison(out.with_suffix(".png"), waveform, res.audios[0], prompt=args.prompt, seed=seed,
                               mode=args.command, region_s=region, cutoff_hz=cutoff)
        print(f"wrote {png}")
    return 0


def _check_picture(args) -> None:
    """With --spectrogram, fail before any model work if matplotlib (the [ui] extra) is missing."""
    if args.spectrogram:
        from .plot import _figure_class

        _figure_class()


def _write_picture(path: Path, audio, *, prompt: str, seed: int) -> None:
    from .plot import write_spectrogram

    png = write_spectrogram(path.with_suffix(".png"), audio, prompt=prompt, seed=seed)
    print(f"wrote {png}")


def cmd_plot(args) -> int:
    """``audioldm plot``: the log-mel spectrogram of an audio file as a PNG."""
    from .audio import load_audio
    from .plot import _figure_class, write_spectrogram

    from .files import check_output_path

    out = check_output_path(args.output or args.input.with_suffix(".png"), "picture")
    _figure_class()
    waveform, info = load_audio(args.input)
    write_spectrogram(out, waveform, title=f"{args.input.name} ({info.duration:.2f} s, {info.sample_rate} Hz)")
    print(f"wrote {out}")
    return 0


def cmd_serve(args) -> int:
    """``audioldm serve``: the web app (see :mod:`audioldm_core.webapp`)."""
    if args.share:
        raise InputError("--share is not supported: public share links go through a third-party relay on the "
                         "internet; use --host to bind a local network address instead")
    from .webapp import serve

    return serve(model=args.model, host=args.host, port=args.port, concurrency=args.concurrency,
                 device=args.device, dtype=args.dtype, threads=args.threads, clap=args.clap)


def cmd_samplers(args) -> int:
    """``audioldm samplers``: print the sampler registry."""
    from .samplers import SAMPLERS, describe

    width = max(len(n) for n in SAMPLERS)
    for name in SAMPLERS:
        print(f"{name.ljust(width)}  {describe(name)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``audioldm`` command; returns the exit status."""
    from .cli_clap import cmd_score, cmd_variation

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return {"generate": cmd_generate, "samplers": cmd_samplers, "transfer": cmd_edit, "inpaint": cmd_edit,
                "superres": cmd_edit, "extend": cmd_edit, "plot": cmd_plot, "serve": cmd_serve,
                "variation": lambda a: cmd_variation(a, _load), "score": lambda a: cmd_score(a, _load)}[args.command](args)
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
