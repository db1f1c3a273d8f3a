"""Convert an AudioLDM model from any of its published forms into our checkpoint format: dispatch.

Three kinds of source (:func:`source_kind`), each read by its own module:

* ``cvssp``: a diffusers-layout folder or Hub repo id (``cvssp/audioldm-s-full-v2``): :mod:`convert.cvssp`;
* ``original``: a release ``.ckpt`` of the original AudioLDM code: :mod:`convert.original`;
* ``paddle``: a ppdiffusers folder with ``*/model_state.pdparams``: :mod:`convert.paddle`.

The same code serves the ``audioldm-convert`` CLI (writes a file) and
``AudioLDM.from_pretrained(folder)`` (converts in memory): :func:`convert_any` (and
:func:`convert_source` for folders and repo ids) returns a :class:`~convert.converted.Converted`
bundle, :func:`convert_to_file` writes it atomically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from audioldm_core.checkpoint import FLOAT_DTYPES, save_checkpoint
from audioldm_core.errors import InputError, SourceNotFoundError
from audioldm_core.files import check_output_path
from convert.converted import Converted
from convert.cvssp import VARIANTS, convert_cvssp
from convert.original import convert_original
from convert.paddle import convert_paddle_folder, is_paddle_folder

ORIGINAL_SUFFIXES = (".ckpt",)
SOURCE_KINDS = ("cvssp", "original", "paddle")
# Options that apply only to an original .ckpt: keyword -> CLI flag.
_ORIGINAL_OPTIONS = {"tokenizer": "--tokenizer", "model_name": "--model-name", "compat": "--compat",
                     "use_ema": "--no-ema", "clap_audio": "--no-clap-audio"}


def convert_source(source: str, *, revision: Optional[str] = None, variant: Optional[str] = None,
                   hash_files: bool = True, progress: Optional[Callable[[str], None]] = None) -> Converted:
    """Convert a folder or Hub repo id in memory (nothing is written): a ppdiffusers folder
    (:func:`convert.paddle.is_paddle_folder`) with :func:`convert.paddle.convert_paddle_folder`, anything
    else as a cvssp folder or repo id with :func:`convert.cvssp.convert_cvssp`.

    variant: ``"fp16"`` to read the ``*.fp16.*`` weight files (cvssp only).
    hash_files: record each source weight file's SHA-256 in ``source["files"]``.
    progress: called with each component's name as it starts.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; supported: fp16 (or none)")
    path = Path(str(source)).expanduser()
    if path.is_dir() and is_paddle_folder(path):
        if variant:
            raise InputError(f"{path} is a ppdiffusers (Paddle) folder; --variant applies only to cvssp folders")
        return convert_paddle_folder(path, hash_files=hash_files, progress=progress)
    return convert_cvssp(source, revision=revision, variant=variant, hash_files=hash_files, progress=progress)


def source_kind(source: str) -> str:
    """``"original"`` for a ``.ckpt`` file, ``"paddle"`` for a ppdiffusers folder, else ``"cvssp"``
    (a cvssp-layout folder or a Hub repo id). Any other file raises, naming what is accepted."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        if path.suffix.lower() in ORIGINAL_SUFFIXES:
            return "original"
        raise SourceNotFoundError(f"{source} is a file but not an original AudioLDM checkpoint (.ckpt); accepted "
                                  f"sources: an original .ckpt, a cvssp-layout or ppdiffusers folder, a Hub repo id")
    if path.is_dir() and is_paddle_folder(path):
        return "paddle"
    return "cvssp"


def convert_any(source: str, *, revision: Optional[str] = None, variant: Optional[str] = None,
                tokenizer: Any = None, model_name: Optional[str] = None, compat: Optional[str] = None,
                use_ema: Optional[bool] = None, hash_files: bool = True,
                progress: Optional[Callable[[str], None]] = None, clap_audio: Optional[bool] = None) -> Converted:
    """Convert any supported source in memory (see :func:`source_kind`).

    revision, variant: cvssp sources only (see :func:`convert_source`).
    tokenizer, model_name, compat, use_ema, clap_audio: original ``.ckpt`` only (see
    :func:`convert.original.convert_original`; ``compat`` defaults to ``"original"``).
    An option given for a kind it does not apply to raises :class:`InputError`.
    """
    kind = source_kind(source)
    if kind == "original":
        wrong = [flag for flag, v in (("--revision", revision), ("--variant", variant)) if v is not None]
        if wrong:
            raise InputError(f"{' and '.join(wrong)} apply to Hub repos and cvssp folders, not to an original "
                             f".ckpt ({source})")
        return convert_original(source, model_name=model_name, tokenizer_dir=tokenizer,
                                compat=compat or "original", use_ema=use_ema, hash_files=hash_files,
                                progress=progress, clap_audio=clap_audio is not False)
    given = {"tokenizer": tokenizer, "model_name": model_name, "compat": compat, "use_ema": use_ema,
             "clap_audio": clap_audio}
    wrong = [_ORIGINAL_OPTIONS[k] for k, v in given.items() if v is not None]
    if wrong:
        raise InputError(f"{', '.join(wrong)} apply only to an original .ckpt source; {source} is a "
                         f"{'ppdiffusers folder' if kind == 'paddle' else 'cvssp folder or Hub repo id'} "
                         f"(its config and tokenizer are read from it)")
    if kind == "paddle" and revision is not None:
        raise InputError(f"--revision applies to Hub repos; {source} is a local ppdiffusers folder")
    return convert_source(source, revision=revision, variant=variant, hash_files=hash_files, progress=progress)


def convert_to_file(source: str, out: os.PathLike, *, revision: Optional[str] = None,
                    variant: Optional[str] = None, dtype: str = "float32",
                    progress: Optional[Callable[[str], None]] = None, **options: Any) -> dict[str, Any]:
    """Convert ``source`` (any kind, see :func:`convert_any`; ``options`` are its original-.ckpt
    keywords) and write our checkpoint to ``out`` atomically; return a summary dict."""
    if dtype not in FLOAT_DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(FLOAT_DTYPES)}")
    unknown = sorted(set(options) - set(_ORIGINAL_OPTIONS))
    if unknown:
        raise TypeError(f"convert_to_file() got unexpected keyword argument(s): {', '.join(unknown)}")
    out = check_output_path(out, "checkpoint")
    start = time.perf_counter()
    conv = convert_any(source, revision=revision, variant=variant, progress=progress, **options)
    save_checkpoint(out, conv.tensors, conv.config, conv.tokenizer, conv.source, dtype=FLOAT_DTYPES[dtype],
                    extra_metadata=conv.extra_metadata)
    return {"out": str(out), "source": conv.source, "components": conv.stats, "dtype": dtype,
            "bytes": out.stat().st_size, "seconds": time.perf_counter() - start}


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as indented JSON (for ``--json``)."""
    return json.dumps(summary, indent=2, sort_keys=True)
