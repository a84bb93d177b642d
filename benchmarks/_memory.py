"""Peak-memory probes shared by the benchmark scripts (Linux /proc; one process per method).

``reset_peak()`` sets the peak resident set (VmHWM) to the current RSS, so ``peak() - rss()``
measured around one pass is everything that pass allocated.
"""

from __future__ import annotations

import os


def rss() -> int:
    """Current resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak() -> int:
    """Peak resident set size in bytes since the last ``reset_peak()``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
