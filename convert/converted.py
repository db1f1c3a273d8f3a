"""What every source reader returns: a converted model in memory, with its per-component summary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from audioldm_core.config import AudioLDMConfig


def component_stats(tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, dict[str, int]]:
    """Per component: number of tensors, of parameters (elements) and of bytes in their dtype."""
    return {comp: {"tensors": len(state), "params": sum(v.numel() for v in state.values()),
                   "bytes": sum(v.numel() * v.element_size() for v in state.values())}
            for comp, state in tensors.items()}


@dataclass
class Converted:
    """A converted model in memory: config, tokenizer, our state dicts, and where it came from.

    tensors: component name -> our state dict for it (all four components).
    tokenizer: ``{"vocab": {token: id}, "merges": [str]}``.
    source: JSON-able description of the source (kind, path or repo id, file hashes, options).
    """

    config: AudioLDMConfig
    tokenizer: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    source: dict[str, Any]
    extra_metadata: dict[str, str] = field(default_factory=dict)  # optional components' configs (clap_audio)

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """:func:`component_stats` of the tensors (the converter's summary table)."""
        return component_stats(self.tensors)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
