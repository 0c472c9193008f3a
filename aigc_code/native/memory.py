"""fp32 buffers backed by 2 MB pages, for the weights and KV cache that the native step streams every token.

A decode step reads every weight once (13 MB for the shipped model): with 4 KB pages that is a TLB
miss every 4 KB, measured ~10% of the step on this machine; with transparent huge pages it is one
every 2 MB. Linux backs an anonymous mapping with huge pages when asked (madvise) before it is
touched, so the buffers are fresh mmaps, 2 MB-aligned, wrapped as tensors (no copy, zero-filled).
Elsewhere (no THP, other OS) they are ordinary memory.
"""

from __future__ import annotations

import mmap

import torch

PAGE = 2 << 20


def huge_zeros(numel: int) -> torch.Tensor:
    """`numel` fp32 zeros, 2 MB-aligned, in memory the kernel is asked to back with huge pages."""
    if numel * 4 < PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.zeros(numel, dtype=torch.float32)
    area = mmap.mmap(-1, numel * 4 + PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # shared memory gets no THP
    try:
        area.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # THP off: ordinary pages, still correct
        pass
    flat = torch.frombuffer(area, dtype=torch.float32)  # the tensor keeps the mapping alive
    skip = (-flat.data_ptr() % PAGE) // 4
    return flat[skip : skip + numel]


def pack(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of `tensors` (same shapes, contiguous) side by side in one huge-page buffer, each 64-byte aligned."""
    sizes = [(t.numel() + 15) // 16 * 16 for t in tensors]
    arena = huge_zeros(sum(sizes))
    out, start = [], 0
    for tensor, size in zip(tensors, sizes, strict=True):
        out.append(arena[start : start + tensor.numel()].view(tensor.shape).copy_(tensor))
        start += size
    return out
