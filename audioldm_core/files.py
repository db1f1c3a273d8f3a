"""Output files: checking an output path before any work, atomic writing, and cleaning up after a kill.

Every file this package writes (generated audio, converted checkpoints) is written by
:func:`atomic_write`: into a temporary file beside the destination, then renamed into place, so a
reader never sees a half-written file. Callers check the path with :func:`check_output_path` before
they start the work that produces the file, so a bad path fails in a second, not after a generation.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import InputError

PathLike = Union[str, os.PathLike]

# Output kind -> (words for the error messages, accepted file extensions). The audio extensions are
# the formats audioldm_core.audio.FORMATS writes (tests/test_audio.py checks that they agree).
OUTPUT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "audio": ("audio output", (".wav", ".flac")),
    "checkpoint": ("checkpoint output", (".safetensors",)),
    "picture": ("picture output", (".png",)),
}


def check_output_path(path: PathLike, kind: Optional[str] = None) -> Path:
    """Check that ``path`` can be written as a file of ``kind`` and return it as a :class:`Path`.

    kind: ``"audio"`` (``.wav``/``.flac``), ``"checkpoint"`` (``.safetensors``), ``"picture"``
    (``.png``), or None (any file
    name; no extension check). Refuses, with :class:`InputError` worded for the kind: a path that is
    an existing folder, a missing or unwritable parent folder, and an extension the kind does not
    write. Nothing is created.
    """
    if kind is not None and kind not in OUTPUT_KINDS:
        raise InputError(f"unknown output kind {kind!r}; choose one of {', '.join(OUTPUT_KINDS)}")
    what, extensions = OUTPUT_KINDS[kind] if kind is not None else ("output", ())
    names = " or ".join(extensions)
    path = Path(path)
    if path.is_dir():
        hint = f"; give a file name ending in {names}" if names else "; give a file name"
        raise InputError(f"{what} path {path} is a folder{hint}")
    if extensions and path.suffix.lower() not in extensions:
        raise InputError(f"{what} path {path} must end in {names}, got {path.suffix or 'no extension'!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{what} folder {parent} is not writable")
    return path


def check_output_folder(folder: PathLike) -> Path:
    """Check that ``folder`` is an existing, writable folder (a batch's outputs go there)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist or is not a folder; create it first")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {folder} is not writable")
    return folder


def _temp_affixes(path: Path) -> tuple[str, str]:
    """Prefix and suffix of :func:`atomic_write`'s temporary file for ``path``: ``.<name>.<random>.tmp``."""
    return f".{path.name}.", ".tmp"


def atomic_write(path: PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file is removed on any error, so ``path`` is either the complete new file or
    untouched. The path is checked as :func:`check_output_path` does (no extension check).
    """
    path = check_output_path(path)
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stale_temp_files(path: PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left beside ``path`` when its process was killed
    mid-write (SIGKILL cannot be caught; ``.<name>.<random>.tmp``); returns what was removed.

    Call it only where no other process is writing ``path`` at the same time (a batch resuming its own
    outputs)."""
    path = Path(path)
    prefix, suffix = _temp_affixes(path)
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed
