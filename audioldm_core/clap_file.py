"""The optional ``clap_audio`` component (CLAP audio tower: HTS-AT + projection) in a
``.safetensors`` file, with the strictness of the four others (:mod:`audioldm_core.checkpoint`):
tensors under the prefix ``clap_audio.`` (our names), metadata ``clap_audio_config``
(:class:`~audioldm_core.htsat.ClapAudioConfig` as JSON) and its SHA-256 in ``checksums``
(``{"clap_audio": ...}``, as :func:`checkpoint.component_checksums` computes it).

Two kinds of file carry it: a model checkpoint converted from an original AudioLDM ``.ckpt`` (the
tower the UNet was trained with), and a standalone CLAP file (format
``"audioldm-core-clap-audio"``, from a transformers ``ClapModel``), which can score and re-rank
but is not the embedding space the UNet was trained on. Only the ``clap_audio.`` tensors are read,
and only when the tower is first used (:func:`audioldm_core.rerank.attach`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from .checkpoint import FORMAT as MODEL_FORMAT
from .checkpoint import atomic_write, component_checksums, load_state_strict
from .errors import CheckpointError, ConfigError, SourceNotFoundError
from .htsat import HTSAT, ClapAudioConfig

FORMAT = "audioldm-core-clap-audio"
FORMAT_VERSION = "1"
PREFIX = "clap_audio."
CONFIG_KEY = "clap_audio_config"


def metadata_for(cfg: ClapAudioConfig) -> dict[str, str]:
    """The metadata entry a model checkpoint needs for the component (its checksum is in
    ``checksums`` with the others)."""
    return {CONFIG_KEY: json.dumps(cfg.to_dict(), sort_keys=True)}


def save_clap_audio(path: Union[str, Path], cfg: ClapAudioConfig, state: Mapping[str, torch.Tensor],
                    source: Mapping[str, Any]) -> Path:
    """Write a standalone CLAP file: ``state`` (our HTS-AT names) and ``cfg``, atomically."""
    from safetensors.torch import save_file

    flat = {PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, CONFIG_KEY: json.dumps(cfg.to_dict(), sort_keys=True),
            "source": json.dumps(dict(source), sort_keys=True),
            "checksums": json.dumps(component_checksums(flat), sort_keys=True)}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=meta))
    return path


def _header(path: Path) -> tuple[dict[str, str], list[str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise SourceNotFoundError(f"CLAP audio file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, [k for k in f.keys() if k.startswith(PREFIX)]
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def has_clap_audio(path: Union[str, Path]) -> bool:
    """Whether a file carries the ``clap_audio`` component (header only)."""
    meta, keys = _header(Path(path))
    return bool(keys) and CONFIG_KEY in meta


def read_clap_audio_config(path: Union[str, Path]) -> ClapAudioConfig:
    """The ``clap_audio`` config of a standalone CLAP file or a model checkpoint (header only)."""
    path = Path(path)
    meta, keys = _header(path)
    if meta.get("format") not in (FORMAT, MODEL_FORMAT) or not keys or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path} holds no CLAP audio tower (format {meta.get('format')!r}); convert an "
                              f"original AudioLDM .ckpt or a transformers ClapModel with audioldm-convert")
    try:
        return ClapAudioConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    except (ConfigError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: bad {CONFIG_KEY} in metadata: {e}") from None


def load_clap_audio(path: Union[str, Path], *, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> HTSAT:
    """Read the ``clap_audio`` component of a file into an eval-mode :class:`HTSAT`. Raises
    :class:`CheckpointError` for a file without one, a checksum mismatch or tensors that do not fit."""
    from safetensors import safe_open

    path = Path(path)
    cfg = read_clap_audio_config(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        flat = {k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}
    want = json.loads(meta.get("checksums", "{}")).get("clap_audio")
    if want is None or want != component_checksums(flat).get("clap_audio"):
        raise CheckpointError(f"{path}: clap_audio checksum {'missing' if want is None else 'mismatch'} "
                              f"(the file is damaged or was edited)")
    state = {k[len(PREFIX):]: v for k, v in flat.items()}
    # built on the CPU, not the meta device: its derived buffers (relative position index, shifted-
    # window masks) are not in the file; then every parameter is replaced from the file, strictly
    model = load_state_strict(HTSAT(cfg), state, "clap_audio", device=device, dtype=dtype)
    return model.to(device).eval()
