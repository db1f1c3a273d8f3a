"""Convert an AudioLDM model from any of its published forms into our checkpoint format.

Three kinds of source (:func:`source_kind`):

* ``cvssp``: a diffusers-layout folder or Hub repo id (``cvssp/audioldm-s-full-v2``): this module;
* ``original``: a release ``.ckpt`` of the original AudioLDM code: :mod:`convert.original`;
* ``paddle``: a ppdiffusers folder with ``*/model_state.pdparams``: :mod:`convert.paddle`.

The same code serves the ``audioldm-convert`` CLI (writes a file) and
``AudioLDM.from_pretrained(folder)`` (converts in memory): :func:`convert_any` (and
:func:`convert_source` for folders and repo ids) returns a :class:`Converted` bundle,
:func:`convert_to_file` writes it atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from audioldm_core.checkpoint import (COMPONENTS, FLOAT_DTYPES, check_output_path, expected_shapes,
                                      save_checkpoint)
from audioldm_core.config import AudioLDMConfig
from audioldm_core.errors import CheckpointError, InputError, SourceNotFoundError
from convert.cvssp import COMPONENT_DIRS, read_folder_config, read_json
from convert.remap import remap
from convert.tables import cvssp_table

# Weight file names per component folder, in order of preference.
_STEMS = {"clap": ("model", "pytorch_model"), "vocoder": ("model", "pytorch_model"),
          "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
          "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model")}
VARIANTS = (None, "fp16")
HUB_PATTERNS = ["model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def weight_file_names(component: str, variant: Optional[str] = None) -> list[str]:
    """The file names a cvssp component folder may hold, preferred first (safetensors, then .bin)."""
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; supported: fp16 (or none)")
    st, binary = _STEMS[component]
    mid = f".{variant}" if variant else ""
    return [f"{st}{mid}.safetensors", f"{binary}{mid}.bin"]


def find_weight_file(folder: Path, component: str, variant: Optional[str] = None) -> Path:
    """The weight file of one component in a cvssp folder; raises naming what was looked for."""
    return first_weight_file(Path(folder) / COMPONENT_DIRS[component], weight_file_names(component, variant),
                             f"no weight file for {component}")


def first_weight_file(sub: Path, names: list[str], what: str) -> Path:
    """The first of ``names`` present in the component folder ``sub``; otherwise
    :class:`SourceNotFoundError` saying ``what``, what was looked for and what is there."""
    if not sub.is_dir():
        raise SourceNotFoundError(f"component folder {sub} is missing")
    for n in names:
        if (sub / n).is_file():
            return sub / n
    present = sorted(p.name for p in sub.iterdir())
    raise SourceNotFoundError(f"{what} in {sub}: looked for {', '.join(names)}; "
                              f"found {', '.join(present) or 'nothing'}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` or ``.bin`` file.

    ``.bin`` files are read only with ``torch.load(weights_only=True)``: a pickle that tries to
    build anything but tensors and plain containers is refused.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from audioldm_core.checkpoint import safetensors_header

        safetensors_header(path)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # SafetensorError, OSError, ...: a damaged or truncated file
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if path.suffix == ".bin":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # UnpicklingError (refused or damaged), RuntimeError (bad zip), ...
            raise CheckpointError(f"{path} could not be loaded as a weights-only PyTorch file "
                                  f"(torch.load weights_only=True refuses anything but tensors): "
                                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
            raise CheckpointError(f"{path} does not hold a flat dict of tensors")
        return state
    raise CheckpointError(f"{path}: unsupported weight file type {path.suffix!r}; expected .safetensors or .bin")


def convert_component(folder: Path, component: str, config: AudioLDMConfig,
                      variant: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Read one component's weights from a cvssp folder and return them under our names (strict)."""
    path = find_weight_file(folder, component, variant)
    return remap(read_weights(path), cvssp_table(component), expected_shapes(component, config),
                 f"{component} ({path})")


