"""``audioldm-convert SRC OUT.safetensors``: convert any published form of AudioLDM into our format.

SRC is one of (:func:`convert.core.source_kind`):

* a local cvssp-layout folder (``model_index.json``, ``text_encoder/``, ``unet/``, ...) or a Hugging
  Face repo id such as ``cvssp/audioldm-s-full-v2`` (downloaded and cached by huggingface_hub; with
  ``HF_HUB_OFFLINE=1`` only the local cache is used);
* an original AudioLDM release checkpoint, ``audioldm-*.ckpt`` (needs ``--tokenizer``);
* a ppdiffusers (PaddlePaddle) folder with ``*/model_state.pdparams``.

Errors print one line and exit 2; no partial output file is ever left behind.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from audioldm_core.checkpoint import COMPONENTS, FLOAT_DTYPES
from audioldm_core.errors import AudioLDMError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``audioldm-convert`` (also used by ``python -m convert``)."""
    p = argparse.ArgumentParser(
        prog="audioldm-convert",
        description="Convert an AudioLDM model (cvssp folder or Hugging Face repo id, original .ckpt, or "
                    "ppdiffusers/Paddle folder) into one self-contained audioldm-core .safetensors file.")
    p.add_argument("source", nargs="?",
                   help="cvssp-layout folder, Hub repo id (e.g. cvssp/audioldm-s-full-v2), original release "
                        "checkpoint (audioldm-s-full.ckpt), or ppdiffusers folder (*/model_state.pdparams)")
    p.add_argument("out", nargs="?", help="output file, e.g. audioldm-s-full-v2.safetensors (its folder must exist)")
    p.add_argument("--verify", metavar="FILE", default=None,
                   help="instead of converting, re-check a converted file (metadata, tensor table, "
                        "per-component checksums) and print OK or what is wrong")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit); default main")
    p.add_argument("--variant", choices=["fp16"], default=None,
                   help="read the *.fp16.* weight files instead of the fp32 ones")
    p.add_argument("--dtype", choices=list(FLOAT_DTYPES), default="float32",
                   help="floating dtype of the tensors written (default float32)")
    orig = p.add_argument_group("original .ckpt sources")
    orig.add_argument("--tokenizer", metavar="DIR|REPO", default=None,
                      help="required for a .ckpt (the release files carry no tokenizer): a folder with "
                           "roberta-base's vocab.json + merges.txt, a cvssp folder, or a Hub repo id whose "
                           "tokenizer/ is fetched (e.g. cvssp/audioldm-s-full-v2)")
    orig.add_argument("--model-name", default=None, metavar="NAME",
                      help="s-full, s-full-v2, m-full, l-full, s-text-ft or m-text-ft; default: from the file "
                           "name, else from the UNet width (decides the original's attention head size)")
    orig.add_argument("--compat", choices=["original", "diffusers"], default=None,
                      help="original (default): reproduce the original code (channels/32 heads, /64 for "
                           "l-full; CLAP LayerNorm eps 1e-5); diffusers: the config the cvssp repos have "
                           "(8 heads, eps 1e-12)")
    orig.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, default=None,
                      help="take the trained UNet weights instead of the EMA copy (model_ema.*, the default "
                           "when present, as the original samples and the cvssp repos were converted)")
    orig.add_argument("--no-clap-audio", dest="clap_audio", action="store_const", const=False, default=None,
                      help="drop the CLAP audio tower (kept by default as the optional component clap_audio: "
                           "it drives variations, --candidates and score)")
    p.add_argument("--clap", action="store_true",
                   help="write a standalone CLAP audio file instead: SOURCE is a transformers ClapModel folder or "
                        "Hub id (laion/clap-htsat-unfused) or an original .ckpt; attach it with --clap FILE / "
                        "from_pretrained(clap=FILE) to score and re-rank (it cannot drive variations)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _print_summary(summary: dict) -> None:
    rows = [("component", "tensors", "params", "MiB (source dtype)")]
    for comp, st in summary["components"].items():
        rows.append((comp, str(st["tensors"]), f"{st['params'] / 1e6:.1f} M", f"{st['bytes'] / 2**20:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    total = sum(st["params"] for st in summary["components"].values())
    print(f"wrote {summary['out']}: {total / 1e6:.1f} M params, {summary['bytes'] / 2**20:.1f} MiB "
          f"({summary['dtype']}) in {summary['seconds']:.1f} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the converter CLI; returns the process exit code (0 ok, 2 error)."""
    from convert.core import convert_to_file, summary_json

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verify is not None:
        if args.source or args.out:
            parser.error("--verify FILE takes no SOURCE or OUT")
        from audioldm_core.checkpoint import verify

        problems = verify(args.verify)
        for p in problems:
            print(f"{args.verify}: {p}")
        if not problems:
            print(f"{args.verify}: OK")
        return 1 if problems else 0
    if not args.source or not args.out:
        parser.error("give SOURCE and OUT (or --verify FILE)")
    if args.clap:
        from convert.clap_source import convert_clap_source

        try:
            out, cfg = convert_clap_source(args.source, args.out, revision=args.revision)
        except AudioLDMError as e:
            print(f"audioldm-convert: error: {e}", file=sys.stderr)
            return 2
        if not args.quiet:
            print(f"wrote {out}: CLAP audio tower, HTS-AT embed {cfg.embed_dim}, depths {list(cfg.depths)}, "
                  f"projection {cfg.projection_dim}")
        return 0
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(COMPONENTS), desc="converting", unit="component", file=sys.stderr)

    def progress(comp: str) -> None:
        if bar is not None:
            bar.set_postfix_str(comp)
            if comp != next(iter(COMPONENTS)):
                bar.update(1)

    try:
        summary = convert_to_file(args.source, args.out, revision=args.revision, variant=args.variant,
                                  dtype=args.dtype, progress=progress, tokenizer=args.tokenizer,
                                  model_name=args.model_name, compat=args.compat, use_ema=args.use_ema,
                                  clap_audio=args.clap_audio)
    except AudioLDMError as e:
        if bar is not None:
            bar.close()
        print(f"audioldm-convert: error: {e}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.update(1)
        bar.close()
    if args.json:
        print(summary_json(summary))
    elif not args.quiet:
        _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
