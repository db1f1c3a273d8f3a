"""One generic, strict key remapper shared by every component and every source format.

A :class:`KeyTable` lists, for one component of one source format, the renames that are left after
naming our modules like the source (anchored regular expressions, first match wins), and the source
keys expected to be unused (buffers the source saves but does not need, training-only tensors).
:func:`remap` then guarantees: every source key is used exactly once or listed as unused, every
target parameter is filled exactly once, and every shape matches. Anything else raises
:class:`CheckpointError` naming the keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

from audioldm_core.errors import CheckpointError, key_problems


@dataclass(frozen=True)
class KeyTable:
    """Rename rules for one component of one source format.

    renames: ``(pattern, replacement)`` pairs; a pattern must match the whole source key
        (``re.fullmatch``) and the replacement may use groups (``\\1``). Keys no pattern matches keep
        their name.
    unused: patterns (whole-key) of source keys that are expected and deliberately dropped.
    prepare: optional function run on the whole source dict first, for transforms that combine
        several source tensors into one (e.g. folding weight norm ``weight_g``/``weight_v``).
    """

    renames: tuple[tuple[str, str], ...] = ()
    unused: tuple[str, ...] = ()
    prepare: Optional[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = None
    _compiled: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        renames = tuple((re.compile(p), r) for p, r in self.renames)
        unused = tuple(re.compile(p) for p in self.unused)
        object.__setattr__(self, "_compiled", (renames, unused))

    def is_unused(self, key: str) -> bool:
        """Whether a source key is one this table expects and drops."""
        return any(p.fullmatch(key) for p in self._compiled[1])

    def target(self, key: str) -> str:
        """Our name for a source key (the key itself when no rename matches)."""
        for pattern, repl in self._compiled[0]:
            if pattern.fullmatch(key):
                return pattern.sub(repl, key)
        return key


def remap(source: Mapping[str, torch.Tensor], table: KeyTable, expected: Optional[Mapping[str, torch.Size]],
          component: str) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to our names, strictly.

    source: the source checkpoint's tensors for one component (name -> tensor).
    expected: our module's state-dict shapes (name -> shape), e.g. from a meta-device module; None
        for an intermediate step whose targets another table maps on (names only, no shape check).
    Returns a dict with exactly the keys of ``expected`` (with None: every key not listed as unused,
    renamed). Raises :class:`CheckpointError` listing unexpected source keys, missing targets,
    targets filled twice, and shape mismatches.
    """
    tensors = dict(source)
    if table.prepare is not None:
        tensors = table.prepare(tensors)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected, twice, shapes = [], [], []
    for key, value in tensors.items():
        if table.is_unused(key):
            continue
        name = table.target(key)
        if expected is not None and name not in expected:
            unexpected.append(key if name == key else f"{key} (-> {name})")
            continue
        if name in out:
            twice.append(f"{name} (from {origin[name]} and {key})")
            continue
        if expected is not None and tuple(value.shape) != tuple(expected[name]):
            shapes.append(f"{key}: {tuple(value.shape)} but {name} needs {tuple(expected[name])}")
            continue
        out[name] = value
        origin[name] = key
    missing = set(expected) - set(out) if expected is not None else set()
    problems = key_problems({"unexpected key(s)": unexpected, "missing key(s)": missing,
                               "key(s) filled twice": twice, "shape mismatch(es)": shapes})
    if problems:
        raise CheckpointError(f"{component}: the weights do not fit the model: " + "; ".join(problems))
    return out
