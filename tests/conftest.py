"""Shared pytest fixtures: reference cvssp folders built once per run, in a session tmp dir.

``cvssp_folder(name, weights="safetensors", fp16_variant=False)`` returns the path of a folder of
seeded random weights for ``tiny`` or one of the four real checkpoint sizes (built on first use,
then reused by every test of the run). Building a full-size folder holds its modules in memory only
while writing; tests then load what they need from the folder, so at most one full-size
reference/ours pair is in memory at a time if each test frees its models.

Disk: at most one full-size checkpoint is on disk at a time. Asking for another full-size name
deletes the previous one's folders and converted file (a rebuild takes ~10-20 s; the builds are
seeded, so a rebuilt folder is byte-identical). Every passing test's ``tmp_path`` is deleted when it
ends (``tmp_path_retention_policy = "failed"`` in pyproject.toml). Together these keep the run's
peak near one l-full folder plus its converted file instead of every size at once (~30 GB).

Full-size tests are marked ``fullsize``; ``-m "not fullsize"`` gives the fast subset.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import FULL_SIZE, write_cvssp_folder  # noqa: E402

# Tests whose reference, optional extra or browser is missing fail by default. Someone who knows they
# lack one opts out by naming it: AUDIOLDM_TEST_OPT_OUT=paddle,browser (names: original, paddle, onnx,
# openvino, ui, browser, ray). Then those tests skip, saying so.
OPT_OUT = frozenset(s.strip() for s in os.environ.get("AUDIOLDM_TEST_OPT_OUT", "").split(",") if s.strip())


def require(what: str, missing: str) -> None:
    """Called where ``missing`` (what is absent, in words) stops a test: fails it, unless ``what`` is
    listed in ``AUDIOLDM_TEST_OPT_OUT``, then skips it naming the opt-out."""
    if what in OPT_OUT:
        pytest.skip(f"{missing} (opted out: AUDIOLDM_TEST_OPT_OUT contains {what!r})")
    pytest.fail(f"{missing}; install it as the README's test command does, or set "
                f"AUDIOLDM_TEST_OPT_OUT={what} to skip these tests knowingly", pytrace=False)


# Same thread count in every run, so timings and float reductions are comparable.
torch.set_num_threads(int(os.environ.get("AUDIOLDM_TEST_THREADS", os.cpu_count() or 1)))


class _Fixtures:
    """The session's reference folders and converted files, with one full-size name resident at a time."""

    def __init__(self, root: Path):
        self.root = root
        self.folders: dict[tuple, Path] = {}
        self.converted: dict[str, Path] = {}
        self.resident: str | None = None  # the full-size name whose files are on disk

    def _make_room(self, name: str) -> None:
        if name not in FULL_SIZE:
            return
        old = self.resident
        if old is not None and old != name:
            for key in [k for k in self.folders if k[0] == old]:
                shutil.rmtree(self.folders.pop(key))
            if old in self.converted:
                self.converted.pop(old).unlink()
        self.resident = name

    def folder(self, name: str, weights: str = "safetensors", fp16_variant: bool = False) -> Path:
        key = (name, weights, fp16_variant)
        if key not in self.folders:
            self._make_room(name)
            folder = self.root / "cvssp" / f"{name}-{weights}{'-fp16' if fp16_variant else ''}"
            write_cvssp_folder(folder, name, seed=0, weights=weights, fp16_variant=fp16_variant)
            gc.collect()
            self.folders[key] = folder
        return self.folders[key]

    def converted_file(self, name: str) -> Path:
        from convert.core import convert_to_file

        if name not in self.converted:
            src = self.folder(name)
            out = self.root / "converted" / f"{name}.safetensors"
            out.parent.mkdir(exist_ok=True)
            convert_to_file(str(src), out)
            self.converted[name] = out
        return self.converted[name]


@pytest.fixture(scope="session")
def _fixtures(tmp_path_factory) -> _Fixtures:
    return _Fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="session")
def cvssp_folder(_fixtures):
    """Factory: ``cvssp_folder(name, weights="safetensors", fp16_variant=False) -> Path``.

    A full-size folder stays valid until a test asks for a different full-size name."""
    return _fixtures.folder


@pytest.fixture(scope="session")
def converted_file(_fixtures):
    """Factory: ``converted_file(name) -> Path`` of our checkpoint converted from ``cvssp_folder(name)``
    (same lifetime as that folder)."""
    return _fixtures.converted_file


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
