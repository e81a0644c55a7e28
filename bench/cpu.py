"""CPU memory settings the model benchmarks apply, the same for every model they measure.

Call ``prepare_cpu()`` before importing torch: torch reads ``THP_MEM_ALLOC_ENABLE`` at import.
"""

from __future__ import annotations

import os


def keep_freed_memory() -> None:
    """glibc serves big blocks with mmap and returns them to the OS on free, so every step
    page-faults its tensors afresh (a fresh 64 MiB tensor is written at ~1.5 GB/s here, a reused
    one at ~15 GB/s). Serve every block from the heap and keep freed memory there."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap even above the (capped) threshold
    except OSError:  # not glibc
        pass


def prepare_cpu() -> None:
    """Transparent huge pages for torch's CPU allocations (a fresh 64 MiB gradient of stacked expert
    weights otherwise costs ~16k page faults per step; ``THP_MEM_ALLOC_ENABLE=0`` turns it off), and
    freed memory kept in the heap."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    keep_freed_memory()
