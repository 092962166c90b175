"""glibc malloc settings for a process that handles chunk-sized buffers.

glibc gives a block above its mmap threshold its own mapping and unmaps it on
free; below the threshold, blocks come from the heap, whose free top goes back
to the kernel once it exceeds the trim threshold. Both thresholds adapt by
default, and with three 8 MiB chunks alive per download the heap top was
trimmed and re-grown over and over: 12,000-37,000 page faults per 512 MiB
download, each a page the kernel zeroes. Fixed thresholds keep chunk buffers
on the heap and reuse them (docs/decisions/0009-download-pipeline-and-allocator.md).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("valise.allocator")

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: glibc's ceiling for M_MMAP_THRESHOLD on 64-bit: larger blocks are always mapped.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024

#: Free heap kept for the next chunks instead of going back to the kernel.
TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_chunks_on_heap() -> bool:
    """Set the thresholds (before the first chunk); False where it is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
    done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and done
    if not done:
        log.info("malloc thresholds left at their defaults")
    return done
