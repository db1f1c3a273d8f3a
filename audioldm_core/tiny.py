"""The built-in ``tiny`` model: the real architecture at a few MB, with seeded random weights, for
demos and tests. Its output is noise, not sound: it exercises every code path, nothing more."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import torch
from torch import nn

from .checkpoint import COMPONENTS, build_component
from .config import AudioLDMConfig, builtin_config
from .layers import component_dtype
from .tokenizer import Tokenizer

TINY_SEED = 1234


def seeded_init_(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights of sensible scale, in place; returns ``module``.

    Weights ~ N(0, 1/fan_in); vectors (biases, norm shifts) ~ N(0, 0.05^2); norm scales 1 + N(0, 0.1^2).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.ndim >= 2:
                fan_in = t[0].numel() if t.ndim > 2 or "embed" not in name else 1
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(max(fan_in, 1)))
            elif name.endswith("scale") or "norm" in name.lower() and name.endswith("weight"):
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.05 * torch.randn(t.shape, generator=g))
    return module


def build_tiny(device: Any = "cpu", dtype: torch.dtype = torch.float32
               ) -> tuple[AudioLDMConfig, Tokenizer, dict[str, nn.Module]]:
    """(config, tokenizer, {component: module}) of the ``tiny`` model, components in eval mode
    without gradients, each in its :func:`~audioldm_core.layers.component_dtype`."""
    config = builtin_config("tiny")
    data = json.loads(resources.files("audioldm_core.configs").joinpath("tiny-tokenizer.json").read_text())
    modules = {}
    for i, comp in enumerate(COMPONENTS):
        m = seeded_init_(build_component(comp, config), TINY_SEED + i)
        modules[comp] = m.to(device=device, dtype=component_dtype(comp, dtype)).eval().requires_grad_(False)
    return config, Tokenizer.from_dict(data, model_max_length=config.model_max_length), modules
