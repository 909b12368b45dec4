"""glibc's allocator told to keep freed memory for reuse. The CPU path frees and allocates tensors of several MB at
every decoding step, each a little larger than the last (each layer's KV cache grows by a copy), and glibc's defaults
serve every such block with a fresh mapping from the kernel and return it when freed.

Two settings, as a process started with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ would have them: every block
below 32 MiB (glibc's largest mmap threshold on 64-bit) comes from the heap, and the heap's free top is kept (up to
2 GiB), so a freed block is reused by the next step. PyTorch's own CPU launcher (torch.backends.xeon.run_cpu) preloads
jemalloc or tcmalloc with the same intent. Only where memory comes from changes: every tensor stays 64-byte aligned
(PyTorch's own alignment), so no float32 sum changes. Measured on an evaluation batch (`bench/allocator.py`): the same
answers, a tenth of the page faults, and a 9 % shorter decode. The price: the process keeps its peak heap resident
until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the most mallopt accepts
TRIM_THRESHOLD = 2**31 - 1  # mallopt's largest (an int): the heap's free top is kept up to 2 GiB

# SELFLOOP_MALLOC=system leaves glibc's defaults; so do a process started with glibc's own variables, or with another
# allocator preloaded (jemalloc, tcmalloc), whose settings are the user's.
OPT_OUT = "SELFLOOP_MALLOC"
USERS_OWN = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Apply the two settings to this process (before the large allocations); whether they were applied."""
    if os.environ.get(OPT_OUT, "").lower() == "system" or any(name in os.environ for name in USERS_OWN):
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", "") or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
