"""A standalone CLAP audio-tower file: one ``.safetensors`` holding the ``clap_audio`` component
(HTS-AT + projection, our names, under the prefix ``clap_audio.``) with the same strictness as our
model checkpoints (:mod:`audioldm_core.checkpoint`).

Metadata (strings): ``format`` ``"audioldm-core-clap-audio"``, ``format_version`` ``"1"``,
``config`` (:class:`~audioldm_core.htsat.ClapAudioConfig` as JSON), ``source`` (JSON), and
``checksums`` (``{"clap_audio": sha256}``, as :func:`checkpoint.component_checksums` computes it).
Loading checks the format, the checksum, every name and shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from .checkpoint import atomic_write, component_checksums, load_state_strict
from .errors import CheckpointError, SourceNotFoundError
from .htsat import HTSAT, ClapAudioConfig

FORMAT = "audioldm-core-clap-audio"
FORMAT_VERSION = "1"
PREFIX = "clap_audio."


def save_clap_audio(path: Union[str, Path], cfg: ClapAudioConfig, state: Mapping[str, torch.Tensor],
                    source: Mapping[str, Any]) -> Path:
    """Write ``state`` (our HTS-AT names) and ``cfg`` atomically; returns the path."""
    from safetensors.torch import save_file

    flat = {PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(cfg.to_dict(), sort_keys=True),
            "source": json.dumps(dict(source), sort_keys=True),
            "checksums": json.dumps(component_checksums(flat), sort_keys=True)}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        raise SourceNotFoundError(f"CLAP audio file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a CLAP audio file (format {meta.get('format')!r} version "
                              f"{meta.get('format_version')!r}; expected {FORMAT!r} {FORMAT_VERSION!r}); "
                              f"convert one with audioldm-convert")
    return meta


def read_clap_audio_config(path: Union[str, Path]) -> ClapAudioConfig:
    """The config of a CLAP audio file, from its header only (no tensor is read)."""
    return ClapAudioConfig.from_dict(json.loads(_metadata(Path(path))["config"]))


def load_clap_audio(path: Union[str, Path], *, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> HTSAT:
    """Read a file written by :func:`save_clap_audio` into an eval-mode :class:`HTSAT`. Raises
    :class:`CheckpointError` for another format, a checksum mismatch or tensors that do not fit."""
    from safetensors import safe_open

    path = Path(path)
    meta = _metadata(path)
    with safe_open(str(path), framework="pt") as f:
        flat = {k: f.get_tensor(k) for k in f.keys()}
    want = json.loads(meta.get("checksums", "{}")).get("clap_audio")
    if want != component_checksums(flat).get("clap_audio"):
        raise CheckpointError(f"{path}: clap_audio checksum mismatch (the file is damaged or was edited)")
    cfg = ClapAudioConfig.from_dict(json.loads(meta["config"]))
    state = {k[len(PREFIX):]: v for k, v in flat.items() if k.startswith(PREFIX)}
    if len(state) != len(flat):
        raise CheckpointError(f"{path}: tensors outside {PREFIX!r}: "
                              f"{sorted(k for k in flat if not k.startswith(PREFIX))[:10]}")
    # built on the CPU, not the meta device: its derived buffers (relative position index, shifted-
    # window masks) are not in the file; then every parameter is replaced from the file, strictly
    model = load_state_strict(HTSAT(cfg), state, "clap_audio", device=device, dtype=dtype)
    for buf_owner in model.modules():  # the derived buffers follow to the device
        for name, b in list(buf_owner._buffers.items()):
            if b is not None and b.device != torch.device(device):
                buf_owner._buffers[name] = b.to(device)
    return model.eval()
