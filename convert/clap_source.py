"""``audioldm-convert SRC OUT --clap``: a standalone CLAP audio file (:mod:`audioldm_core.clap_file`)
from an original AudioLDM ``.ckpt`` (its audio tower) or a transformers ``ClapModel`` folder or Hub
repo id (``laion/clap-htsat-unfused``)."""

from __future__ import annotations

from pathlib import Path

from audioldm_core.clap_file import save_clap_audio
from audioldm_core.errors import CheckpointError, SourceNotFoundError
from convert.clap_audio import ORIGINAL_PREFIX, from_original, from_transformers, original_audio_tensors, transformers_audio_tensors
from convert.cvssp import read_weights
from convert.original import read_lightning_checkpoint


def convert_clap_source(source: str, out, *, revision=None):
    """``audioldm-convert``'s standalone-CLAP path: an original ``.ckpt`` (its audio tower) or a
    transformers ``ClapModel`` folder / Hub id (``laion/clap-htsat-unfused``) -> a CLAP audio file
    (:mod:`audioldm_core.clap_file`). Returns (path, config)."""
    p = Path(source)
    if p.is_file() and p.suffix == ".ckpt":
        tensors = original_audio_tensors(read_lightning_checkpoint(p))
        if not tensors:
            raise CheckpointError(f"{p} holds no CLAP audio tower (no {ORIGINAL_PREFIX}audio_branch.* tensors)")
        cfg, state = from_original(tensors, f"clap_audio ({p})")
    else:
        folder = p if p.is_dir() else _hub_folder(source, revision)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            weights = folder / "pytorch_model.bin"
        tensors = transformers_audio_tensors(read_weights(weights))
        if not tensors:
            raise CheckpointError(f"{weights} holds no CLAP audio tower (no audio_model.* tensors)")
        cfg, state = from_transformers(tensors, f"clap_audio ({weights})")
    return save_clap_audio(out, cfg, state, {"source": str(source), "revision": revision}), cfg


def _hub_folder(repo_id: str, revision) -> Path:
    """The weight file of a Hub ``ClapModel`` repo, downloaded and cached by huggingface_hub."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["model.safetensors", "config.json"]))
    except Exception as e:  # offline, unknown repo, network: one message
        raise SourceNotFoundError(f"cannot get the CLAP model {repo_id!r} ({type(e).__name__}: {e}); give a local "
                                  f"transformers ClapModel folder or an original AudioLDM .ckpt") from None