def read_tokenizer(folder: Path) -> dict[str, Any]:
    """The RoBERTa BPE vocabulary of a cvssp ``tokenizer/`` folder: ``{"vocab", "merges"}``.

    Reads ``vocab.json`` + ``merges.txt``, or ``tokenizer.json`` when those are absent.
    """
    sub = Path(folder) / "tokenizer"
    vocab_path, merges_path, tj = sub / "vocab.json", sub / "merges.txt", sub / "tokenizer.json"
    if vocab_path.is_file() and merges_path.is_file():
        vocab = read_json(vocab_path)
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    elif tj.is_file():
        model = read_json(tj).get("model", {})
        if model.get("type") != "BPE":
            raise CheckpointError(f"{tj}: tokenizer model type {model.get('type')!r} is not BPE")
        vocab = model.get("vocab", {})
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    else:
        raise SourceNotFoundError(f"no tokenizer files in {sub}: need vocab.json + merges.txt, or tokenizer.json")
    if not vocab or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise CheckpointError(f"{sub}: vocabulary must map tokens to integer ids")
    bad = [m for m in merges if len(m.split(" ")) != 2]
    if bad:
        raise CheckpointError(f"{sub}: {len(bad)} malformed merge line(s), e.g. {bad[0]!r}")
    return {"vocab": vocab, "merges": merges}


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_source(source: str, revision: Optional[str] = None,
                   variant: Optional[str] = None) -> tuple[Path, dict[str, Any]]:
    """A local cvssp folder, or a Hub repo id downloaded with huggingface_hub (cached).

    Returns the folder and a JSON-able description (``{"kind": "folder", "path"}`` or
    ``{"kind": "hub", "repo_id", "revision"}``). Honours ``HF_HUB_OFFLINE``: offline and not
    cached raises :class:`SourceNotFoundError` naming the variable and the cache folder.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceNotFoundError(f"{source} is a file, not a cvssp-layout folder (an original AudioLDM .ckpt "
                                      f"is converted by convert_any / audioldm-convert)")
        return path, {"kind": "folder", "path": str(path.resolve())}
    if not _REPO_ID.match(source):
        raise SourceNotFoundError(f"{source!r} is neither an existing folder nor a Hub repo id "
                                  f"(owner/name, e.g. cvssp/audioldm-s-full-v2)")
    return download_repo(source, revision, variant)


def download_repo(repo_id: str, revision: Optional[str] = None, variant: Optional[str] = None,
                  patterns: Optional[list[str]] = None) -> tuple[Path, dict[str, Any]]:
    """Fetch (or find in the local cache) the files of a cvssp repo on the Hugging Face Hub.

    patterns: only these files (default: the configs, tokenizer and weight files a conversion reads).
    """
    import huggingface_hub
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if patterns is None:
        patterns = list(HUB_PATTERNS)
        for comp, sub in COMPONENT_DIRS.items():
            patterns += [f"{sub}/{n}" for n in weight_file_names(comp, None)]
            if variant:
                patterns += [f"{sub}/{n}" for n in weight_file_names(comp, variant)]
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        offline = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise SourceNotFoundError(
            f"cannot get {repo_id}{'@' + revision if revision else ''}: {offline} and it is not in the "
            f"local cache ({constants.HF_HUB_CACHE}). Download it once with network access, or pass a "
            f"local cvssp-layout folder or a converted .safetensors file") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise SourceNotFoundError(f"cannot get {repo_id}: {type(e).__name__}: {e}") from None
    except huggingface_hub.errors.HfHubHTTPError as e:
        raise SourceNotFoundError(f"cannot get {repo_id}: {e}") from None
    folder = Path(folder)
    return folder, {"kind": "hub", "repo_id": repo_id, "revision": revision or "main",
                    "commit": folder.name}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify_hub_blob(path: Path, digest: str) -> None:
    """Check a file from the huggingface_hub cache against the hash the Hub recorded for it.

    The cache stores each large (LFS) file as ``blobs/<sha256>`` with the snapshot entry linking to
    it, so the blob's name is the Hub's SHA-256 of the content; a mismatch means the cached file is
    damaged or was replaced. Small non-LFS files are named by their git hash and are not checked.
    """
    blob = Path(path).resolve().name
    if _SHA256.fullmatch(blob) and blob != digest:
        raise CheckpointError(f"{path}: content SHA-256 {digest[:16]}... does not match the hash the Hub "
                              f"recorded ({blob[:16]}...); the cached file is damaged: delete it and download again")


@dataclass
class Converted:
    """A converted model in memory: config, tokenizer, our state dicts, and where it came from."""

    config: AudioLDMConfig
    tokenizer: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    source: dict[str, Any]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    extra_metadata: dict[str, str] = field(default_factory=dict)  # optional components' configs


def convert_source(source: str, *, revision: Optional[str] = None, variant: Optional[str] = None,
                   hash_files: bool = True, progress: Optional[Callable[[str], None]] = None) -> Converted:
    """Convert a cvssp folder or Hub repo id in memory (nothing is written). A ppdiffusers folder
    (:func:`is_paddle_folder`) is handed to :func:`convert.paddle.convert_paddle_folder`.

    variant: ``"fp16"`` to read the ``*.fp16.*`` weight files.
    hash_files: record each source weight file's SHA-256 in ``source["files"]``.
    progress: called with each component's name as it starts.
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; supported: fp16 (or none)")
    folder, info = resolve_source(str(source), revision, variant)
    if info["kind"] == "folder" and is_paddle_folder(folder):
        from convert.paddle import convert_paddle_folder

        if variant:
            raise InputError(f"{folder} is a ppdiffusers (Paddle) folder; --variant applies only to cvssp folders")
        return convert_paddle_folder(folder, hash_files=hash_files, progress=progress)
    config = read_folder_config(folder, name=info.get("repo_id", folder.name))
    tokenizer = read_tokenizer(folder)
    tensors, stats, files = {}, {}, {}
    for comp in COMPONENTS:
        if progress:
            progress(comp)
        path = find_weight_file(folder, comp, variant)
        if hash_files or info["kind"] == "hub":
            digest = sha256_file(path)
            files[str(path.relative_to(folder))] = digest
            if info["kind"] == "hub":
                verify_hub_blob(path, digest)
        state = convert_component(folder, comp, config, variant)
        tensors[comp] = state
        stats[comp] = {"tensors": len(state), "params": sum(v.numel() for v in state.values()),
                       "bytes": sum(v.numel() * v.element_size() for v in state.values())}
    info = dict(info, variant=variant, files=files)
    return Converted(config=config, tokenizer=tokenizer, tensors=tensors, source=info, stats=stats)


