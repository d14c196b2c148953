"""Is a process of this host still alive? Used to tell abandoned work (temp files, job leases)
from work in progress, without waiting for a timeout."""

from __future__ import annotations

import os


def pid_alive(pid: int | str) -> bool:
    """True if process ``pid`` exists on this host (or cannot be checked); False for a bad pid."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
