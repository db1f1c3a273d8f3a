"""Convert a PaddlePaddle (ppdiffusers / PaddleNLP) copy of AudioLDM into our format, in memory.

Layout: a ppdiffusers pipeline folder, like a cvssp folder (``model_index.json``, ``scheduler/``,
``tokenizer/``, ``text_encoder/``, ``unet/``, ``vae/``, ``vocoder/``, each with its
``config.json``), but each component's weights are ``model_state.pdparams`` (or, from newer
ppdiffusers, ``diffusion_paddle_model.safetensors`` / ``model.safetensors``). ppdiffusers and
PaddleNLP name parameters as diffusers and transformers do, and their config files use the same
fields, so after reading the tensors the cvssp path applies unchanged, with one difference:
Paddle's ``nn.Linear`` stores its weight as (in, out), the transpose of torch's.

``.pdparams`` is what ``paddle.save(state_dict)`` writes: a pickle (protocol 2-4) of a dict of numpy
arrays plus ``StructuredToParameterName@@`` (structured name -> internal parameter name). With
protocol 2 or 3 an array over 2**30 - 1 bytes is flattened and split into ``<name>@@.0``,
``<name>@@.1``, ... listed under ``UnpackBigParamInfor@@`` with its original shape
(paddle/framework/io_utils.py ``_unpack_saved_dict``). bfloat16 arrays are stored as uint16 (numpy
has no bfloat16). We read it with an unpickler that admits only numpy array reconstruction.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from audioldm_core.checkpoint import COMPONENTS, expected_shapes, safetensors_header
from audioldm_core.errors import CheckpointError, SourceNotFoundError, name_list
from convert.converted import Converted, sha256_file
from convert.cvssp import (COMPONENT_DIRS, VARIANTS, first_weight_file, read_folder_config, read_json, read_tokenizer,
                           weight_file_names)
from convert.remap import remap
from convert.tables import cvssp_table

NAME_TABLE_KEY = "StructuredToParameterName@@"
BIG_PARAM_KEY = "UnpackBigParamInfor@@"  # sic: Paddle's spelling
# Weight files only ppdiffusers / PaddleNLP write (their text encoder may also be model.safetensors,
# which is a cvssp name too, so that one does not decide anything).
PADDLE_WEIGHT_NAMES = ("model_state.pdparams", "diffusion_paddle_model.safetensors")
# Per component, in order of preference.
WEIGHT_FILES = {"clap": ("model_state.pdparams", "model.safetensors"),
                "vocoder": ("model_state.pdparams", "model.safetensors"),
                "unet": ("model_state.pdparams", "diffusion_paddle_model.safetensors"),
                "vae": ("model_state.pdparams", "diffusion_paddle_model.safetensors")}
# 2-D weights that are not nn.Linear (embedding tables have the same layout in both frameworks).
_NOT_LINEAR = re.compile(r".*embeddings\.weight")

# The only globals a .pdparams pickle needs: numpy array/scalar reconstruction, and the latin-1
# codec protocol 2 uses to pickle bytes.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds nothing but containers, numbers, strings and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a .pdparams file")


def _to_torch(key: str, arr: Any, path: Path) -> torch.Tensor:
    if isinstance(arr, np.generic):
        arr = np.asarray(arr)
    if not isinstance(arr, np.ndarray):
        raise CheckpointError(f"{path}: entry {key!r} is a {type(arr).__name__}, not an array")
    if arr.dtype == np.uint16:  # Paddle's bfloat16
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int16).copy()).view(torch.bfloat16)
    if arr.dtype.kind not in "fiub" or arr.dtype.hasobject:
        raise CheckpointError(f"{path}: entry {key!r} has unsupported dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr).copy())


def read_pdparams(path: Any) -> dict[str, torch.Tensor]:
    """All tensors of a Paddle ``.pdparams`` file (``paddle.save`` of a state dict), as torch tensors.

    Big-array pieces are joined back to their original shape; uint16 arrays become bfloat16. The
    layout is Paddle's: Linear weights are still (in, out) here.
    Raises :class:`CheckpointError` for anything that is not such a file (including any pickle
    that names a global other than numpy's array reconstruction).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except CheckpointError:
        raise
    except Exception as e:  # UnpicklingError (refused global or damaged), EOFError, ...
        raise CheckpointError(f"{path} is not a readable .pdparams file: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    obj = dict(obj)
    obj.pop(NAME_TABLE_KEY, None)
    big = obj.pop(BIG_PARAM_KEY, None) or {}
    if not isinstance(big, dict):
        raise CheckpointError(f"{path}: {BIG_PARAM_KEY} is not a dict")
    for name, info in big.items():
        try:
            shape, slices = tuple(int(s) for s in info["OriginShape"]), list(info["slices"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed {BIG_PARAM_KEY} entry for {name!r}") from None
        missing = [s for s in slices if s not in obj]
        if missing:
            raise CheckpointError(f"{path}: pieces of {name!r} are missing: {name_list(missing)}")
        parts = [np.asarray(obj.pop(s)).reshape(-1) for s in slices]
        joined = np.concatenate(parts)
        if joined.size != int(np.prod(shape)):
            raise CheckpointError(f"{path}: the pieces of {name!r} hold {joined.size} values; shape {shape} "
                                  f"needs {int(np.prod(shape))}")
        obj[name] = joined.reshape(shape)
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: non-string key {key!r}")
        out[key] = _to_torch(key, value, path)
    return out


def read_paddle_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A Paddle-saved ``.safetensors`` (same layout as .pdparams: Linear weights (in, out))."""
    from safetensors import safe_open

    safetensors_header(path)
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: _to_torch(k, f.get_tensor(k), path) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def to_torch_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transpose every Linear weight (every 2-D ``*.weight`` but embedding tables) to torch's (out, in)."""
    return {k: (v.t().contiguous() if v.ndim == 2 and k.endswith(".weight") and not _NOT_LINEAR.fullmatch(k) else v)
            for k, v in state.items()}


def is_paddle_folder(folder: Path) -> bool:
    """Whether ``folder`` is a ppdiffusers AudioLDM folder: some component folder holds a Paddle-only
    weight file and the UNet folder holds no PyTorch weights (with both, the cvssp files are used)."""
    folder = Path(folder)
    paddle = any((folder / sub / n).is_file() for sub in COMPONENT_DIRS.values() for n in PADDLE_WEIGHT_NAMES)
    torch_unet = any((folder / "unet" / n).is_file() for v in VARIANTS for n in weight_file_names("unet", v))
    return paddle and not torch_unet


def find_paddle_weights(folder: Path, component: str) -> Path:
    """The weight file of one component of a ppdiffusers folder."""
    return first_weight_file(Path(folder) / COMPONENT_DIRS[component], list(WEIGHT_FILES[component]),
                             f"no Paddle weight file for {component}")


def read_paddle_weights(path: Path) -> dict[str, torch.Tensor]:
    """One component's tensors in torch layout (names unchanged: diffusers/transformers names)."""
    raw = read_paddle_safetensors(path) if path.suffix == ".safetensors" else read_pdparams(path)
    return to_torch_layout(raw)


_ANY = object()
# Config fields ppdiffusers / PaddleNLP write that diffusers / transformers do not, with the values
# under which they change nothing (``_ANY``: a run-time option). Anything else is refused.
PADDLE_ONLY_FIELDS = {
    "unet": {"data_format": ("NCHW",)},  # NHWC would change every conv weight's layout
    "vae": {"data_format": ("NCHW",), "down_block_out_channels": (None,), "up_block_out_channels": (None,),
            "use_quant_conv": (True,), "use_post_quant_conv": (True,), "latents_mean": (None,),
            "latents_std": (None,), "shift_factor": (None,), "force_upcast": _ANY},
    "text_encoder": {"paddlenlp_version": _ANY, "return_dict": _ANY, "dtype": _ANY},
    "vocoder": {"paddlenlp_version": _ANY, "return_dict": _ANY, "dtype": _ANY},
}


def cvssp_view(folder: Path, dest: Path) -> Path:
    """Write into ``dest`` the config files of a ppdiffusers folder with the Paddle-only fields
    checked and removed, in the cvssp layout, so :func:`convert.cvssp.read_folder_config` reads them."""
    for sub in ("scheduler", "tokenizer", "text_encoder", "unet", "vae", "vocoder"):
        src = folder / sub
        if not src.is_dir():
            raise SourceNotFoundError(f"{folder} is not a ppdiffusers AudioLDM folder: {sub}/ is missing")
        (dest / sub).mkdir(parents=True)
        for f in src.glob("*.json"):
            if sub in PADDLE_ONLY_FIELDS and f.name == "config.json":
                cfg = read_json(f)
                for field, ok in PADDLE_ONLY_FIELDS[sub].items():
                    if field in cfg:
                        value = cfg.pop(field)
                        if ok is not _ANY and value not in ok:
                            raise CheckpointError(f"{f}: {field}={value!r} is not supported; accepted: "
                                                  f"{', '.join(repr(v) for v in ok)}")
                (dest / sub / f.name).write_text(json.dumps(cfg))
            else:
                shutil.copyfile(f, dest / sub / f.name)
    return dest


def convert_paddle_folder(folder: Any, *, hash_files: bool = True,
                          progress: Optional[Callable[[str], None]] = None) -> Converted:
    """Convert a ppdiffusers AudioLDM folder in memory (nothing is written).

    The configs are read by the cvssp translation (same fields); each component's tensors are read
    from its Paddle file, Linear weights transposed, then remapped strictly by the cvssp tables.
    progress: called with each component's name as it starts.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SourceNotFoundError(f"{folder} is not a folder")
    with tempfile.TemporaryDirectory() as tmp:
        config = read_folder_config(cvssp_view(folder, Path(tmp) / "view"), name=folder.name)
    tokenizer = read_tokenizer(folder)
    tensors, files = {}, {}
    for comp in COMPONENTS:
        if progress:
            progress(comp)
        path = find_paddle_weights(folder, comp)
        if hash_files:
            files[str(path.relative_to(folder))] = sha256_file(path)
        tensors[comp] = remap(read_paddle_weights(path), cvssp_table(comp), expected_shapes(comp, config),
                              f"{comp} ({path})")
    source = {"kind": "paddle", "path": str(folder.resolve()), "files": files}
    return Converted(config=config, tokenizer=tokenizer, tensors=tensors, source=source)
