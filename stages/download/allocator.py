"""Keep image-sized buffers in the heap in dask workers.

Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the
system at once). Setting a glibc malloc tunable also turns off glibc's dynamic mmap threshold,
so every allocation above 128 KiB (each downloaded body, each decoded image: megabytes, hundreds
of times a second) becomes its own mmap/munmap, and a freed buffer at the top of a thread's heap
is trimmed right away; either way its pages are faulted in afresh for the next image. On the
loopback benchmark (bench/bench_download.py) that cost about 20% of the download's CPU. Raising
both thresholds in the download's worker process serves those buffers from the heap again; the
price is memory: up to TRIM_THRESHOLD_BYTES of free memory per malloc arena is kept for reuse
(benchmark, 2 workers: peak RSS of the process tree 1.0 GiB untuned, 1.2 GiB with a 4 MiB trim
threshold and 1.58x img2dataset's speed, 1.5 GiB with 32 MiB and 1.77x).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Allocations below this come from the heap. 32 MiB (glibc's own maximum for the dynamic
# threshold on 64-bit) covers bodies and decoded images of typical camera photos.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory at the top of a heap kept for reuse before it is returned to the system.
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024

_done = False


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where there is no glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    _done = bool(trim and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    return _done
