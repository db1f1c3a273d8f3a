"""Shared pytest fixtures: reference cvssp folders built once per run, in a session tmp dir.

``cvssp_folder(name, weights="safetensors", fp16_variant=False)`` returns the path of a folder of
seeded random weights for ``tiny`` or one of the four real checkpoint sizes (built on first use,
then reused by every test of the run). Building a full-size folder holds its modules in memory only
while writing; tests then load what they need from the folder, so at most one full-size
reference/ours pair is in memory at a time if each test frees its models.

Full-size tests are marked ``fullsize``; ``-m "not fullsize"`` gives the fast subset.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import write_cvssp_folder  # noqa: E402

# Same thread count in every run, so timings and float reductions are comparable.
torch.set_num_threads(int(os.environ.get("AUDIOLDM_TEST_THREADS", os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def cvssp_folder(tmp_path_factory):
    """Factory: ``cvssp_folder(name, weights="safetensors", fp16_variant=False) -> Path``."""
    built: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("cvssp")

    def get(name: str, weights: str = "safetensors", fp16_variant: bool = False) -> Path:
        key = (name, weights, fp16_variant)
        if key not in built:
            folder = root / f"{name}-{weights}{'-fp16' if fp16_variant else ''}"
            write_cvssp_folder(folder, name, seed=0, weights=weights, fp16_variant=fp16_variant)
            gc.collect()
            built[key] = folder
        return built[key]

    return get


@pytest.fixture(scope="session")
def converted_file(cvssp_folder, tmp_path_factory):
    """Factory: ``converted_file(name) -> Path`` of our checkpoint converted from ``cvssp_folder(name)``."""
    from convert.core import convert_to_file

    built: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("converted")

    def get(name: str) -> Path:
        if name not in built:
            out = root / f"{name}.safetensors"
            convert_to_file(str(cvssp_folder(name)), out)
            built[name] = out
        return built[name]

    return get


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max abs reference) between two tensors, in float64."""
    ours, ref = ours.detach().double(), ref.detach().double()
    if ours.shape != ref.shape:
        raise AssertionError(f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    err = (ours - ref).abs().max().item()
    return err, err / max(ref.abs().max().item(), 1e-30)


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """One intra-op thread for a module of tiny tensors: fastest there, and far faster when other test
    runs share the cores (2 spinning threads per process slowed the sampler step loops ~10x under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
