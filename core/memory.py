"""How much memory this process may still use, and a guard that refuses a read that would not fit.

A hostile file (an .npz member whose header declares hundreds of GB) and a real matrix that is
too big for this machine get the same answer: both numbers, before anything is allocated."""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import InsufficientMemoryError

# Memory a read may not take: the rest of the process, the UI, the page cache's floor.
HEADROOM = 256 << 20
# Below this a check is not worth its /proc read (it runs once per layer, and MoE models have
# tens of thousands of small ones).
CHECK_ABOVE = 64 << 20


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """What a container's memory limit (cgroup v2) still allows, if one is set."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Bytes this process can still allocate without swapping or being killed (None: unknown)."""
    found = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(found) if found else None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def require_memory(needed: int, path: str | Path, what: str) -> None:
    """Raise InsufficientMemoryError when ``needed`` bytes (for ``what``) do not fit in memory."""
    if needed < CHECK_ABOVE:
        return
    avail = available_bytes()
    if avail is None or needed + HEADROOM <= avail:
        return
    raise InsufficientMemoryError(
        path, f"{what} needs {human_bytes(needed)} of memory and only {human_bytes(max(avail - HEADROOM, 0))} "
        "is available", "run it on a machine with more memory, or limit the work with --layers")
