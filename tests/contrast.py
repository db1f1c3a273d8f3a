"""Tolerance contrasts: a parity tolerance is only worth something if it separates right from wrong.

Each parity test that calls :func:`assert_separates` also computes the reference's output under a
small mistake (a different prompt, a different seed, one weight scaled by 1.01) and measures how far
our (right) output is from it, in the same error measure as the parity check. Every such distance must
be at least ``FACTOR`` times the tolerance, so a mistake of that size could never pass.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

FACTOR = 100.0
WEIGHT_SCALE = 1.01


def assert_separates(label: str, tol: float, right: float, wrong: dict[str, float], unit: str = "") -> None:
    """``right``: our parity error; ``wrong``: for each mistake, our output's error against the reference
    computed with that mistake. Asserts ``right <= tol`` and every ``wrong >= FACTOR * tol``."""
    parts = ", ".join(f"{k}: {v:.2e} ({v / tol:.0f}x tol)" for k, v in wrong.items())
    msg = f"{label}: tolerance {tol:.0e}{unit}; parity error {right:.2e}; mistakes: {parts}"
    print("\n" + msg)
    assert right <= tol, msg
    weak = [k for k, v in wrong.items() if not v >= FACTOR * tol]
    assert not weak, f"{msg}; below {FACTOR:.0f}x the tolerance: {weak}"


@contextlib.contextmanager
def scaled_weight(module: torch.nn.Module, name: str, factor: float = WEIGHT_SCALE) -> Iterator[None]:
    """Within the block, the parameter ``name`` of ``module`` is multiplied by ``factor`` (restored after,
    bit for bit)."""
    p = module.get_parameter(name)
    saved = p.detach().clone()
    with torch.no_grad():
        p.mul_(factor)
    try:
        yield
    finally:
        with torch.no_grad():
            p.copy_(saved)
