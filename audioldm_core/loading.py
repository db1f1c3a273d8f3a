"""Where a pipeline's parts come from: a converted file, a cvssp folder or Hub repo (converted in
memory by the converter's own code), or the built-in ``tiny`` model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .checkpoint import COMPONENTS, empty_component, load_components, load_state_strict
from .config import AudioLDMConfig
from .errors import InputError
from .layers import component_dtype
from .tokenizer import Tokenizer

# Short names of the public checkpoints, accepted wherever a Hub repo id is.
HUB_ALIASES = {
    "s-full": "cvssp/audioldm",
    "s-full-v2": "cvssp/audioldm-s-full-v2",
    "m-full": "cvssp/audioldm-m-full",
    "l-full": "cvssp/audioldm-l-full",
}
DEFAULT_MODEL = "cvssp/audioldm-s-full-v2"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class Parts:
    """What a pipeline is built from: the config, the tokenizer, ``{component: module}`` and a
    description of the source (kept in manifests)."""

    config: AudioLDMConfig
    tokenizer: Tokenizer
    modules: dict[str, nn.Module]
    source: dict


def load_parts(source: Union[str, os.PathLike], *, device: Any = "cpu", dtype: torch.dtype = torch.float32,
               revision: Optional[str] = None, variant: Optional[str] = None) -> Parts:
    """Load every component from ``source`` (see :meth:`AudioLDM.from_pretrained`) onto ``device``,
    each in its :func:`~audioldm_core.layers.component_dtype` for ``dtype``."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    source = str(source)
    if source == "tiny":
        from .tiny import TINY_SEED, build_tiny

        config, tok, modules = build_tiny(device, dtype)
        return Parts(config, tok, modules, {"kind": "builtin", "name": "tiny", "seed": TINY_SEED})
    path = Path(source).expanduser()
    if path.is_file():
        info, modules = load_components(path, device=device, dtype=lambda c: component_dtype(c, dtype))
        tok = Tokenizer.from_dict(info.tokenizer, model_max_length=info.config.model_max_length)
        return Parts(info.config, tok, modules, {"kind": "file", "path": str(path.resolve()), "origin": info.source})
    from convert.core import convert_source  # the converter ships in the same distribution

    conv = convert_source(HUB_ALIASES.get(source, source), revision=revision, variant=variant, hash_files=False)
    modules = {comp: load_state_strict(empty_component(comp, conv.config), conv.tensors.pop(comp), comp,
                                       device=device, dtype=component_dtype(comp, dtype))
               for comp in COMPONENTS}
    tok = Tokenizer.from_dict(conv.tokenizer, model_max_length=conv.config.model_max_length)
    return Parts(conv.config, tok, modules, conv.source)
