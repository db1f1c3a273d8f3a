"""Releasing clean weight pages (audioldm_core.memory): RSS goes down, values never change."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from audioldm_core import memory
from audioldm_core.memory import release_clean_pages
from audioldm_core.pipeline import AudioLDM

# A Linux-only feature, not a missing reference: release_clean_pages needs madvise(MADV_DONTNEED) and
# /proc/self/pagemap, and elsewhere releases nothing by design (returns 0).
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux-only feature: page release uses madvise and /proc/self/pagemap")

MIB = 1 << 20


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def _mapped(tmp_path, nbytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a float32 tensor viewing a private copy-on-write mapping of a file, as our loader makes it;
    the same values in ordinary memory)."""
    path = tmp_path / "w.bin"
    values = np.arange(nbytes // 4, dtype=np.float32)
    values.tofile(path)
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=nbytes)
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, (nbytes // 4,)), torch.from_numpy(values)


def test_released_pages_leave_rss_and_come_back_unchanged(tmp_path):
    t, expected = _mapped(tmp_path, 64 * MIB)
    assert torch.equal(t, expected)  # every page resident now
    before = _rss_file_kib()
    released = release_clean_pages([t])
    after = _rss_file_kib()
    print(f"\nreleased {released / MIB:.1f} MiB; RssFile {before / 1024:.0f} -> {after / 1024:.0f} MiB")
    assert released >= 64 * MIB - memory.PAGE
    assert before - after >= 60 * 1024, "RssFile did not drop by the released pages"
    assert torch.equal(t, expected), "values changed after the release"


def test_pages_written_in_place_are_kept(tmp_path):
    t, expected = _mapped(tmp_path, 8 * MIB)
    assert torch.equal(t, expected)  # all resident
    t[: 1 * MIB // 4] = -1.0  # copy-on-write: the first MiB is now private memory
    expected[: 1 * MIB // 4] = -1.0
    released = release_clean_pages([t])
    # at most the 7 unwritten MiB (the kernel may already have unmapped some of them: a write into a
    # large page-cache folio drops its whole 2 MiB mapping, seen here), never the written one
    assert 0 < released <= 7 * MIB, f"released {released} bytes"
    assert torch.equal(t, expected), "an in-place edit was lost"


def test_heap_tensors_and_non_cpu_tensors_release_nothing():
    heap = torch.randn(4 * MIB // 4)
    copy = heap.clone()
    assert release_clean_pages([heap]) == 0
    assert torch.equal(heap, copy)
    assert release_clean_pages([torch.empty(10, device="meta")]) == 0
    assert release_clean_pages(torch.nn.Linear(3, 3)) == 0


def test_generation_releases_the_text_encoder_and_audio_is_unchanged(converted_file, monkeypatch):
    pipe = AudioLDM.from_pretrained(converted_file("tiny"))
    kw = dict(num_inference_steps=2, audio_length_in_s=1.0, progress=False)
    calls = []
    real = memory.release_clean_pages
    monkeypatch.setattr(memory, "release_clean_pages", lambda m: calls.append(m) or real(m))
    a = pipe("rain on a roof", generator=torch.Generator().manual_seed(0), **kw).audios
    assert calls == [pipe.clap]
    b = pipe("rain on a roof", generator=torch.Generator().manual_seed(0), **kw).audios  # text encoder re-read
    pipe.release_text_encoder = False
    c = pipe("rain on a roof", generator=torch.Generator().manual_seed(0), **kw).audios
    assert len(calls) == 2, "release_text_encoder=False must not release"
    assert np.array_equal(a, b) and np.array_equal(a, c)
