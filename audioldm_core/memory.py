"""Giving a component's weight pages back to the OS between uses, without changing any value.

Weights loaded from our checkpoint are views into a copy-on-write mapping of the file
(:mod:`audioldm_core.checkpoint`): a page becomes resident when first read and stays resident, and
counted in the process's RSS, for as long as the pipeline lives. The text encoder runs once at the
start of a generation and then idles through the denoising loop, the VAE and the vocoder, where the
peak RSS is reached. :func:`release_clean_pages` drops such pages from the process: the next read
maps them again from the page cache (or the file). Only pages whose contents live on elsewhere are
dropped: file-backed or shared pages, as ``/proc/self/pagemap`` reports them. A page the process
wrote to (an in-place edit of a weight makes a private copy) and ordinary heap memory are never
touched, so values cannot change.

One call site: ``AudioLDM.text_encoder_idle``, switched by ``AudioLDM.release_text_encoder``
(default on; the gain is recorded in ``benchmarks/RESULTS.md``).

Linux only (``madvise(MADV_DONTNEED)`` and ``/proc/self/pagemap``). On any other platform, and for
weights not on the CPU, :func:`release_clean_pages` is a no-op that returns 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import sys
from typing import Iterable, Union

import numpy as np
import torch
from torch import nn

PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
_PRESENT = np.uint64(1 << 63)
_FILE_OR_SHARED = np.uint64(1 << 61)


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's ``madvise(addr, length, advice)``, looked up once."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _page_ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    """Sorted, merged [start, end) page-aligned address ranges of the CPU tensors' storages."""
    spans = []
    for t in tensors:
        if t.device.type != "cpu" or t.is_sparse:
            continue
        s = t.untyped_storage()
        if s.nbytes() == 0:
            continue
        start = s.data_ptr() // PAGE * PAGE
        end = -(-(s.data_ptr() + s.nbytes()) // PAGE) * PAGE
        spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def release_clean_pages(weights: Union[nn.Module, Iterable[torch.Tensor]]) -> int:
    """Drop the resident pages behind a module's (or tensors') CPU storage that the OS can restore
    unchanged on the next read; returns the bytes released (0 off Linux or when nothing qualifies).

    A page qualifies when it is present and file-backed or shared (``/proc/self/pagemap`` bit 61):
    the mapped, never-written weights of a checkpoint. Written (copied-on-write) pages and heap
    memory are skipped, so no value ever changes; reading a released weight again costs page-cache
    faults. A page may be shared with a neighbouring tensor of another component: it comes back on
    that tensor's next read the same way.
    """
    if not sys.platform.startswith("linux"):
        return 0
    tensors = [*weights.parameters(), *weights.buffers()] if isinstance(weights, nn.Module) else list(weights)
    ranges = _page_ranges(tensors)
    if not ranges:
        return 0
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)
    except OSError:
        return 0
    madvise = _madvise()
    released = 0
    with pagemap:
        for start, end in ranges:
            pagemap.seek(start // PAGE * 8)
            raw = pagemap.read((end - start) // PAGE * 8)
            flags = np.frombuffer(raw, dtype=np.uint64)
            ok = (flags & (_PRESENT | _FILE_OR_SHARED)) == (_PRESENT | _FILE_OR_SHARED)
            if not ok.any():
                continue
            # runs of qualifying pages: [first, last) indices where ok switches on and off
            edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
            for first, last in zip(edges[::2], edges[1::2]):
                addr, length = start + int(first) * PAGE, int(last - first) * PAGE
                if madvise(ctypes.c_void_p(addr), length, _MADV_DONTNEED) == 0:
                    released += length
    return released
