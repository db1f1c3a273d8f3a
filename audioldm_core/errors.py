"""The exception types audioldm-core raises on bad input.

Every error the library or the converter raises for a user's mistake or a bad file is one of these,
so callers can catch ``AudioLDMError`` and nothing else. Each subclass also derives from the builtin
it specialises (``ValueError``, ``FileNotFoundError``), so generic handlers keep working.
"""

from __future__ import annotations

from typing import Iterable


class AudioLDMError(Exception):
    """Base class of every error audioldm-core raises on purpose."""


class ConfigError(AudioLDMError, ValueError):
    """A configuration value we do not support, or a config file that cannot be read."""


class CheckpointError(AudioLDMError, ValueError):
    """A weight file that is unreadable, incomplete, or does not fit the model."""


class SourceNotFoundError(AudioLDMError, FileNotFoundError):
    """A model source (folder, file, Hub repo id or component) that cannot be found."""


class InputError(AudioLDMError, ValueError):
    """A bad argument to a model, a sampler or the pipeline (type, shape, range)."""


class MissingExtraError(AudioLDMError, ImportError):
    """An optional extra (``[onnx]``, ``[ui]``, ...) that a requested feature needs is not installed;
    the message names the ``pip install`` command."""


class NumericalError(AudioLDMError, FloatingPointError):
    """Latents, a mel or audio became NaN or Inf (fp16 overflow, damaged weights); the message
    names the step and the component."""


class MissingExtraError(AudioLDMError, ImportError):
    """An optional extra (``[ui]``, ...) that a feature needs is not installed; the message names it."""


def name_list(names: Iterable[str], limit: int = 10) -> str:
    """Format names for an error message: sorted, at most ``limit`` shown, then ``(+N more)``."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f" (+{len(names) - limit} more)"
    return shown


def key_problems(groups: dict[str, Iterable[str]]) -> list[str]:
    """One phrase per non-empty group of key names: ``{"unexpected key(s)": ["a", "b"]}`` ->
    ``["2 unexpected key(s): a, b"]`` (sorted, capped by :func:`name_list`)."""
    out = []
    for label, names in groups.items():
        names = list(names)
        if names:
            out.append(f"{len(names)} {label}: {name_list(names)}")
    return out
