"""Gaussian noise drawn exactly as diffusers' ``randn_tensor`` draws it, so the same CPU generator
state gives the same noise on every device: initial latents, sampler noise and VAE posterior samples.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch

from .errors import InputError

Generator = Union[torch.Generator, Sequence[torch.Generator], None]


def randn_tensor(shape: Sequence[int], generator: Generator, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Unit normal noise of ``shape`` (B, ...) on ``device`` in ``dtype``.

    Drawn on the generator's device, then moved (a CPU generator gives the same values everywhere);
    a list of B generators draws batch item i from ``generator[i]``; a list of one acts as that
    generator; None uses torch's global RNG on ``device``.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) == 1:
            generator = generator[0]
        elif len(generator) != shape[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {shape[0]}; "
                             f"give one per batch item or a single one")
        else:
            for g in generator:
                _check(g)
            item = (1,) + tuple(shape[1:])
            return torch.cat([torch.randn(item, generator=g, device=g.device, dtype=dtype)
                              for g in generator]).to(device)
    _check(generator)
    draw = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw, dtype=dtype).to(device)


def _check(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


def first_generator(generator: Generator) -> Generator:
    """The generator a single stream continues from: a list of one becomes its item (diffusers'
    convention after the initial noise); anything else is returned as it is."""
    return generator[0] if isinstance(generator, (list, tuple)) and len(generator) == 1 else generator