# Weight files only ppdiffusers / PaddleNLP write (their text encoder may also be model.safetensors,
# which is a cvssp name too, so that one does not decide anything).
PADDLE_WEIGHT_NAMES = ("model_state.pdparams", "diffusion_paddle_model.safetensors")
ORIGINAL_SUFFIXES = (".ckpt",)
SOURCE_KINDS = ("cvssp", "original", "paddle")
# Options that apply only to an original .ckpt: keyword -> CLI flag.
_ORIGINAL_OPTIONS = {"tokenizer": "--tokenizer", "model_name": "--model-name", "compat": "--compat",
                     "use_ema": "--no-ema", "clap_audio": "--no-clap-audio"}


def is_paddle_folder(folder: Path) -> bool:
    """Whether ``folder`` is a ppdiffusers AudioLDM folder: some component folder holds a Paddle-only
    weight file and the UNet folder holds no PyTorch weights (with both, the cvssp files are used)."""
    folder = Path(folder)
    paddle = any((folder / sub / n).is_file() for sub in COMPONENT_DIRS.values() for n in PADDLE_WEIGHT_NAMES)
    torch_unet = any((folder / "unet" / n).is_file() for v in VARIANTS for n in weight_file_names("unet", v))
    return paddle and not torch_unet


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
        from convert.original import convert_original

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
    out = check_output_path(out)
    start = time.perf_counter()
    conv = convert_any(source, revision=revision, variant=variant, progress=progress, **options)
    save_checkpoint(out, conv.tensors, conv.config, conv.tokenizer, conv.source, dtype=FLOAT_DTYPES[dtype],
                    extra_metadata=conv.extra_metadata)
    return {"out": str(out), "source": conv.source, "components": conv.stats, "dtype": dtype,
            "bytes": out.stat().st_size, "seconds": time.perf_counter() - start}


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as indented JSON (for ``--json``)."""
    return json.dumps(summary, indent=2, sort_keys=True)
