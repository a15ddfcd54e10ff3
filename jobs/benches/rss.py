"""A process's own peak resident memory.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not that on Linux: a process started by
``subprocess`` (or by a raylet) begins with its parent's high-water mark, because the kernel
keeps the larger of the old and the new address space's peaks across ``exec``. A child of an
800 MiB parent reports 811 MiB before it has allocated anything. ``VmHWM`` in
``/proc/self/status`` is the peak of this address space alone.
"""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; macOS: bytes
